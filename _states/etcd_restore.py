"""
The way back from a lost etcd quorum, from the master (orch/etcd_restore.sls): the latest
snapshot kept on the master restored onto a surviving control plane as a new one-member
cluster (kubeadm's documented procedure: _modules/etcd_restore.py), then the other control
planes reset and joined again. Writes made after the snapshot are lost; nothing else is.

    etcd_restore.quorum_lost             etcd has no quorum (a restore would otherwise throw away
                                         writes), and a survivor with kubeadm's files answers
    etcd_restore.snapshot_restored       the snapshot delivered in the survivor's pillar (0600
                                         file, removed after), restored there, API serving
    etcd_restore.api_serving             /healthz answers through the VIP again
    etcd_restore.others_reset            every other control plane that answers and still has
                                         kubeadm's files is reset: its etcd belongs to the old cluster
"""

import base64
import hashlib
import os
import pathlib
import time

__virtualname__ = "etcd_restore"


def __virtual__():
    return __virtualname__


def _ret(name, result=True, comment="", changes=None):
    return {"name": name, "result": result, "comment": comment, "changes": changes or {}}


def _ask(targets, fun, arg=(), timeout=60):
    return __utils__["k8sha_minions.answers"](__salt__["saltutil.cmd"], targets, fun, arg, timeout)


def _with_kubeadm_files(nodes):
    """The ``nodes`` that answer kubeadm_member.status with kubeadm's files (member or half-joined)."""
    statuses = _ask(nodes, "kubeadm_member.status", timeout=30)
    answered = {n: ret for n, (ok, ret) in statuses.items() if ok and isinstance(ret, dict)}
    return [n for n in nodes if n in answered and answered[n].get("state") != "absent"]


def quorum_lost(name, survivor=None):
    """Refuses while etcd has a quorum (repairs, not a restore, are the way then). Picks the
    survivor: ``survivor``, or the first control plane of the description that answers with kubeadm's files."""
    control_planes = __salt__["cluster_topology.members"]("control_plane")
    quorum = len(control_planes) // 2 + 1
    healthy = set()
    for ok, health in _ask(control_planes, "etcd_cluster.health").values():
        if ok and isinstance(health, dict):
            healthy.update(url for url, h in health.items() if h.get("healthy"))
    if len(healthy) >= quorum:
        return _ret(name, False, f"refused: etcd has a quorum ({len(healthy)} healthy members, quorum {quorum}); a restore "
                                 "would throw away every write since the snapshot: repair the members instead")
    if survivor and survivor not in control_planes:
        return _ret(name, False, f"survivor {survivor} is not a control plane of the description")
    found = _with_kubeadm_files([survivor] if survivor else control_planes)
    if not found:
        return _ret(name, False, "no control plane with kubeadm's files answers: nothing to restore onto "
                                 "(build the cluster again with orch.cluster)")
    __context__["k8sha_restore"] = {"survivor": found[0]}
    comment = f"etcd has no quorum ({len(healthy)} healthy, quorum {quorum}); survivor: {found[0]}"
    if __opts__["test"]:
        return _ret(name, None, comment, {"survivor": found[0]})
    return _ret(name, comment=comment, changes={"survivor": found[0]})


def _snapshot_path(snapshot):
    directory = pathlib.Path(__opts__["cachedir"]) / "k8sha-etcd-snapshots"
    if snapshot:
        path = directory / os.path.basename(snapshot)
        return path if path.exists() else None
    kept = sorted(directory.glob("*.db"), key=lambda p: p.name)
    return kept[-1] if kept else None


def _material_path(node):
    return os.path.join(__opts__["pillar_roots"]["base"][0], "secrets", "etcd_restore", f"{node}.sls")


def _deliver(node, path):
    """The snapshot in ``node``'s pillar only (pillar/top.sls): a 0600 file, headed by its writer."""
    data, target = path.read_bytes(), _material_path(node)
    __utils__["k8sha_heal.write_private_pillar"](target, "orch.etcd_restore for one restore", {"k8sha_etcd_restore": {
        node: {"name": path.name, "sha256": hashlib.sha256(data).hexdigest(),
               "snapshot": base64.b64encode(data).decode()}}})
    return target


def snapshot_restored(name, snapshot=None):
    """``snapshot`` (a file name under <cachedir>/k8sha-etcd-snapshots; default: the newest)
    restored onto the survivor quorum_lost chose; its etcd member and API server serve again."""
    survivor = __context__.get("k8sha_restore", {}).get("survivor")
    if not survivor:
        return _ret(name, False, "no survivor chosen: etcd_restore.quorum_lost runs first")
    path = _snapshot_path(snapshot)
    if path is None:
        return _ret(name, False, f"no snapshot {snapshot or '(none kept)'} under <cachedir>/k8sha-etcd-snapshots: "
                                 "nothing to restore")
    if __opts__["test"]:
        return _ret(name, None, f"would restore {path.name} onto {survivor}", {"restored": path.name})
    for kind in ("utils", "modules"):  # the survivor runs this project's restore, whatever it had
        _ask([survivor], f"saltutil.sync_{kind}", timeout=120)
    material = _deliver(survivor, path)
    try:
        ok, answer = _ask([survivor], "etcd_restore.from_snapshot", timeout=600).get(survivor, (False, "no answer"))
    finally:
        os.unlink(material)
    if not ok:
        return _ret(name, False, __utils__["k8sha_minions.cause"](answer))
    return _ret(name, comment=f"{path.name} (revision {answer['revision']}, {answer['keys']} keys) restored onto "
                              f"{survivor}, a one-member etcd; its previous data kept at {answer['kept']}",
                changes={"restored": path.name, "onto": survivor, "kept": answer["kept"]})


def api_serving(name, timeout=60):
    """/healthz answers 200 through the VIP (HAProxy's checks let the restored API server in)."""
    if __opts__["test"]:
        return _ret(name, None, "would wait for /healthz through the VIP")
    api = __salt__["cluster_topology.description"]()["api"]
    url = f"https://{api['vip']}:{api['port']}/healthz"
    deadline = time.monotonic() + timeout
    while not __salt__["kubeadm_member.healthz"](url)["healthy"]:
        if time.monotonic() > deadline:
            return _ret(name, False, f"{url} does not answer 200 after {timeout} s")
        time.sleep(1)
    return _ret(name, comment=f"{url} answers 200: the API serves the restored data")


def others_reset(name):
    """Every other control plane that answers and still has kubeadm's files is reset (its etcd
    member belongs to the cluster before the restore); orch.control_planes joins them again.
    Those that do not answer are made again by orch.provision, or rejoin when they come back
    (the control_plane repair)."""
    survivor = __context__.get("k8sha_restore", {}).get("survivor")
    others = [n for n in __salt__["cluster_topology.members"]("control_plane") if n != survivor]
    stale = _with_kubeadm_files(others)
    if not stale:
        return _ret(name, comment="no other control plane has kubeadm's files")
    if __opts__["test"]:
        return _ret(name, None, f"would reset {', '.join(stale)}", {"reset": stale})
    answers = _ask(stale, "kubeadm_member.reset", timeout=300)
    failed = [f"{n}: {__utils__['k8sha_minions.cause'](answers.get(n, (False, 'no answer'))[1])}"
              for n in stale if not answers.get(n, (False,))[0]]
    if failed:
        return _ret(name, False, "kubeadm reset failed: " + "; ".join(failed))
    return _ret(name, comment=f"reset {', '.join(stale)}: they join the restored cluster next", changes={"reset": stale})
