"""
Master-side steps of the orchestrations (orch/*.sls): each checks first and changes only
what is missing, so that a re-run on a healthy cluster reports no changes. A failure names
the node and the cause.

    cluster_build.description_valid   the cluster description has no problem
    cluster_build.instances_present   salt-cloud: the description's machines missing are created
    cluster_build.security_groups_ready OpenStack: every role's security group (before the instances)
    cluster_build.vip_networking_ready  OpenStack: VIP port, allowed address pairs, floating IP
    cluster_build.minions_ready       every node answers and has the project's modules
    cluster_build.vip_answers         one load balancer holds the VIP and it accepts connections
    cluster_build.initialised         kubeadm init on the first control plane, unless a cluster exists
    cluster_build.joined              kubeadm join of nodes, with join material made fresh for them
    cluster_build.healthy             etcd members healthy, nodes Ready, /healthz through the VIP

Join material (token, certificate key) is written to pillar (secrets/join/NODE.sls, 0600,
targeted to that node and the control planes), used, and removed; it is never an argument
of a job, so it never travels on the event bus.
"""

import os
import secrets
import socket
import string
import sys
import time

import salt.cloud
import salt.utils.yaml

__virtualname__ = "cluster_build"
TOKEN_CHARS = string.ascii_lowercase + string.digits
SYNCED_KINDS = ("modules", "states", "beacons")  # the project's _modules, _states, _beacons


def __virtual__():
    return __virtualname__


def _ret(name, result=True, comment="", changes=None):
    return {"name": name, "result": result, "comment": comment, "changes": changes or {}}


def _description():
    return __salt__["cluster_topology.description"]()


def _names(role=None):
    return [n["name"] for n in _description().get("nodes", []) if role is None or n.get("role") == role]


def _cmd(targets, fun, arg=(), timeout=120):
    """{minion: (ok, return)} for the targets that answered."""
    if not targets:
        return {}
    answers = __salt__["saltutil.cmd"](list(targets), fun, arg=list(arg), tgt_type="list", timeout=timeout)
    return {m: (a.get("retcode", 0) == 0 and not str(a.get("ret", "")).startswith("ERROR"), a.get("ret"))
            for m, a in answers.items()}


def _error(answer):
    text = str(answer)
    return text.split("CommandExecutionError: ", 1)[-1].strip()


# --- validation and provisioning ---------------------------------------------------------------

def description_valid(name):
    """The cluster description (pillar `cluster`) has no problem; each problem names the field and the fix."""
    problems = __salt__["cluster_topology.validate"](require_secrets=False)["problems"]
    if problems:
        return _ret(name, False, "invalid cluster description (pillar/cluster.sls); nothing was changed:\n  "
                    + "\n  ".join(problems))
    return _ret(name, comment=f"cluster {_description().get('name')}: description valid ({len(_names())} nodes)")


def machines_map(description, profiles):
    """salt-cloud map data for the description: each node under its role's profile, with
    its address (pure function). Raises ValueError naming a role without a profile."""
    missing = sorted({n["role"] for n in description.get("nodes", []) if n.get("role") not in profiles})
    if missing:
        raise ValueError(f"k8sha:lookup:cloud:profiles has no profile for role {', '.join(missing)}")
    data = {}
    for node in description.get("nodes", []):
        data.setdefault(profiles[node["role"]], []).append({node["name"]: {"address": node["address"]}})
    return data


def _cloud_mapper(**source):
    cloud_config = os.path.join(os.path.dirname(__opts__["conf_file"]), "cloud")
    client = salt.cloud.CloudClient(path=cloud_config)
    return salt.cloud.Map(client._opts_defaults(**source))  # pylint: disable=protected-access


def instances_present(name, profiles=None, map=None):  # pylint: disable=redefined-builtin
    """
    Every node of the description exists as a machine; missing ones are created by salt-cloud.
    ``profiles``: the salt-cloud profile for each role (the map is made from the description),
    or ``map``: a salt-cloud map file (salt:// URL or path) for hand-made topologies.
    """
    if map:
        path = __salt__["cp.cache_file"](map) if map.startswith("salt://") else map
        if not path or not os.path.exists(path):
            return _ret(name, False, f"salt-cloud map {map} not found (k8sha:lookup:cloud:map)")
        mapper = _cloud_mapper(map=path)
    else:
        try:
            mapper = _cloud_mapper(map_data=machines_map(_description(), profiles or {}))
        except ValueError as exc:
            return _ret(name, False, f"{exc}; nothing was created")
    dmap = mapper.map_data()
    missing = sorted(dmap.get("create", {}))
    existing = sorted(dmap.get("existing", {}))
    if not missing:
        return _ret(name, comment=f"all {len(existing)} machines exist")
    if __opts__["test"]:
        return _ret(name, None, f"would create {', '.join(missing)}", {"created": missing})
    results = mapper.run_map(dmap)
    failed = {n: r for n, r in results.items() if n in missing and (not isinstance(r, dict) or "Error" in r)}
    failed.update({n: "no result from salt-cloud" for n in missing if n not in results})
    if failed:
        return _ret(name, False, "; ".join(f"{n}: salt-cloud could not create it: {str(r)[:300]}"
                                            for n, r in failed.items()), {"created": sorted(set(missing) - set(failed))})
    return _ret(name, comment=f"created {', '.join(missing)}", changes={"created": missing})


def _openstack_step(name, function, done_comment):
    """Run an openstack_net function (on the master): what it created is the change."""
    if __opts__["test"]:
        return _ret(name, None, f"would run openstack_net.{function}")
    try:
        done = __salt__[f"openstack_net.{function}"]()
    except Exception as exc:  # pylint: disable=broad-except
        return _ret(name, False, f"openstack_net.{function} for {name}: {exc}")
    return _ret(name, comment=done_comment, changes={"created": done} if done else {})


def security_groups_ready(name):
    """Every role's security group and rules, before the instances that carry them: in
    Neutron, or on the one-machine lab's switch (a lab master has ``k8sha_lab: True``)."""
    if not __opts__.get("k8sha_lab"):
        return _openstack_step(name, "security_groups", "the security groups of every role are in place")
    try:
        wanted = __salt__["openstack_net.rules"]()
    except Exception as exc:  # pylint: disable=broad-except
        return _ret(name, False, f"security groups for {name}: {exc}")
    secgroups = _lab_secgroups()
    current = secgroups.load()["groups"]
    if current == wanted:
        return _ret(name, comment="the lab switch enforces every role's security group")
    changed = sorted(g for g in wanted if wanted[g] != current.get(g))
    if __opts__["test"]:
        return _ret(name, None, f"would set security groups {', '.join(changed)} on the lab switch", {"groups": changed})
    secgroups.set_groups(wanted)
    return _ret(name, comment="the lab switch enforces every role's security group", changes={"groups": changed})


def _lab_secgroups():
    lab = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lab")
    if lab not in sys.path:
        sys.path.insert(0, lab)
    from lablib import secgroups  # pylint: disable=import-outside-toplevel
    return secgroups


def vip_networking_ready(name):
    """OpenStack: the VIP's port, the VIP allowed on every load balancer's port, the floating
    IP; changes only what is missing."""
    return _openstack_step(name, "vip_networking", f"the VIP {name} can move between the load balancers")


def minions_ready(name, timeout=180, nodes=None):
    """Every node of the description (or ``nodes``) answers test.ping and has the project's
    Salt modules, states and beacons (a new machine has none)."""
    nodes = list(nodes or _names())
    deadline = time.monotonic() + timeout
    answered = {}
    while time.monotonic() < deadline:
        answered = {m for m, (ok, ret) in _cmd(nodes, "test.ping", timeout=10).items() if ok and ret is True}
        if answered >= set(nodes):
            break
        time.sleep(2)
    missing = [n for n in nodes if n not in answered]
    if missing:
        return _ret(name, False, f"no answer in {timeout} s from {', '.join(missing)}: is salt-minion running there "
                                 "and its key accepted (salt-key -L)?")
    if __opts__["test"]:  # syncing writes the project's modules on the minions
        return _ret(name, None, f"{len(nodes)} minions answer; the project's modules would be synced")
    delivered = {}
    for kind in SYNCED_KINDS:  # only what the project ships: sync_all syncs 18 kinds (~4x slower)
        synced = _cmd(nodes, f"saltutil.sync_{kind}")
        failed = [m for m, (ok, _) in synced.items() if not ok] + [n for n in nodes if n not in synced]
        if failed:
            return _ret(name, False, f"saltutil.sync_{kind} failed on {', '.join(failed)}")
        for minion, (_, names) in synced.items():
            if names:
                delivered.setdefault(minion, []).extend(names)
    return _ret(name, comment=f"{len(nodes)} minions answer; project modules in place",
                changes={"synced": delivered} if delivered else {})


# --- load balancers ----------------------------------------------------------------------------

def _tcp_open(host, port, timeout=2):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def vip_answers(name, timeout=60):
    """Exactly one load balancer holds the VIP ``name`` and it accepts TCP connections on the API port."""
    api = _description()["api"]
    balancers = _names("loadbalancer")
    deadline, holders = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        states = _cmd(balancers, "lb_status.vrrp", timeout=15)
        holders = sorted(m for m, (ok, ret) in states.items() if ok and isinstance(ret, dict) and ret.get("holds_vip"))
        if len(holders) == 1 and _tcp_open(name, api["port"]):
            return _ret(name, comment=f"{name}:{api['port']} answers; held by {holders[0]}")
        time.sleep(1)
    if len(holders) != 1:
        return _ret(name, False, f"the VIP {name} is held by {len(holders)} load balancers ({', '.join(holders) or 'none'})"
                                 f" after {timeout} s: check keepalived on {', '.join(balancers)} (lb_status.vrrp)")
    return _ret(name, False, f"{name}:{api['port']} refuses connections: is HAProxy running on {holders[0]}?")


def _apply(nodes, sls, timeout=600):
    """state.sls on nodes in parallel: {node: (ok, comment of the failed or the last state)}."""
    # queue: a state run in progress on a node (the reconciliation's dry run) is waited for, not a failure.
    answers = __salt__["saltutil.cmd"](list(nodes), "state.sls", arg=[sls], kwarg={"queue": True},
                                       tgt_type="list", timeout=timeout)
    results = {}
    for node in nodes:
        ret = answers.get(node, {}).get("ret")
        if not isinstance(ret, dict):
            results[node] = (False, f"state.sls {sls}: {_error(ret if ret is not None else 'no answer')}")
            continue
        states = sorted(ret.values(), key=lambda r: r.get("__run_num__", 0))
        failed = [r for r in states if r.get("result") is False]
        last = (failed or states or [{"comment": "no states"}])[-1 if not failed else 0]
        results[node] = (not failed, str(last.get("comment", "")))
    return results


# --- kubeadm ----------------------------------------------------------------------------------

def _statuses(nodes):
    answers = _cmd(nodes, "kubeadm_member.status", timeout=60)
    missing = [n for n in nodes if n not in answers or not answers[n][0]]
    if missing:
        raise RuntimeError("; ".join(f"{n}: kubeadm_member.status failed: {_error(answers.get(n, (0, 'no answer'))[1])}"
                                     for n in missing))
    return {n: answers[n][1] for n in nodes}


def initialised(name):
    """The cluster exists: unless a control plane is already a member, kubeadm init on the first one."""
    control_planes = _names("control_plane")
    try:
        statuses = _statuses(control_planes)
    except RuntimeError as exc:
        return _ret(name, False, str(exc))
    members = [n for n in control_planes if statuses[n]["state"] == "member"]
    if members:
        return _ret(name, comment=f"cluster {name} exists; control-plane members: {', '.join(members)}")
    half = [f"{n} ({statuses[n]['reason']})" for n in control_planes if statuses[n]["state"] == "half-joined"]
    if half:
        return _ret(name, False, f"no control plane is a member but some are half-joined: {'; '.join(half)}. "
                                 "Run `kubeadm reset -f` on them; nothing was changed")
    first = control_planes[0]
    if __opts__["test"]:
        return _ret(name, None, f"would run kubeadm init on {first}", {first: "init"})
    ok, comment = _apply([first], "kubernetes.cluster_initialised")[first]
    if not ok:
        return _ret(name, False, f"{first}: {comment}")
    return _ret(name, comment=comment, changes={first: "initialised"})


def _issuer(control_planes):
    statuses = _statuses(control_planes)
    healthy = [n for n in control_planes if statuses[n]["state"] == "member" and statuses[n].get("api_healthy")]
    if not healthy:
        raise RuntimeError("no control plane is a healthy member to issue join material: run "
                           "cluster_build.initialised first (orch.control_planes)")
    return healthy[0]


def _material_path(node):
    root = __opts__["pillar_roots"]["base"][0]
    return os.path.join(root, "secrets", "join", f"{node}.sls")


def _write_material(node, material):
    path = _material_path(node)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        # The writer's pid: material whose writer died (a master restart) is removed by heal.reconcile.
        handle.write(__utils__["k8sha_heal.writer_line"]())
        handle.write("# Written by orch (cluster_build.joined) for one join; removed after it.\n")
        salt.utils.yaml.safe_dump({"k8sha_join": {node: material}}, handle, default_flow_style=False)


def _new_material(control_plane, ca_cert_hash, ttl):
    pick = lambda n: "".join(secrets.choice(TOKEN_CHARS) for _ in range(n))  # noqa: E731
    material = {"token": f"{pick(6)}.{pick(16)}", "ca_cert_hash": ca_cert_hash, "ttl": ttl,
                "control_plane": control_plane}
    if control_plane:
        material["certificate_key"] = secrets.token_hex(32)
    return material


def joined(name, nodes=None):
    """
    ``nodes`` (default: [name]) are members of the cluster. For those that are not: fresh
    join material in pillar, registered by a healthy control plane (token; certificates
    uploaded for a control plane), kubeadm join on the nodes in parallel, then the
    material removed and the tokens deleted. Pass control planes one at a time: etcd
    adds one member at a time.
    """
    nodes = list(nodes or [name])
    roles = {n["name"]: n.get("role") for n in _description().get("nodes", [])}
    unknown = [n for n in nodes if roles.get(n) not in ("control_plane", "worker")]
    if unknown:
        return _ret(name, False, f"not control planes or workers of the description: {', '.join(unknown)}")
    control_planes = _names("control_plane")
    try:
        statuses = _statuses(nodes)
    except RuntimeError as exc:
        return _ret(name, False, str(exc))
    half = [f"{n} ({statuses[n]['reason']})" for n in nodes if statuses[n]["state"] == "half-joined"]
    if half:
        return _ret(name, False, f"half-joined: {'; '.join(half)}. Run `kubeadm reset -f` there "
                                 "(the control_plane repair, orch.heal, does) and re-run; nothing was changed")
    pending = [n for n in nodes if statuses[n]["state"] != "member"]
    if not pending:
        return _ret(name, comment=f"already members: {', '.join(nodes)}")
    if __opts__["test"]:
        return _ret(name, None, f"would join {', '.join(pending)}", {n: "join" for n in pending})
    try:
        issuer = _issuer(control_planes)
    except RuntimeError as exc:
        return _ret(name, False, str(exc))
    joining = [n for n in pending if roles[n] == "control_plane"]
    if joining:  # a control plane's join adds an etcd member: a snapshot first, or no join
        snapshot = __states__["etcd_snapshot.taken"](name, reason=f"the join of {', '.join(joining)}",
                                                      exclude=joining)
        if not snapshot["result"]:
            return _ret(name, False, snapshot["comment"])
    return _join(name, pending, roles, issuer)


def _join(name, pending, roles, issuer):
    ok, ca_hash = _cmd([issuer], "kubeadm_member.ca_cert_hash").get(issuer, (False, "no answer"))
    if not ok:
        return _ret(name, False, f"{issuer}: {_error(ca_hash)}")
    ttl = __salt__["cluster_topology.settings"]()["kubernetes"]["join_token_ttl"]
    token_ids, failures, joined_nodes = [], [], []
    try:
        for node in pending:
            _write_material(node, _new_material(roles[node] == "control_plane", ca_hash, ttl))
        for node in pending:
            ok, answer = _cmd([issuer], "kubeadm_member.register_join", [node]).get(issuer, (False, "no answer"))
            if not ok:
                return _ret(name, False, f"{issuer} could not register the join of {node}: {_error(answer)}")
            token_ids.append(answer["token_id"])
        for node, (ok, comment) in _apply(pending, "kubernetes.joined").items():
            (joined_nodes.append(node) if ok else failures.append(f"{node}: {comment}"))
    finally:
        for node in pending:
            if os.path.exists(_material_path(node)):
                os.unlink(_material_path(node))
        for token_id in token_ids:
            _cmd([issuer], "kubeadm_member.revoke_join", [token_id])
    changes = {n: "joined" for n in joined_nodes}
    if failures:
        return _ret(name, False, "kubeadm join failed: " + "; ".join(failures), changes)
    return _ret(name, comment=f"joined {', '.join(joined_nodes)} (material issued by {issuer}, then revoked)",
                changes=changes)


# --- verification ------------------------------------------------------------------------------

def _problems():
    desc = _description()
    control_planes, expected = _names("control_plane"), _names("control_plane") + _names("worker")
    problems = []
    answers = _cmd(control_planes, "kubeadm_member.cluster_health", timeout=30)
    report = next((ret for ok, ret in answers.values() if ok and isinstance(ret, dict)), None)
    if report is None:
        return [f"no control plane could report the cluster's health ({', '.join(control_planes)})"]
    problems += report["etcd"]["problems"]
    not_ready = [n for n in expected if report["nodes"].get(n) != "Ready"]
    if not_ready:
        problems.append(f"nodes not Ready: {', '.join(not_ready)}")
    if not __salt__["kubeadm_member.healthz"](f"https://{desc['api']['vip']}:{desc['api']['port']}/healthz")["healthy"]:
        problems.append(f"/healthz through the VIP {desc['api']['vip']}:{desc['api']['port']} does not answer 200")
    return problems


def healthy(name, timeout=90):
    """etcd has exactly one healthy member per control plane (a dead or unknown member is named with
    the safe way to remove it), every node is Ready, the API answers through the VIP."""
    deadline = time.monotonic() + timeout
    problems = _problems()
    while problems and time.monotonic() < deadline:
        time.sleep(3)
        problems = _problems()
    if problems:
        return _ret(name, False, f"cluster {name} is not healthy after {timeout} s: " + "; ".join(problems))
    return _ret(name, comment=f"cluster {name}: {len(_names('control_plane'))} healthy etcd members, "
                              f"{len(_names('control_plane')) + len(_names('worker'))} nodes Ready, API healthy through the VIP")
