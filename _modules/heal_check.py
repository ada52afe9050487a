"""
The master's own checks of the faults in the catalogue (salt/k8sha/faults.yaml). An event
only says where to look: these checks decide, by asking the node (or the load balancers)
over Salt's authenticated channel. They run on the master, in orch/heal.sls and in the
reconciliation (heal.reconcile).

CLI example (on the master): ``salt-run salt.cmd heal_check.fault haproxy_down lb1``
"""

__virtualname__ = "heal_check"


def __virtual__():
    return __virtualname__


def catalogue():
    """The fault catalogue: {fault: entry}."""
    return __utils__["k8sha_heal.catalogue"]()


def _settings():
    return __salt__["cluster_topology.settings"]()


def _node(minion):
    return next((n for n in __salt__["cluster_topology.description"]().get("nodes", []) if n.get("name") == minion), None)


def ask(minion, fun, arg=(), timeout=30):
    """``fun`` on one minion, asked from the master: its return, or None (no answer, or an error)."""
    answer = __salt__["saltutil.cmd"]([minion], fun, arg=list(arg), tgt_type="list", timeout=timeout).get(minion)
    if not answer or answer.get("retcode", 0) != 0:
        return None
    return answer.get("ret")


def fault(check, minion, detail=None):
    """{'real': bool, 'reason': str}: whether the fault is there, as the master sees it now."""
    real, reason = CHECKS[check](minion, detail)
    return {"real": bool(real), "reason": reason}


def _service_stopped(minion, detail):
    service = detail or ""
    if service != _settings()["keepalived"]["service"]:
        return False, f"{service!r} is not a service these repairs manage"
    running = ask(minion, "service.status", [service])
    if running is None:
        return False, f"{minion} does not answer: nothing is done until it does"
    return running is False, f"{service} on {minion} is {'running' if running else 'not running'}"


def _haproxy_down(minion, detail):
    backends = ask(minion, "lb_status.haproxy_backends")
    if backends is None:
        return False, f"{minion} does not answer: nothing is done until it does"
    return not backends.get("running", False), f"HAProxy on {minion}: {backends.get('reason', 'answers')}"


def _config_drift(minion, detail):
    owner = __salt__["cluster_topology.config_owners"](_node(minion)["role"]).get(detail)
    if not owner:
        return False, f"{detail} is not a file Salt manages on {minion}"
    drifted = _drifted_states(minion, [owner])
    if drifted is None:
        return False, f"{minion} could not preview {owner}: nothing is done until it can"
    return bool(drifted), f"{detail} on {minion}: {'differs from ' + owner if drifted else 'as Salt wrote it'}"


def _drifted_states(minion, owners):
    """The states among ``owners`` whose dry run on ``minion`` would change something (None:
    no answer). One dry run for all of them: the node's own Salt compares, the master asks."""
    # queue: a state run in progress there (a repair, the reconciliation's own dry run) is waited
    # for, not taken for a node that cannot answer.
    preview = __salt__["saltutil.cmd"]([minion], "state.sls", arg=[",".join(owners)],
                                       kwarg={"test": True, "queue": True},
                                       tgt_type="list", timeout=120).get(minion, {}).get("ret")
    if not isinstance(preview, dict):
        return None
    return sorted({s.get("__sls__") for s in preview.values() if isinstance(s, dict) and s.get("result") is None})


def drifted_files(minion):
    """[path]: one managed file per state of ``minion``'s role that would change it (reconciliation)."""
    owners = {}
    for path, owner in sorted(__salt__["cluster_topology.config_owners"](_node(minion)["role"]).items()):
        owners.setdefault(owner, path)
    drifted = _drifted_states(minion, sorted(owners)) if owners else []
    return [owners[o] for o in drifted or [] if o in owners]


def _apiserver_unhealthy(minion, detail):
    status = ask(minion, "kubeadm_member.status", timeout=60) or {}
    if status.get("state") != "member":
        return False, f"{minion} is not a member ({status.get('state', 'no answer')}): a rejoin matter, not a restart"
    return _apiserver_fault_seen_by_load_balancers(minion)


def _status(minion):
    """kubeadm_member.status of ``minion``. A machine salt-cloud just made answers but has not
    synced the project's modules yet: they are synced first (not in a dry run)."""
    status = ask(minion, "kubeadm_member.status", timeout=60)
    if status is None and not __opts__.get("test") and ask(minion, "test.ping", timeout=10) is True:
        for kind in ("utils", "modules"):
            __salt__["saltutil.cmd"]([minion], f"saltutil.sync_{kind}", tgt_type="list", timeout=60)
        status = ask(minion, "kubeadm_member.status", timeout=60)
    return status


def _control_plane_rejoin(minion, detail):
    """A control plane is a member when etcd says so (its member, as another control plane's etcd
    lists it, and that member's health), never from kubeadm's files alone."""
    status = _status(minion)
    if status is None:
        return False, f"{minion} does not answer: nothing is done until it does"
    answered, member = etcd_member(minion)
    if not answered:  # no cluster to rejoin (not built yet), or none of the others answers
        return False, f"{minion}: {status['state']}, but no other control plane reports an etcd cluster: nothing to rejoin"
    files = f"kubeadm's files: {status['state']} ({status['reason']})"
    if member and member.get("healthy"):
        note = "" if status["state"] == "member" else "; put kubeadm's files back"
        return False, f"{minion}: member: etcd member {member['name'] or member['id']} is healthy ({files}){note}"
    if member and status["state"] == "member":
        return False, (f"{minion}: etcd member {member['name'] or member['id']} is not healthy but {files}: "
                       "etcd restarting is not a rejoin; left alone")
    return True, f"{minion}: {'no etcd member' if not member else 'etcd member not healthy'}; {files}"


CHECKS = {
    "service_stopped": _service_stopped,
    "haproxy_down": _haproxy_down,
    "config_drift": _config_drift,
    "apiserver_unhealthy": _apiserver_unhealthy,
    "control_plane_rejoin": _control_plane_rejoin,
}


def _apiserver_fault_seen_by_load_balancers(minion):
    """(fault, reason): the API server's /healthz as the load balancers see it. They are the
    witnesses the security groups let reach it (the master is not one), and their answers come
    back over Salt's authenticated channel. A fault needs every answering LB to see it."""
    port = __salt__["cluster_topology.description"]()["api"]["port"]
    url = f"https://{_node(minion)['address']}:{port}/healthz"
    balancers = __salt__["cluster_topology.members"]("loadbalancer")
    answers = __salt__["saltutil.cmd"](balancers, "kubeadm_member.healthz", arg=[url], tgt_type="list", timeout=15)
    seen = {lb: a["ret"]["healthy"] for lb, a in answers.items()
            if a.get("retcode", 0) == 0 and isinstance(a.get("ret"), dict) and isinstance(a["ret"].get("healthy"), bool)}
    if not seen:
        return False, f"no load balancer answered to probe /healthz of {minion}: nothing is done"
    healthy = sorted(lb for lb, ok in seen.items() if ok)
    if healthy:
        return False, f"/healthz of {minion} answers 200 from {', '.join(healthy)}"
    return True, f"/healthz of {minion} does not answer 200 from {', '.join(sorted(seen))}"


def member_at(members, address, peer_port):
    """The etcd member whose peer URL is ``address:peer_port``, or None (pure)."""
    wanted = f"{address}:{peer_port}"
    return next((m for m in members or [] if any(u.split("://", 1)[-1].rstrip("/") == wanted for u in m["peer_urls"])),
                None)


def etcd_member(minion):
    """(answered, member): ``minion``'s etcd member with its health as another control
    plane's etcd reports it; answered is False when no other control plane reports a member list."""
    node = _node(minion)
    peer_port = _settings()["ports"]["etcd_peer"]
    for other in [n for n in __salt__["cluster_topology.members"]("control_plane") if n != minion]:
        membership = ask(other, "etcd_cluster.membership", timeout=60)
        if isinstance(membership, dict):
            return True, member_at(membership["members"], node["address"], peer_port)
    return False, None


def reconcile_targets():
    """[(fault, node, detail)]: the faults of the catalogue to check on every node of their role,
    control-plane membership first (the other checks mean little on a node that is no member).
    Config drift has no detail here: one dry run per node finds the files (drifted_files)."""
    desc = __salt__["cluster_topology.description"]()
    faults = catalogue()
    targets = []
    for name in sorted(faults, key=lambda f: faults[f]["repair"] != "rejoin"):
        entry = faults[name]
        for node in desc.get("nodes", []):
            if entry["role"] not in ("any", node.get("role")):
                continue
            if entry["check"] == "config_drift":
                targets.append((name, node["name"], None))  # every managed file: see drifted_files
            else:
                detail = entry.get("detail")
                targets.append((name, node["name"], detail if not isinstance(detail, dict) else None))
    return targets
