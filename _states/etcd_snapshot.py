"""
An etcd snapshot taken and kept on the master before any change of etcd's membership (a
member added by a join, a member removed or a node reset by a rejoin): if the change goes
wrong, the cluster's state just before it can be restored. A snapshot that cannot be taken,
checked or copied stops the change.

    etcd_snapshot.taken   on a healthy control plane: `etcdctl snapshot save`, checked with
                          `snapshot status`, copied to the master, compared by sha256, kept under
                          <cachedir>/k8sha-etcd-snapshots (_utils/k8sha_snapshot.py).
"""

__virtualname__ = "etcd_snapshot"


def __virtual__():
    return __virtualname__


def _ret(name, result=True, comment="", changes=None):
    return {"name": name, "result": result, "comment": comment, "changes": changes or {}}


def taken(name, reason="", exclude=()):
    """``name``: what the snapshot is for (shown in the comment). ``exclude``: nodes not to take it
    from (the node being rejoined)."""
    salt_cmd, why = __salt__["saltutil.cmd"], reason or "the change"
    origin = __utils__["k8sha_snapshot.source"](salt_cmd, __salt__["cluster_topology.members"]("control_plane"),
                                                list(exclude))
    if origin is None:
        return _ret(name, False, f"no control plane with a healthy etcd member to take a snapshot from: {why} is not made")
    if __opts__["test"]:
        return _ret(name, None, f"would take an etcd snapshot on {origin} before {why}")
    retention = __salt__["cluster_topology.settings"]()["etcd"]["snapshot_retention"]
    ok, done = __utils__["k8sha_snapshot.take"](salt_cmd, __opts__["cachedir"], origin, retention)
    if not ok:
        return _ret(name, False, f"{done}; {why} is not made")
    return _ret(name, comment=f"etcd snapshot from {origin} (revision {done['revision']}, {done['keys']} keys, "
                              f"{done['size']} bytes) kept at {done['snapshot']} before {why}",
                changes={"snapshot": done["snapshot"], "pruned": done["pruned"]})
