"""
The whole cluster at a glance, from the master: which load balancer holds the VIP, each
LB's VRRP state and HAProxy backends, etcd members, health and leader, the API's health
through the VIP, and the nodes as the API reports them.

CLI examples::

    salt-run cluster.status                 # a table; exit code 0 only when healthy
    salt-run cluster.status --out=json      # the same as data
    salt-run cluster.split_brain            # are two load balancers MASTER? (event when so)
    salt-run cluster.history                # recent repairs, refusals, VIP moves (--out=json: data)
    salt-run cluster.unretire cp3           # orch.cluster may build a node orch.remove_node took out
"""

import salt.client
import salt.utils.event

__virtualname__ = "cluster"


def __virtual__():
    return __virtualname__


def _description():
    """The cluster description the master serves, through the one reader (problems included)."""
    return __utils__["k8sha_description.served"](__opts__)


def _names(read, role):
    return read["members"][role]


def _call(client, targets, fun, arg=(), timeout=15):
    if not targets:
        return {}
    return client.cmd(targets, fun, arg=list(arg), tgt_type="list", timeout=timeout)


def _api_health(desc):
    api = desc["api"]
    return __utils__["k8sha_probe.healthz"](f"https://{api['vip']}:{api['port']}/healthz")


def _etcd(client, control_planes):
    """Ask control planes in turn until one answers for etcd."""
    for name in control_planes:
        membership = _call(client, [name], "etcd_cluster.membership").get(name)
        if isinstance(membership, dict):
            lead = _call(client, [name], "etcd_cluster.leader").get(name) or {}
            return dict(membership, asked=name, leader=lead)
        last = membership
    return {"asked": None, "error": str(last) if control_planes else "no control plane in the description"}


def _nodes(client, control_planes):
    """{node: Ready|NotReady} as the API reports it, from the first control plane that answers."""
    for name in control_planes:
        answer = _call(client, [name], "kube_nodes.ready").get(name)
        if isinstance(answer, dict):
            return answer
    return {}


def split_brain_of(load_balancers):
    """Whether more than one load balancer is VRRP MASTER or holds the VIP (pure), from each
    LB's lb_status.summary as the master asked it."""
    answered = {n: s for n, s in load_balancers.items() if isinstance(s, dict)}
    masters = sorted(n for n, s in answered.items() if s["vrrp"]["state"] == "MASTER")
    holders = sorted(n for n, s in answered.items() if s["vrrp"]["holds_vip"])
    return {"split": len(masters) > 1 or len(holders) > 1, "masters": masters, "holders": holders}


def split_brain():
    """Ask every load balancer (the event that started this is only a hint) and, when more
    than one is MASTER or holds the VIP, send <prefix>/keepalived/split_brain. Nothing is
    changed: see docs/events-and-healing.md, "Split brain", for why."""
    with salt.client.LocalClient(mopts=__opts__) as client:
        found = split_brain_of(_call(client, _names(_description(), "loadbalancer"), "lb_status.summary"))
    __salt__["heal.vip_holders_seen"](found["holders"])
    if found["split"]:
        prefix = __utils__["k8sha_description.defaults"](__opts__)["k8sha"]["event_prefix"]
        with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False) as bus:
            bus.fire_event(found, f"{prefix}/keepalived/split_brain")
    return found


def verdict(result):
    """(healthy | degraded | down, reasons) of a status (pure). Down: clients cannot reach the API
    or etcd has no quorum; degraded: it works with less redundancy than described."""
    down, degraded = [], []
    if not result["vip_holders"]:
        down.append(f"no load balancer holds the VIP {result['vip']}")
    if not result["api"]["healthy"]:
        down.append(f"the API does not answer through the VIP ({result['api']['answer']})")
    etcd = result["etcd"]
    if etcd.get("members") is None:
        down.append(f"etcd: no control plane answered ({etcd.get('error')})")
    else:
        healthy = sum(1 for h in etcd["health"].values() if h.get("healthy"))
        if healthy <= len(etcd["members"]) // 2:
            down.append(f"etcd: {healthy} of {len(etcd['members'])} members healthy, no quorum")
        elif healthy < len(etcd["members"]):
            degraded.append(f"etcd: {healthy} of {len(etcd['members'])} members healthy")
        named = {m["name"] for m in etcd["members"]}
        degraded += [f"etcd: {cp} is no member" for cp in result.get("control_planes", []) if cp not in named]
        degraded += [f"etcd: {problem}" for problem in etcd.get("problems", [])]
    if result["split_brain"]["split"]:
        degraded.append(f"split brain: MASTER on {', '.join(result['split_brain']['masters'])}")
    for name, lb in result["load_balancers"].items():
        if not isinstance(lb, dict):
            degraded.append(f"{name}: {lb}")
        elif not lb["haproxy"]["running"]:
            degraded.append(f"{name}: HAProxy is not running")
        elif lb["haproxy"].get("up", 0) < lb["haproxy"].get("total", 0):
            degraded.append(f"{name}: {lb['haproxy']['up']}/{lb['haproxy']['total']} API servers UP")
    degraded += [f"{n}: {state}" for n, state in sorted(result["nodes"].items()) if state != "Ready"]
    if not result["nodes"]:
        degraded.append("no node list from the API (no cluster yet?)")
    return ("down", down + degraded) if down else ("degraded", degraded) if degraded else ("healthy", [])


def status():
    """
    The cluster's state as data, with a verdict (healthy / degraded / down) and its reasons.
    Shown as a table (outputter k8sha_status); ``--out=json`` or ``--out=yaml`` give the data.
    The exit code is 0 only when healthy, so that it can guard a script.
    """
    read = _description()
    desc = read["cluster"] if not read["problems"] else None
    if desc is None:
        result = {"cluster": None, "verdict": "down", "reasons": ["invalid cluster description"] + read["problems"]}
        return {"data": dict(result, retcode=2), "outputter": "k8sha_status"}
    balancers = _names(read, "loadbalancer")
    with salt.client.LocalClient(mopts=__opts__) as client:
        lbs = _call(client, balancers, "lb_status.summary")
        result = {
            "cluster": desc["name"],
            "vip": desc["api"]["vip"],
            "vip_holders": sorted(n for n, s in lbs.items() if isinstance(s, dict) and s["vrrp"]["holds_vip"]),
            "load_balancers": {n: lbs.get(n, "did not answer") for n in balancers},
            "split_brain": split_brain_of(lbs),
            "etcd": _etcd(client, _names(read, "control_plane")),
            "api": _api_health(desc),
            "nodes": _nodes(client, _names(read, "control_plane")),
            "control_planes": _names(read, "control_plane"),
        }
    result["verdict"], result["reasons"] = verdict(result)
    result["retcode"] = {"healthy": 0, "degraded": 1}.get(result["verdict"], 2)
    return {"data": result, "outputter": "k8sha_status"}


def history(limit=50):
    """Recent repairs, refusals, faults left to a human and VIP moves, newest first, from the
    master's own records (heal.history); shown by the k8sha_history outputter."""
    return {"data": __salt__["heal.history"](limit), "outputter": "k8sha_history"}


def unretire(node):
    """Let orch.cluster build ``node`` again (and repairs resume) after orch.remove_node took it out
    while the description still lists it. A control plane whose API server still answers (a
    removal stopped half-way) goes back into HAProxy's pool; one that is gone goes back when
    orch.cluster has joined it again."""
    done = __salt__["heal.unretire"](node)
    read = _description()
    if node not in _names(read, "control_plane"):
        return done
    address = next(n["address"] for n in read["cluster"]["nodes"] if n["name"] == node)
    url = f"https://{address}:{read['cluster']['api']['port']}/healthz"
    with salt.client.LocalClient(mopts=__opts__) as client:
        balancers = _names(read, "loadbalancer")
        serving = [a for a in _call(client, balancers, "kubeadm_member.healthz", [url]).values()
                   if isinstance(a, dict) and a.get("healthy")]
        if not serving:  # a server that is not there would take requests until its check fails
            done["pool"] = "left out until it joins again (orch.cluster puts it back)"
            return done
        answers = _call(client, balancers, "lb_status.server_state", [node, "ready"])
    done["pool"] = {lb: "ready" if isinstance(a, dict) else a for lb, a in answers.items()}
    return done
