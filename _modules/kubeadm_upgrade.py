"""
This node's part of a rolling upgrade (orch.upgrade, _states/cluster_upgrade.py), in kubeadm's
documented order: the kubeadm package first (state kubernetes.packages with pillar
k8sha_upgrade), then `kubeadm upgrade plan/apply` on the first control plane or `kubeadm
upgrade node` on every other node, then the kubelet and kubectl packages and a kubelet restart.

CLI examples::

    salt cp1 kubeadm_upgrade.versions
    salt cp1 kubeadm_upgrade.apply 1.32
    salt cp2 kubeadm_upgrade.node
"""

import os
import subprocess

import yaml
from salt.exceptions import CommandExecutionError

__virtualname__ = "kubeadm_upgrade"

STATIC_PODS = ("kube-apiserver", "etcd")


def __virtual__():
    return __virtualname__


def _settings():
    return __salt__["cluster_topology.settings"]()["kubernetes"]


def _image_tag(manifest_path):
    """The image tag of a static pod's manifest (its version), or None without a manifest."""
    try:
        with open(manifest_path) as handle:
            image = yaml.safe_load(handle)["spec"]["containers"][0].get("image", "")
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
        return None
    return image.rsplit(":", 1)[1] if ":" in image else None


def versions():
    """What this node runs: {packages: {name: Debian version}, static_pods: {component: image tag}}
    (static pods on a control plane only)."""
    manifests = os.path.join(_settings()["config_dir"], "manifests")
    pods = {c: _image_tag(os.path.join(manifests, f"{c}.yaml")) for c in STATIC_PODS}
    return {"packages": {name: __salt__["pkg.version"](name) or None for name in _settings()["packages"]},
            "static_pods": {c: tag for c, tag in pods.items() if tag}}


def _kubeadm(args, timeout=900):
    """kubeadm's output lines (redacted: an upgrade renews certificates and prints none, but the
    filter costs nothing); a failure raises with its last lines."""
    try:
        result = subprocess.run([_settings()["kubeadm"], *args], capture_output=True, text=True, timeout=timeout,
                                env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CommandExecutionError(f"kubeadm {' '.join(args[:2])}: {exc}") from None
    output = __utils__["k8sha_kubeadm.redact"](result.stdout + result.stderr, ())
    lines = [line for line in output.strip().splitlines() if line.strip()]
    if result.returncode != 0:
        raise CommandExecutionError(f"kubeadm {' '.join(args[:2])} failed: " + " | ".join(lines[-6:]))
    return lines


def _kubeadm_version():
    return _kubeadm(["version", "-o", "short"])[-1].strip()


def apply(wanted):
    """On the first control plane, after its kubeadm package was upgraded: kubeadm upgrade plan,
    then kubeadm upgrade apply to kubeadm's own version, which must be the description's ``wanted``
    (1.32 or 1.32.0). Returns {version, output}: kubeadm's last lines."""
    version = _kubeadm_version()
    if not __salt__["kubeadm_member.version_matches"](version, wanted):
        raise CommandExecutionError(f"kubeadm here is {version}, not cluster.kubernetes.version {wanted!r}: its "
                                    "package was not upgraded first; nothing was changed")
    _kubeadm(["upgrade", "plan", version], timeout=300)
    lines = _kubeadm(["upgrade", "apply", version, "--yes"])
    return {"version": version, "output": lines[-3:]}


def node():
    """On every other node, after its kubeadm package was upgraded: kubeadm upgrade node (a control
    plane's static pods move to the version kubeadm upgrade apply stored in the cluster)."""
    return {"output": _kubeadm(["upgrade", "node"])[-3:]}


def restart_kubelet():
    """systemctl daemon-reload, then restart the kubelet: it runs its new package's binary."""
    for args in (["daemon-reload"], ["restart", "kubelet"]):
        result = subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise CommandExecutionError(f"systemctl {' '.join(args)}: {result.stderr.strip()}")
    return {"restarted": True}
