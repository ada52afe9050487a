"""
This control plane's etcd restored from a snapshot as a new one-member cluster, kubeadm's
documented way: the etcd and API server static pods stopped by moving their manifests away,
``snapshot restore`` into a new data directory, the manifests put back. orch.etcd_restore runs it on
the survivor of a lost quorum; the snapshot comes in this node's pillar (``k8sha_etcd_restore``,
written for the restore and removed after it), never as an argument.

Nothing is thrown away: the member directory it replaces is kept in the data directory
(``<data_dir>/member.before-restore-<time>``; etcd ignores it), and any failure puts it and the
manifests back. Everything happens inside the data directory, which is often a mount of its own.

CLI example (what the orchestration calls)::

    salt cp1 etcd_restore.from_snapshot
"""

import base64
import hashlib
import json
import os
import shutil
import subprocess
import time

import yaml
from salt.exceptions import CommandExecutionError

__virtualname__ = "etcd_restore"
STOP_TIMEOUT, START_TIMEOUT = 60, 120


def __virtual__():
    return __virtualname__


def _settings():
    return __salt__["cluster_topology.settings"]()


def command_with(manifest, flags):
    """The static pod ``manifest`` (a dict) with ``flags`` ({name: value}) set in its command (pure)."""
    container = manifest["spec"]["containers"][0]
    command = [c for c in container["command"] if c.split("=", 1)[0][2:] not in flags]
    container["command"] = command + [f"--{k}={v}" for k, v in flags.items()]
    return manifest


def flags_of(manifest):
    """{flag: value} of a static pod manifest's command (pure)."""
    return dict(c[2:].split("=", 1) for c in manifest["spec"]["containers"][0]["command"][1:] if "=" in c)


def _snapshot(work):
    """The snapshot from this node's pillar, checked against its sha256, written 0600 under ``work``."""
    material = __salt__["pillar.items"](unmask=True).get("k8sha_etcd_restore", {}).get(__opts__["id"])
    if not material:
        raise CommandExecutionError(f"no snapshot for {__opts__['id']} in pillar k8sha_etcd_restore: orch.etcd_restore "
                                    "delivers it; nothing was changed")
    data = base64.b64decode(material["snapshot"])
    if hashlib.sha256(data).hexdigest() != material["sha256"]:
        raise CommandExecutionError("the snapshot in pillar does not match its sha256; nothing was changed")
    path = os.path.join(work, material["name"])
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path, material["name"]


def _tool(args):
    etcd = _settings()["etcd"]
    result = subprocess.run([etcd["restore_tool"], *args], capture_output=True, text=True, timeout=300,
                            env={"ETCDCTL_API": "3", "PATH": "/usr/local/bin:/usr/bin:/bin"})
    if result.returncode != 0:
        raise CommandExecutionError(f"{etcd['restore_tool']} {' '.join(args[:2])} failed: {result.stderr.strip()[-400:]}")
    return result.stdout


def _paths():
    manifests = os.path.join(_settings()["kubernetes"]["config_dir"], "manifests")
    return {c: os.path.join(manifests, f"{c}.yaml") for c in ("etcd", "kube-apiserver")}


def _node():
    desc = __salt__["cluster_topology.description"]()
    node = next(n for n in desc["nodes"] if n["name"] == __opts__["id"])
    return node["address"], desc["api"]["port"]


def _serving(address, api_port, etcd_url):
    """Both static pods answer: this member healthy, /healthz of the local API server 200."""
    health = __salt__["etcd_cluster.health"]([etcd_url])
    return (any(h["healthy"] for h in health.values())
            and __salt__["kubeadm_member.healthz"](f"https://{address}:{api_port}/healthz")["healthy"])


def from_snapshot():
    """Restore this control plane's etcd from the snapshot in its pillar as a one-member cluster,
    and start its etcd and API server again. Returns what was restored and where the previous
    data directory is kept."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    work = f"/var/lib/k8sha/etcd-restore-{stamp}"
    os.makedirs(work, mode=0o700)
    try:
        return _restore(work, stamp)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the snapshot copy holds every secret of the cluster


def _restore(work, stamp):
    snapshot, name = _snapshot(work)
    status = json.loads(_tool(["snapshot", "status", snapshot, "-w", "json"]))
    manifests = _paths()
    original = {c: __salt__["file.read"](path) for c, path in manifests.items()}
    etcd_pod = yaml.safe_load(original["etcd"])
    flags = flags_of(etcd_pod)
    member, peer, data_dir = flags["name"], flags["initial-advertise-peer-urls"], flags["data-dir"]
    restored = os.path.join(data_dir, f"restore-{stamp}")
    current, kept = os.path.join(data_dir, "member"), os.path.join(data_dir, f"member.before-restore-{stamp}")
    # Restored beside the data directory before anything stops: a bad snapshot changes nothing.
    _tool(["snapshot", "restore", snapshot, f"--data-dir={restored}", f"--name={member}",
           f"--initial-cluster={member}={peer}", f"--initial-advertise-peer-urls={peer}"])
    address, api_port = _node()
    etcd_port = _settings()["ports"]["etcd_client"]
    swapped = False
    try:
        _stop(manifests, address, api_port, etcd_port)
        os.rename(current, kept)
        os.rename(os.path.join(restored, "member"), current)
        swapped = True
        # The manifest says what the member now is: a new one-member cluster.
        etcd_pod = command_with(etcd_pod, {"initial-cluster": f"{member}={peer}", "initial-cluster-state": "new"})
        __utils__["k8sha_static_pods.start"](manifests, {"etcd": yaml.safe_dump(etcd_pod),
                                                          "kube-apiserver": original["kube-apiserver"]})
        __utils__["k8sha_static_pods.wait"]("the restored etcd member and the API server to serve",
                                            lambda: _serving(address, api_port, f"https://{address}:{etcd_port}"),
                                            START_TIMEOUT)
    except Exception as exc:
        _put_back(manifests, original, swapped, current, kept, restored, stamp, (address, api_port, etcd_port))
        raise CommandExecutionError(f"etcd restore on {__opts__['id']} failed: {exc}; the previous data directory "
                                    "and manifests are back in place") from None
    shutil.rmtree(restored, ignore_errors=True)
    return {"restored": name, "revision": status.get("revision"), "keys": status.get("totalKey"),
            "member": member, "kept": kept}


def _stop(manifests, address, api_port, etcd_port):
    """The kubelet stops a static pod whose manifest is gone: both gone, wait until neither listens."""
    __utils__["k8sha_static_pods.stop"](manifests, [(address, api_port), (address, etcd_port)], STOP_TIMEOUT)


def _put_back(manifests, original, swapped, current, kept, restored, stamp, where):
    """Undo a restore that failed half-way: the previous member directory and manifests back."""
    if swapped:
        _stop(manifests, *where)
        os.rename(current, f"{current}.failed-restore-{stamp}")
        os.rename(kept, current)
    __utils__["k8sha_static_pods.start"](manifests, original)
    shutil.rmtree(restored, ignore_errors=True)
