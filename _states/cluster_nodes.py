"""
Taking one node out of a running cluster, from the master (orch/remove_node.sls). Each step
checks first; a dry run (test=True) changes nothing. The machine is destroyed only after the
node has left etcd, HAProxy's pool and the Kubernetes API.

    cluster_nodes.removal_permitted        the cluster without the node is still a valid one, and
                                           etcd keeps a healthy quorum; an even number of control
                                           planes only with the operator's confirmation
    cluster_nodes.retired                  no repair or rebuild of the node while the description lists it
    cluster_nodes.pods_evicted             kubectl drain: cordoned, its pods evicted
    cluster_nodes.drained                  out of HAProxy's pool on every load balancer (stats socket)
    cluster_nodes.etcd_member_removed      its etcd member removed through another control plane
    cluster_nodes.reset                    kubeadm reset on the node (if it answers)
    cluster_nodes.kubernetes_node_deleted  its Node object deleted from the API
    cluster_nodes.removal_reported         what to delete from pillar/cluster.sls
"""

import time

__virtualname__ = "cluster_nodes"
EVEN = "stacked etcd needs an odd number"  # the description check an operator may overrule for a while


def __virtual__():
    return __virtualname__


def _ret(name, result=True, comment="", changes=None):
    return {"name": name, "result": result, "comment": comment, "changes": changes or {}}


def _node(name):
    return next((n for n in __salt__["cluster_topology.description"]()["nodes"] if n["name"] == name), None)


def _others(name, role="control_plane"):
    return [n for n in __salt__["cluster_topology.members"](role) if n != name]


def _ask(minion, fun, arg=(), timeout=120):
    """(ok, return) of one minion, or (False, 'did not answer')."""
    answers = __utils__["k8sha_minions.answers"](__salt__["saltutil.cmd"], [minion], fun, arg, timeout)
    return answers.get(minion, (False, f"{minion} did not answer"))


def _peer(node):
    return f"https://{node['address']}:{__salt__['cluster_topology.settings']()['ports']['etcd_peer']}"


def problems_without(description, name, confirm_even=False):
    """The problems of ``description`` (merged) once node ``name`` is gone (pure)."""
    reduced = dict(description, nodes=[n for n in description["nodes"] if n["name"] != name])
    problems = __utils__["k8sha_description.problems_in"](reduced)
    return [p for p in problems if not (confirm_even and EVEN in p)]


def _etcd_refusal(name, node):
    """Why removing the etcd member of ``name`` would break etcd, or None (asked from another control plane)."""
    for other in _others(name):
        ok, membership = _ask(other, "etcd_cluster.membership", timeout=60)
        if not ok or not isinstance(membership, dict):
            continue
        healthy = {u for u, h in membership["health"].items() if h["healthy"]}
        safe, reason = __salt__["etcd_cluster.quorum_after_removal"](membership["members"], healthy, _peer(node))
        return None if safe else reason
    return "no other control plane answers for etcd: its quorum cannot be checked"


def removal_permitted(name, confirm_even=False):
    """``name`` may leave: it is described, the rest is a valid cluster (2 load balancers, a
    control plane...), and for a control plane etcd keeps a healthy quorum without it. An even
    number of control planes afterwards needs ``confirm_even=True`` (one more loss and etcd stops)."""
    node = _node(name)
    if node is None:
        return _ret(name, False, f"{name} is not a node of the cluster description: nothing to remove")
    problems = problems_without(__salt__["cluster_topology.description"](), name, confirm_even)
    if problems:
        hint = (" (pass confirm_even=True to run with an even number of control planes until you add one)"
                if any(EVEN in p for p in problems) else "")
        return _ret(name, False, f"refused: without {name}: " + "; ".join(problems) + hint + "; nothing was changed")
    reason = _etcd_refusal(name, node) if node["role"] == "control_plane" else None
    if reason:
        return _ret(name, False, f"refused: {reason}")
    if __opts__["test"]:
        return _ret(name, None, f"{name} ({node['role']}) would be removed", {"removing": name})
    return _ret(name, comment=f"{name} ({node['role']}) may leave the cluster", changes={"removing": name})


def retired(name):
    """Marks ``name`` as taken out: admission, the reconciliation and orch.cluster leave it alone
    (k8sha_heal.retired_reason) until it is deleted from the description."""
    if __opts__["test"]:
        return _ret(name, None, f"{name} would be marked as taken out (no repair, no rebuild)", {"retired": name})
    directory = __utils__["k8sha_master.heal_directory"](__opts__, __salt__["cluster_topology.settings"]())
    with __utils__["k8sha_heal.store"](directory) as data:
        data["retired"][name] = {"at": time.time(), "by": "orch.remove_node"}
        __utils__["k8sha_heal.record"](data, time.time(), "retired", node=name, by="orch.remove_node")
    return _ret(name, comment=f"{name}: no repair or rebuild until it is deleted from the description",
                changes={"retired": name})


def pods_evicted(name):
    """kubectl drain through another control plane: the node is cordoned and its pods evicted
    (PodDisruptionBudgets respected) before anything of it is taken down."""
    for other in _others(name):
        if __opts__["test"]:
            return _ret(name, None, f"would drain the Kubernetes node {name} through {other}", {"evicted": name})
        ok, answer = _ask(other, "kube_nodes.drain", [name], timeout=400)
        if not ok:
            return _ret(name, False, f"{other} could not drain the Kubernetes node {name}: {answer}")
        return _ret(name, comment=answer["comment"], changes={"evicted": name} if answer["drained"] else {})
    return _ret(name, False, "no other control plane to drain the node through")


def drained(name):
    """A control plane's API server out of HAProxy's pool on every load balancer (drained
    first: open connections finish). Other roles are in no pool."""
    if _node(name)["role"] != "control_plane":
        return _ret(name, comment=f"{name} is in no HAProxy pool")
    balancers = __salt__["cluster_topology.members"]("loadbalancer")
    if __opts__["test"]:
        return _ret(name, None, f"would take {name} out of HAProxy's pool on {', '.join(balancers)}", {"drained": balancers})
    failed = __utils__["k8sha_minions.pool_state"](__salt__["saltutil.cmd"], balancers, name, "maint")
    if failed:
        return _ret(name, False, "; ".join(f"{lb} could not take {name} out of its pool: {why}"
                                           for lb, why in failed.items()) + f"; {name} is untouched")
    return _ret(name, comment=f"{name} is out of HAProxy's pool on {', '.join(balancers)}", changes={"drained": balancers})


def etcd_member_removed(name):
    """The control plane's etcd member removed through another control plane (refused there if
    the quorum would break); a member already gone is no error."""
    node = _node(name)
    if node["role"] != "control_plane":
        return _ret(name, comment=f"{name} has no etcd member")
    peer = _peer(node)
    for other in _others(name):
        if __opts__["test"]:
            return _ret(name, None, f"would remove the etcd member {peer} through {other}", {"removed": peer})
        ok, answer = _ask(other, "etcd_cluster.remove_member", [peer], timeout=60)
        if ok:
            return _ret(name, comment=answer["comment"], changes={"removed": peer} if answer["removed"] else {})
        return _ret(name, False, f"{other} did not remove the etcd member {peer}: {answer}")
    return _ret(name, False, "no other control plane: the last etcd member is never removed")


def reset(name):
    """kubeadm reset on the node, so that nothing of the cluster runs there; a node that does not
    answer is left to the machine's destruction."""
    ok, status = _ask(name, "kubeadm_member.status", timeout=30)
    if not ok:
        return _ret(name, comment=f"{name} does not answer: not reset (its machine is destroyed next)")
    if status["state"] == "absent":
        return _ret(name, comment=f"{name} has no kubeadm files: no reset needed")
    if __opts__["test"]:
        return _ret(name, None, f"would run kubeadm reset -f on {name}", {"reset": name})
    ok, answer = _ask(name, "kubeadm_member.reset", timeout=300)
    if not ok:
        return _ret(name, False, f"kubeadm reset on {name} failed: {answer}")
    return _ret(name, comment=f"{name}: kubeadm reset done", changes={"reset": name})


def kubernetes_node_deleted(name, retry_for=30):
    """The Node object deleted from the API, through another control plane. Tried again for up to
    ``retry_for`` s: right after a member leaves, etcd may be electing a leader (a removed leader
    steps down) and the API server answers 503 "leader changed" meanwhile."""
    others = _others(name)
    if not others:
        return _ret(name, False, "no other control plane to delete the Kubernetes node through")
    if __opts__["test"]:
        return _ret(name, None, f"would delete the Kubernetes node {name} through {others[0]}", {"deleted": name})
    deadline, failures = time.monotonic() + retry_for, []
    while True:
        for other in others:
            ok, answer = _ask(other, "kube_nodes.delete", [name], timeout=60)
            if ok:
                return _ret(name, comment=f"the Kubernetes node {name} is deleted (through {other})",
                            changes={"deleted": name})
            failures.append(f"{other}: {__utils__['k8sha_minions.cause'](answer)}")
        if time.monotonic() > deadline:
            return _ret(name, False, f"the Kubernetes node {name} could not be deleted for {retry_for} s: "
                                     + "; ".join(failures[-len(others):]))
        time.sleep(2)


def removal_reported(name, address=None):
    """What the operator deletes from the description; until then the node stays taken out."""
    entry = f"{{name: {name}, role: {(_node(name) or {}).get('role')}, address: {address}}}"
    return _ret(name, comment=f"{name} is removed: delete `- {entry}` from pillar/cluster.sls "
                              f"(until then orch.cluster refuses to run; `salt-run cluster.unretire {name}` builds it again)")
