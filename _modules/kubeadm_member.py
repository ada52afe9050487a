"""
This node's membership in the kubeadm cluster: status, init, join, reset, and (on a control
plane) registering and revoking the join material of another node.

Join material (bootstrap token, certificate key) comes only from pillar ``k8sha_join``, which
the orchestration writes fresh for each join (_states/kubeadm_cluster.py) and targets to the
joining node and the control planes. It is never an argument (job arguments travel on the
event bus), never returned, never logged: kubeadm's output is kept only as redacted lines.

CLI examples::

    salt cp1 kubeadm_member.status
    salt cp1 kubeadm_member.ca_cert_hash
"""

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tempfile

import yaml
from salt.exceptions import CommandExecutionError

__virtualname__ = "kubeadm_member"

TOKEN = re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b")


def __virtual__():
    return __virtualname__


def _settings():
    return __salt__["cluster_topology.settings"]()["kubernetes"]


def _paths():
    config_dir = _settings()["config_dir"]
    return {
        "kubelet_conf": f"{config_dir}/kubelet.conf",
        "admin_conf": f"{config_dir}/admin.conf",
        "ca": f"{config_dir}/pki/ca.crt",
        "ca_key": f"{config_dir}/pki/ca.key",
        "etcd_manifest": f"{config_dir}/manifests/etcd.yaml",
        "apiserver_manifest": f"{config_dir}/manifests/kube-apiserver.yaml",
    }


def version_matches(installed, wanted):
    """Whether a Debian or upstream version (1.31.2-1.1, v1.31.2) is Kubernetes ``wanted`` (1.31 or 1.31.2)."""
    upstream, wanted = str(installed).lstrip("v").split("-", 1)[0], str(wanted)
    return upstream == wanted or upstream.startswith(wanted + ".")


def version_mismatch(installed, wanted, node):
    """The refusal when node ``node``, already in a cluster with these packages ({package: Debian
    version, e.g. 1.31.2-1.1}), is asked for Kubernetes ``wanted`` (1.31 or 1.31.2); None when
    they all agree (pure)."""
    off = {name: str(version).split("-", 1)[0] for name, version in installed.items()
           if not version_matches(version, wanted)}
    if not off:
        return None
    found = ", ".join(f"{name} {version}" for name, version in sorted(off.items()))
    upstream = sorted(off.values())[0]
    return (f"cluster.kubernetes.version: {wanted!r}, but {node} is a member of the cluster with {found}. "
            "A built cluster changes version only through kubeadm's upgrade procedure, one node at a time: "
            "salt-run state.orch orch.upgrade (docs/day-2.md), or set cluster.kubernetes.version back to "
            f"'{'.'.join(upstream.split('.')[:2])}' or '{upstream}'. Nothing was changed; the packages stay held")


def version_refusal(wanted=None):
    """The version refusal for this node (see version_mismatch), or '' when it may install:
    a node not in a cluster yet installs the description's version.

    CLI example: ``salt cp1 kubeadm_member.version_refusal``"""
    topology = __salt__["cluster_topology.view"]()
    wanted = wanted or topology["cluster"]["kubernetes"]["version"]
    if not os.path.exists(_paths()["kubelet_conf"]):
        return ""
    installed = {name: __salt__["pkg.version"](name) for name in _settings()["packages"]}
    return version_mismatch({n: v for n, v in installed.items() if v}, wanted, topology["node"]["name"]) or ""


def _redact(text, secrets=()):
    return __utils__["k8sha_kubeadm.redact"](text, secrets)


def _kubeadm(args, secrets=(), timeout=300):
    """Run kubeadm; its output is returned redacted and never logged."""
    try:
        result = subprocess.run([_settings()["kubeadm"], *args], capture_output=True, text=True, timeout=timeout,
                                env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CommandExecutionError(f"kubeadm {args[0]}: {_redact(str(exc), secrets)}") from None
    output = _redact(result.stdout + result.stderr, secrets)
    return result.returncode, result.stdout, output


def _fail(step, output):
    lines = [line for line in output.strip().splitlines() if line.strip()]
    raise CommandExecutionError(f"kubeadm {step} failed: " + " | ".join(lines[-4:]))


def classify(present, control_plane):
    """(state, reason) from which of kubeadm's files exist (pure function).

    state: 'absent' (nothing of kubeadm), 'member', or 'half-joined' (some files only:
    an init or join that stopped part-way; it needs `kubeadm reset -f` before a new join)."""
    wanted = ["kubelet_conf", "ca"] + (["etcd_manifest", "apiserver_manifest"] if control_plane else [])
    found = [name for name in wanted if present.get(name)]
    if not found and not present.get("etcd_data"):
        return "absent", "no kubeadm files"
    if len(found) == len(wanted):
        return "member", "kubeadm's files are all present"
    missing = [name for name in wanted if name not in found]
    return "half-joined", f"found {', '.join(found) or 'etcd data'}, missing {', '.join(missing)}"


def healthz(url, timeout=3):
    """
    Whether an API server's health URL answers 200 over TLS, as seen from this node:
    ``{'url', 'healthy', 'answer'}`` (the one probe, _utils/k8sha_probe.py).

    CLI example: ``salt lb1 kubeadm_member.healthz https://198.51.100.21:6443/healthz``
    """
    return __utils__["k8sha_probe.healthz"](url, timeout)


def status():
    """This node in the cluster: role expected, state (absent/member/half-joined), reason."""
    topology = __salt__["cluster_topology.view"]()
    role = topology["node"]["role"]
    control_plane = role == "control_plane"
    paths = _paths()
    present = {name: os.path.exists(path) for name, path in paths.items()}
    present["etcd_data"] = os.path.isdir(os.path.join(__salt__["cluster_topology.settings"]()["etcd"]["data_dir"], "member"))
    state, reason = classify(present, control_plane)
    result = {"node": topology["node"]["name"], "role": role, "state": state, "reason": reason}
    if control_plane and state == "member":
        result["api_healthy"] = healthz(f"https://127.0.0.1:{topology['cluster']['api']['port']}/healthz")["healthy"]
    return result


def ca_cert_hash():
    """kubeadm's discovery hash of the cluster CA (public: it pins the CA, it grants nothing)."""
    ca = _paths()["ca"]
    try:
        pub = subprocess.run(["openssl", "x509", "-in", ca, "-noout", "-pubkey"], capture_output=True, check=True).stdout
        der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub,
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise CommandExecutionError(
            f"no cluster CA at {ca}: is this a control plane of an initialised cluster? ({exc})") from exc
    return "sha256:" + hashlib.sha256(der).hexdigest()


def init():
    """kubeadm init with this node's kubeadm config (salt/kubernetes/config.sls). The token
    kubeadm init makes is deleted at once: every join gets its own."""
    current = status()
    if current["state"] != "absent":
        return {"changed": False, "comment": f"{current['node']}: {current['state']} ({current['reason']})"}
    code, stdout, output = _kubeadm(["init", "--config", _settings()["kubeadm_config"]])
    if code != 0:
        _fail("init", output)
    made = TOKEN.search(stdout.split("Using token:", 1)[-1])
    if made:
        _kubeadm(["token", "delete", made.group(0).split(".")[0]], secrets=[made.group(0)])
    return {"changed": True, "comment": f"{current['node']}: kubeadm init done; its bootstrap token was deleted"}


def _material(node):
    """The join material for ``node`` from a freshly compiled pillar (never from arguments)."""
    material = __salt__["pillar.items"](unmask=True).get("k8sha_join", {}).get(node)
    if not material:
        raise CommandExecutionError(f"no join material for {node} in pillar k8sha_join: the orchestration issues it "
                                    "(salt-run state.orch orch.cluster); nothing was changed")
    return material


@contextlib.contextmanager
def _private_config(documents):
    """kubeadm configuration documents that hold secrets, in a 0600 file of a 0700 directory
    removed afterwards: secrets reach kubeadm through --config, never its command line."""
    private = tempfile.mkdtemp(prefix="k8sha-kubeadm-")
    try:
        os.chmod(private, 0o700)
        path = os.path.join(private, "kubeadm.yaml")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump_all(documents, handle)
        yield path
    finally:
        shutil.rmtree(private, ignore_errors=True)


def register_join(node):
    """On a control plane: make the pillar's token for ``node`` valid and, for a control
    plane, upload the certificates encrypted with its fresh certificate key (they expire
    after 2 hours). Both reach kubeadm in a private --config file. Returns only public facts."""
    material = _material(node)
    token, key = material["token"], material.get("certificate_key")
    with open(_settings()["kubeadm_config"]) as handle:
        managed = {doc.get("kind"): doc for doc in yaml.safe_load_all(handle) if doc}
    with _private_config(__utils__["k8sha_kubeadm.issuing_configuration"](managed, node, material)) as path:
        code, _, output = _kubeadm(["token", "create", "--config", path], secrets=[token, key])
        if code != 0:
            _fail("token create", output)
        if material.get("control_plane"):
            code, _, output = _kubeadm(["init", "phase", "upload-certs", "--upload-certs", "--config", path],
                                       secrets=[token, key])
            if code != 0:
                _fail("init phase upload-certs", output)
    return {"node": node, "token_id": token.split(".")[0], "control_plane": bool(material.get("control_plane")),
            "ttl": material.get("ttl", "1h")}


def revoke_join(token_id):
    """On a control plane: delete a join token by its id (the public half). Absent is fine."""
    code, _, output = _kubeadm(["token", "delete", token_id])
    if code != 0 and "not found" not in output:
        _fail("token delete", output)
    return {"token_id": token_id, "deleted": code == 0}


def join():
    """kubeadm join of this node with its join material from pillar; a member is left alone,
    a half-joined node is refused (it needs `kubeadm reset -f` first)."""
    current = status()
    if current["state"] == "member":
        return {"changed": False, "comment": f"{current['node']}: already a member"}
    if current["state"] == "half-joined":
        raise CommandExecutionError(f"{current['node']} is half-joined ({current['reason']}): run `kubeadm reset -f` "
                                    "on it (the control_plane repair, orch.heal, does) before joining again; nothing was changed")
    topology = __salt__["cluster_topology.view"]()
    material = _material(current["node"])
    config = __utils__["k8sha_kubeadm.join_configuration"](topology["node"], material, topology["cluster"]["api"],
                                topology["cluster"]["kubernetes"]["version"],
                                __salt__["cluster_topology.settings"]()["kubernetes"])
    with _private_config([config]) as path:
        code, _, output = _kubeadm(["join", "--config", path],
                                   secrets=[material["token"], material.get("certificate_key")])
    if code != 0:
        _fail("join", output)
    kind = "control plane" if material.get("control_plane") else "worker"
    return {"changed": True, "comment": f"{current['node']}: joined as a {kind}"}


def reset():
    """kubeadm reset -f: leaves the cluster (a control plane removes its own etcd member)."""
    code, _, output = _kubeadm(["reset", "-f"])
    if code != 0:
        _fail("reset", output)
    return {"changed": True, "comment": "kubeadm reset done"}


def cluster_health():
    """From a control plane: every etcd member with its health and the membership's problems
    (etcd_cluster.membership), and node readiness."""
    return {"etcd": __salt__["etcd_cluster.membership"](), "nodes": __salt__["kube_nodes.ready"]()}


def restart_apiserver():
    """Restart this control plane's API server (k8sha:lookup:kubernetes:apiserver_restart)."""
    command = _settings()["apiserver_restart"]
    result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120)  # noqa: S602 (from settings)
    if result.returncode != 0:
        raise CommandExecutionError(f"restarting the API server ({command}) failed: {_redact(result.stderr.strip())}")
    return {"restarted": True, "command": command}
