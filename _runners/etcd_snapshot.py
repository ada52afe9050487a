"""
An etcd snapshot kept on the master, outside any state run: the master's schedule runs it
(k8sha-etcd-snapshot, every 6 hours). Salt refuses a second orchestration while one runs on a
master, so a scheduled orchestration would make a repair's orchestration fail; this runner holds
no state run. orch.etcd_snapshot does the same on demand, as a step.

CLI example::

    salt-run etcd_snapshot.take
"""

import logging

log = logging.getLogger(__name__)

__virtualname__ = "etcd_snapshot"


def __virtual__():
    return __virtualname__


def take():
    """A snapshot from a control plane whose own member is healthy, checked, copied and kept."""
    functions = __utils__["k8sha_master.functions"](__opts__)
    salt_cmd = functions["saltutil.cmd"]
    origin = __utils__["k8sha_snapshot.source"](salt_cmd, functions["cluster_topology.members"]("control_plane"))
    if origin is None:
        log.warning("etcd_snapshot.take: no control plane with a healthy etcd member: no snapshot")
        return {"taken": False, "reason": "no control plane with a healthy etcd member"}
    retention = functions["cluster_topology.settings"]()["etcd"]["snapshot_retention"]
    ok, done = __utils__["k8sha_snapshot.take"](salt_cmd, __opts__["cachedir"], origin, retention)
    if not ok:
        log.warning("etcd_snapshot.take: %s", done)
        return {"taken": False, "reason": done}
    log.info("etcd_snapshot.take: %s from %s", done["snapshot"], origin)
    return dict(done, taken=True)
