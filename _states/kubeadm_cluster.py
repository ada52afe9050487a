"""
The kubeadm cluster, from the master (orch/control_planes.sls, orch/workers.sls, orch/heal.sls).
Each step asks the nodes first and changes only what is missing; it calls the node's own
kubeadm functions (_modules/kubeadm_member.py) directly:

    kubeadm_cluster.initialized    kubeadm init on the first control plane, unless a cluster exists
                                   -> kubeadm_member.init on that node
    kubeadm_cluster.nodes_joined   kubeadm join of nodes, with join material made fresh for them
                                   -> kubeadm_member.register_join on a healthy control plane,
                                      kubeadm_member.join on the nodes, kubeadm_member.revoke_join

Join material (token, certificate key) is written to pillar (secrets/join/NODE.sls, 0600,
targeted to that node and the control planes), used, and removed; it is never an argument
of a job, so it never travels on the event bus.
"""

import os
import secrets
import string

__virtualname__ = "kubeadm_cluster"
TOKEN_CHARS = string.ascii_lowercase + string.digits


def __virtual__():
    return __virtualname__


def _ret(name, result=True, comment="", changes=None):
    return {"name": name, "result": result, "comment": comment, "changes": changes or {}}


def _roles():
    return {n["name"]: n["role"] for n in __salt__["cluster_topology.description"]()["nodes"]}


def _cmd(targets, fun, arg=(), timeout=120):
    """{minion: (ok, return)} for the targets that answered."""
    return __utils__["k8sha_minions.answers"](__salt__["saltutil.cmd"], targets, fun, arg, timeout)


def _error(answer):
    return __utils__["k8sha_minions.cause"](answer)


def _statuses(nodes):
    answers = _cmd(nodes, "kubeadm_member.status", timeout=60)
    missing = [n for n in nodes if n not in answers or not answers[n][0]]
    if missing:
        raise RuntimeError("; ".join(f"{n}: kubeadm_member.status failed: {_error(answers.get(n, (0, 'no answer'))[1])}"
                                     for n in missing))
    return {n: answers[n][1] for n in nodes}


def _half_joined(statuses, nodes):
    return [f"{n} ({statuses[n]['reason']})" for n in nodes if statuses[n]["state"] == "half-joined"]


def initialized(name):
    """The cluster exists: unless a control plane is already a member, kubeadm init on the first one."""
    control_planes = __salt__["cluster_topology.members"]("control_plane")
    try:
        statuses = _statuses(control_planes)
    except RuntimeError as exc:
        return _ret(name, False, str(exc))
    members = [n for n in control_planes if statuses[n]["state"] == "member"]
    if members:
        return _ret(name, comment=f"cluster {name} exists; control-plane members: {', '.join(members)}")
    half = _half_joined(statuses, control_planes)
    if half:
        return _ret(name, False, f"no control plane is a member but some are half-joined: {'; '.join(half)}. "
                                 "Run `kubeadm reset -f` on them; nothing was changed")
    first = control_planes[0]
    if __opts__["test"]:
        return _ret(name, None, f"would run kubeadm init on {first}", {first: "init"})
    ok, done = _cmd([first], "kubeadm_member.init", timeout=600).get(first, (False, "no answer"))
    if not ok:
        return _ret(name, False, f"{first}: {_error(done)}")
    return _ret(name, comment=done["comment"], changes={first: "initialized"} if done["changed"] else {})


def _issuer(control_planes):
    statuses = _statuses(control_planes)
    healthy = [n for n in control_planes if statuses[n]["state"] == "member" and statuses[n].get("api_healthy")]
    if not healthy:
        raise RuntimeError("no control plane is a healthy member to issue join material: run "
                           "kubeadm_cluster.initialized first (orch.control_planes)")
    return healthy[0]


def _material_path(node):
    root = __opts__["pillar_roots"]["base"][0]
    return os.path.join(root, "secrets", "join", f"{node}.sls")


def _write_material(node, material):
    # Headed by the writer's pid: material whose writer died (a master restart) is removed by heal.reconcile.
    __utils__["k8sha_heal.write_private_pillar"](_material_path(node), "orch (kubeadm_cluster.nodes_joined) for one join",
                                                 {"k8sha_join": {node: material}})


def _new_material(control_plane, ca_cert_hash, ttl):
    pick = lambda n: "".join(secrets.choice(TOKEN_CHARS) for _ in range(n))  # noqa: E731
    material = {"token": f"{pick(6)}.{pick(16)}", "ca_cert_hash": ca_cert_hash, "ttl": ttl,
                "control_plane": control_plane}
    if control_plane:
        material["certificate_key"] = secrets.token_hex(32)
    return material


def nodes_joined(name, nodes=None):
    """
    ``nodes`` (default: [name]) are members of the cluster. For those that are not: fresh
    join material in pillar, registered by a healthy control plane (token; certificates
    uploaded for a control plane), kubeadm join on the nodes in parallel, then the
    material removed and the tokens deleted. Pass control planes one at a time: etcd
    adds one member at a time, and a snapshot of etcd is taken first.
    """
    nodes, roles = list(nodes or [name]), _roles()
    unknown = [n for n in nodes if roles.get(n) not in ("control_plane", "worker")]
    if unknown:
        return _ret(name, False, f"not control planes or workers of the description: {', '.join(unknown)}")
    try:
        statuses = _statuses(nodes)
    except RuntimeError as exc:
        return _ret(name, False, str(exc))
    half = _half_joined(statuses, nodes)
    if half:
        return _ret(name, False, f"half-joined: {'; '.join(half)}. Run `kubeadm reset -f` there "
                                 "(the control_plane repair, orch.heal, does) and re-run; nothing was changed")
    pending = [n for n in nodes if statuses[n]["state"] != "member"]
    if not pending:
        return _ret(name, comment=f"already members: {', '.join(nodes)}")
    if __opts__["test"]:
        return _ret(name, None, f"would join {', '.join(pending)}", {n: "join" for n in pending})
    try:
        issuer = _issuer(__salt__["cluster_topology.members"]("control_plane"))
    except RuntimeError as exc:
        return _ret(name, False, str(exc))
    joining = [n for n in pending if roles[n] == "control_plane"]
    if joining:  # a control plane's join adds an etcd member: a snapshot first, or no join
        snapshot = __states__["etcd_snapshot.taken"](name, reason=f"the join of {', '.join(joining)}",
                                                      exclude=joining)
        if not snapshot["result"]:
            return _ret(name, False, snapshot["comment"])
    return _join(name, pending, roles, issuer)


def _into_the_pool(control_planes):
    """Joined control planes in HAProxy's pool on every load balancer: one taken out by
    orch.remove_node and built again stays in maintenance until told (its health check decides then)."""
    balancers = __salt__["cluster_topology.members"]("loadbalancer")
    for node in control_planes:
        __utils__["k8sha_minions.pool_state"](__salt__["saltutil.cmd"], balancers, node, "ready")


def _join(name, pending, roles, issuer):
    ok, ca_hash = _cmd([issuer], "kubeadm_member.ca_cert_hash").get(issuer, (False, "no answer"))
    if not ok:
        return _ret(name, False, f"{issuer}: {_error(ca_hash)}")
    ttl = __salt__["cluster_topology.settings"]()["kubernetes"]["join_token_ttl"]
    token_ids, failures, joined = [], [], []
    try:
        for node in pending:
            _write_material(node, _new_material(roles[node] == "control_plane", ca_hash, ttl))
        for node in pending:
            ok, answer = _cmd([issuer], "kubeadm_member.register_join", [node]).get(issuer, (False, "no answer"))
            if not ok:
                return _ret(name, False, f"{issuer} could not register the join of {node}: {_error(answer)}")
            token_ids.append(answer["token_id"])
        answers = _cmd(pending, "kubeadm_member.join", timeout=600)
        for node in pending:
            ok, answer = answers.get(node, (False, "no answer"))
            (joined.append(node) if ok else failures.append(f"{node}: {_error(answer)}"))
    finally:
        for node in pending:
            if os.path.exists(_material_path(node)):
                os.unlink(_material_path(node))
        for token_id in token_ids:
            _cmd([issuer], "kubeadm_member.revoke_join", [token_id])
    _into_the_pool([n for n in joined if roles[n] == "control_plane"])
    changes = {n: "joined" for n in joined}
    if failures:
        return _ret(name, False, "kubeadm join failed: " + "; ".join(failures), changes)
    return _ret(name, comment=f"joined {', '.join(joined)} (material issued by {issuer}, then revoked)",
                changes=changes)


def pod_network_ready(name, nodes):
    """kubernetes.network on each of ``nodes`` with the pod CIDRs a control plane's API reports
    (pillar k8sha_pod_network: the routes change on every node whenever one joins or leaves)."""
    if not __salt__["cluster_topology.settings"]()["kubernetes"]["pod_network"]["manage"]:
        return _ret(name, comment="the pod network is not managed here (kubernetes:pod_network:manage is false)")
    try:
        issuer = _issuer(__salt__["cluster_topology.members"]("control_plane"))
    except RuntimeError as exc:
        return _ret(name, False, str(exc))
    ok, networks = _cmd([issuer], "kube_nodes.pod_networks", timeout=60).get(issuer, (False, "no answer"))
    if not ok:
        return _ret(name, False, f"{issuer}: kube_nodes.pod_networks: {_error(networks)}")
    missing = [n for n in nodes if not (networks.get(n) or {}).get("cidr")]
    if missing:
        return _ret(name, False, f"no pod CIDR yet for {', '.join(missing)} (the API on {issuer} lists "
                                 f"{', '.join(sorted(networks)) or 'no node'}): are they joined?")
    changes, failed = {}, []
    for node in nodes:
        pillar = {"k8sha_pod_network": __utils__["k8sha_kubeadm.pod_network_of"](networks, node)}
        answer = __salt__["saltutil.cmd"]([node], "state.sls", arg=["kubernetes.network"], tgt_type="list",
                                          kwarg={"pillar": pillar, "test": __opts__["test"], "queue": True},
                                          timeout=120).get(node, {})
        results = answer.get("ret") if isinstance(answer.get("ret"), dict) else {}
        if answer.get("retcode") or not results:
            failed.append(f"{node}: {answer.get('ret') or 'no answer'}")
            continue
        changed = sorted(r["__id__"] for r in results.values() if r.get("changes"))
        if changed:
            changes[node] = changed
    if failed:
        return _ret(name, False, "kubernetes.network failed: " + "; ".join(map(str, failed)), changes)
    verb = "would change" if __opts__["test"] else "changed"
    return _ret(name, None if __opts__["test"] and changes else True,
                f"pod network on {', '.join(nodes)}" + (f"; {verb} {', '.join(changes)}" if changes else ": in place"),
                changes)
