"""
The etcd snapshot the master keeps (shared by the etcd_snapshot state, which builds and repairs
run before a membership change, and the etcd_snapshot runner, which the master's schedule runs):
taken on a control plane whose own member is healthy, checked (`etcdctl snapshot status`), copied
to the master (cp.push; the master needs `file_recv: True`), compared by sha256, kept under
<cachedir>/k8sha-etcd-snapshots (0600), the oldest pruned past `retention`.
"""

import hashlib
import os
import pathlib
import shutil


def _ask(salt_cmd, minion, fun, arg=(), timeout=120):
    answer = salt_cmd([minion], fun, arg=list(arg), tgt_type="list", timeout=timeout).get(minion) or {}
    ok = answer.get("retcode", 0) == 0 and not str(answer.get("ret", "")).startswith("ERROR")
    return ok, answer.get("ret")


def source(salt_cmd, control_planes, exclude=()):
    """A control plane whose own etcd member answers healthy (asked from its own view)."""
    for name in [n for n in control_planes if n not in exclude]:
        ok, membership = _ask(salt_cmd, name, "etcd_cluster.membership", timeout=60)
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


def take(salt_cmd, cachedir, origin, retention):
    """Snapshot on ``origin`` (a control plane), copied to the master and kept:
    (True, {snapshot, source, revision, keys, size, pruned}) or (False, why)."""
    ok, snap = _ask(salt_cmd, origin, "etcd_cluster.snapshot", timeout=300)
    if not ok or not isinstance(snap, dict):
        return False, f"etcd snapshot on {origin} failed: {snap}"
    ok, pushed = _ask(salt_cmd, origin, "cp.push", [snap["path"]])
    received = os.path.join(cachedir, "minions", origin, "files", snap["path"].lstrip("/"))
    if not ok or pushed is not True or not os.path.exists(received):
        return False, f"the snapshot {snap['path']} of {origin} did not reach the master (is file_recv enabled?)"
    with open(received, "rb") as handle:
        if hashlib.sha256(handle.read()).hexdigest() != snap["sha256"]:
            return False, f"the snapshot copied from {origin} does not match its sha256"
    directory = os.path.join(cachedir, "k8sha-etcd-snapshots")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    target = os.path.join(directory, os.path.basename(snap["path"]))
    shutil.move(received, target)
    os.chmod(target, 0o600)
    _ask(salt_cmd, origin, "file.remove", [snap["path"]])
    return True, {"snapshot": target, "source": origin, "revision": snap["revision"], "keys": snap["keys"],
                  "size": snap["size"], "pruned": kept(directory, retention)}
