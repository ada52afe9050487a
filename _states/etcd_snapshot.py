"""
An etcd snapshot taken and kept on the master before any change of etcd's membership (a
member added by a join, a member removed or a node reset by a rejoin): if the change goes
wrong, the cluster's state just before it can be restored. A snapshot that cannot be taken,
checked or copied stops the change.

    etcd_snapshot.taken   on a healthy control plane: `etcdctl snapshot save`, checked with
                          `snapshot status`, copied to the master (cp.push; the master needs
                          `file_recv: True`), compared by sha256, kept under
                          <cachedir>/k8sha-etcd-snapshots, the oldest pruned past `retention`.
"""

import hashlib
import os
import pathlib
import shutil

__virtualname__ = "etcd_snapshot"


def __virtual__():
    return __virtualname__


def _ret(name, result=True, comment="", changes=None):
    return {"name": name, "result": result, "comment": comment, "changes": changes or {}}


def _ask(minion, fun, arg=(), timeout=120):
    answer = __salt__["saltutil.cmd"]([minion], fun, arg=list(arg), tgt_type="list", timeout=timeout).get(minion) or {}
    ok = answer.get("retcode", 0) == 0 and not str(answer.get("ret", "")).startswith("ERROR")
    return ok, answer.get("ret")


def _source(exclude):
    """A control plane whose own etcd member answers healthy (asked from the others' view)."""
    for name in [n for n in __salt__["cluster_topology.members"]("control_plane") if n not in exclude]:
        ok, membership = _ask(name, "etcd_cluster.membership", timeout=60)
        if ok and isinstance(membership, dict) and any(m.get("healthy") and m.get("name") == name
                                                       for m in membership["members"]):
            return name
    return None


def kept(directory, retention):
    """The snapshots kept, newest first, after pruning beyond ``retention`` (returns the pruned)."""
    snapshots = sorted(pathlib.Path(directory).glob("*.db"), key=lambda p: p.name, reverse=True)
    pruned = snapshots[int(retention):]
    for path in pruned:
        path.unlink()
    return [p.name for p in pruned]


def taken(name, reason="", exclude=()):
    """``name``: what the snapshot is for (shown in the comment). ``exclude``: nodes not to take it
    from (the node being rejoined)."""
    settings = __salt__["cluster_topology.settings"]()["etcd"]
    source = _source(list(exclude))
    if source is None:
        return _ret(name, False, f"no control plane with a healthy etcd member to take a snapshot from: "
                                 f"{reason or 'the change'} is not made")
    if __opts__["test"]:
        return _ret(name, None, f"would take an etcd snapshot on {source} before {reason or 'the change'}")
    ok, snap = _ask(source, "etcd_cluster.snapshot", timeout=300)
    if not ok or not isinstance(snap, dict):
        return _ret(name, False, f"etcd snapshot on {source} failed: {snap}; {reason or 'the change'} is not made")
    ok, pushed = _ask(source, "cp.push", [snap["path"]])
    received = os.path.join(__opts__["cachedir"], "minions", source, "files", snap["path"].lstrip("/"))
    if not ok or pushed is not True or not os.path.exists(received):
        return _ret(name, False, f"the snapshot {snap['path']} of {source} did not reach the master (is file_recv "
                                 f"enabled?); {reason or 'the change'} is not made")
    with open(received, "rb") as handle:
        if hashlib.sha256(handle.read()).hexdigest() != snap["sha256"]:
            return _ret(name, False, f"the snapshot copied from {source} does not match its sha256; not made")
    directory = os.path.join(__opts__["cachedir"], "k8sha-etcd-snapshots")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    target = os.path.join(directory, os.path.basename(snap["path"]))
    shutil.move(received, target)
    os.chmod(target, 0o600)
    _ask(source, "file.remove", [snap["path"]])
    pruned = kept(directory, settings["snapshot_retention"])
    return _ret(name, comment=f"etcd snapshot from {source} (revision {snap['revision']}, {snap['keys']} keys, "
                              f"{snap['size']} bytes) kept at {target} before {reason or 'the change'}",
                changes={"snapshot": target, "pruned": pruned})
