"""
A control plane's kubeadm certificates: when they expire (``kubeadm certs check-expiration``)
and their renewal (``kubeadm certs renew all``, then the static pods restarted so that they load
the new certificates, kubeadm's documented procedure). The kubelet's own certificate is not
kubeadm's: the kubelet rotates it.

CLI examples::

    salt -C 'cp*' kubeadm_certs.expiration
    salt cp1 kubeadm_certs.renew          (orch.renew_certs runs it, one control plane at a time)
"""

import json
import os
import subprocess

from salt.exceptions import CommandExecutionError

__virtualname__ = "kubeadm_certs"
STATIC_PODS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def __virtual__():
    return __virtualname__


def _settings():
    return __salt__["cluster_topology.settings"]()


def _kubeadm(*args):
    kubeadm = _settings()["kubernetes"]["kubeadm"]
    try:
        result = subprocess.run([kubeadm, *args], capture_output=True, text=True, timeout=300,
                                env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CommandExecutionError(f"kubeadm certs {args[1] if len(args) > 1 else ''}: {exc}") from None
    if result.returncode != 0:
        raise CommandExecutionError(f"kubeadm {' '.join(args)} failed on {__opts__['id']}: "
                                    + " | ".join(result.stderr.strip().splitlines()[-3:]))
    return result.stdout


def residual_days(info):
    """{name: days left} of every certificate and CA kubeadm manages here and found (pure); from
    check-expiration's JSON (output.kubeadm.k8s.io/v1alpha3 CertificateExpirationInfo)."""
    entries = info.get("certificates", []) + info.get("certificateAuthorities", [])
    return {e["name"]: round(e["residualTime"] / 86400, 1) for e in entries if not e.get("missing")}


def _check():
    return json.loads(_kubeadm("certs", "check-expiration", "-o", "json"))


def _dates(info):
    return {c["name"]: c["expirationDate"] for c in info.get("certificates", []) if not c.get("missing")}


def expiration():
    """{'certificates': {name: days left}, 'authorities': {name: days left}} on this control plane."""
    info = _check()
    return {"certificates": residual_days({"certificates": info.get("certificates", [])}),
            "authorities": residual_days({"certificateAuthorities": info.get("certificateAuthorities", [])})}


def renew():
    """kubeadm certs renew all (certificates and the kubeconfigs kubeadm writes, admin.conf
    included), then every static pod restarted: its manifest moved away until it stops, then back;
    waits until this node's API server answers /healthz again."""
    before = _dates(_check())
    output = _kubeadm("certs", "renew", "all")
    desc = __salt__["cluster_topology.description"]()
    address = next(n["address"] for n in desc["nodes"] if n["name"] == __opts__["id"])
    port, etcd_port = desc["api"]["port"], _settings()["ports"]["etcd_client"]
    manifests_dir = os.path.join(_settings()["kubernetes"]["config_dir"], "manifests")
    manifests = {p: os.path.join(manifests_dir, f"{p}.yaml") for p in STATIC_PODS
                 if os.path.exists(os.path.join(manifests_dir, f"{p}.yaml"))}
    texts = __utils__["k8sha_static_pods.stop"](manifests, [(address, port), (address, etcd_port)])
    __utils__["k8sha_static_pods.start"](manifests, texts)
    url = f"https://{address}:{port}/healthz"
    try:
        __utils__["k8sha_static_pods.wait"](f"{url} after the restart", lambda: __salt__["kubeadm_member.healthz"](url)
                                            ["healthy"], 120)
    except TimeoutError as exc:
        raise CommandExecutionError(f"{__opts__['id']}: certificates renewed, but {exc}") from None
    after = _check()
    return {"renewed": sorted(n for n, date in _dates(after).items() if date != before.get(n)),
            "days_left": residual_days({"certificates": after.get("certificates", [])}),
            "kubeadm": output.strip().splitlines()[-1:]}
