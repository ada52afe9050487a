"""
The whole cluster at a glance, from the master: which load balancer holds the VIP, each
LB's VRRP state and HAProxy backends, etcd members, health and leader, the API's health
through the VIP, and the nodes as the API reports them.

CLI examples::

    salt-run cluster.status                 # structured
    salt-run cluster.status format=table    # for people
    salt-run cluster.split_brain            # are two load balancers MASTER? (event when so)
"""

import copy
import pathlib
import ssl
import urllib.request

import salt.client
import salt.utils.dictupdate
import salt.utils.event
import yaml

__virtualname__ = "cluster"


def __virtual__():
    return __virtualname__


DEFAULTS = pathlib.Path(__file__).resolve().parents[1] / "salt" / "k8sha" / "defaults.yaml"


def _description():
    """The cluster description as the master serves it (pillar_roots/cluster.sls), over the
    defaults (salt/k8sha/defaults.yaml) as the nodes see it."""
    defaults = (yaml.safe_load(DEFAULTS.read_text()) or {}).get("cluster", {}) if DEFAULTS.exists() else {}
    for root in __opts__.get("pillar_roots", {}).get("base", []):
        path = pathlib.Path(root) / "cluster.sls"
        if path.exists():
            served = (yaml.safe_load(path.read_text()) or {}).get("cluster", {})
            return salt.utils.dictupdate.merge(copy.deepcopy(defaults), served) if isinstance(served, dict) else {}
    return defaults


def _names(desc, role):
    return [n["name"] for n in desc.get("nodes", []) if n.get("role") == role]


def _call(client, targets, fun, arg=(), timeout=15):
    if not targets:
        return {}
    return client.cmd(targets, fun, arg=list(arg), tgt_type="list", timeout=timeout)


def _api_health(desc, timeout=3):
    api = desc.get("api", {})
    url = f"https://{api['vip']}:{api['port']}/healthz"
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return {"url": url, "healthy": response.status == 200, "answer": response.read(64).decode()}
    except Exception as exc:  # pylint: disable=broad-except
        return {"url": url, "healthy": False, "answer": str(exc)}


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
        answer = _call(client, [name], "kubeadm_member.nodes").get(name)
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
    desc = _description()
    with salt.client.LocalClient(mopts=__opts__) as client:
        found = split_brain_of(_call(client, _names(desc, "loadbalancer"), "lb_status.summary"))
    if found["split"]:
        prefix = (yaml.safe_load(DEFAULTS.read_text()) or {}).get("k8sha", {}).get("event_prefix", "k8sha")
        with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False) as bus:
            bus.fire_event(found, f"{prefix}/keepalived/split_brain")
    return found


def status(format="structured"):  # pylint: disable=redefined-builtin
    """
    The cluster's state. ``format=table`` returns the same as lines of text.
    """
    desc = _description()
    client = salt.client.LocalClient(mopts=__opts__)
    balancers = _names(desc, "loadbalancer")
    lbs = _call(client, balancers, "lb_status.summary")
    result = {
        "cluster": desc.get("name"),
        "vip": desc.get("api", {}).get("vip"),
        "vip_holders": sorted(n for n, s in lbs.items() if isinstance(s, dict) and s["vrrp"]["holds_vip"]),
        "load_balancers": {n: lbs.get(n, "did not answer") for n in balancers},
        "split_brain": split_brain_of(lbs),
        "etcd": _etcd(client, _names(desc, "control_plane")),
        "api": _api_health(desc),
        "nodes": _nodes(client, _names(desc, "control_plane")),
    }
    return table(result) if format == "table" else result


def table(result):
    """Lines of text for `status` (pure function)."""
    lines = [f"cluster {result['cluster']}   VIP {result['vip']} held by {', '.join(result['vip_holders']) or 'NOBODY'}"]
    split = result.get("split_brain") or {}
    if split.get("split"):
        lines.append(f"SPLIT BRAIN: MASTER on {', '.join(split['masters']) or '-'}, VIP on {', '.join(split['holders']) or '-'}"
                     " (the load balancers do not hear each other's VRRP; see docs/events-and-healing.md: Split brain)")
    api = result["api"]
    lines.append(f"API through the VIP: {'healthy' if api['healthy'] else 'UNHEALTHY'} ({api['answer']})")
    lines.append("")
    lines.append(f"{'load balancer':14} {'VRRP':8} {'VIP':4} {'backends UP':12} servers")
    for name, lb in result["load_balancers"].items():
        if not isinstance(lb, dict):
            lines.append(f"{name:14} {'?':8} {'?':4} {'?':12} {lb}")
            continue
        servers = " ".join(f"{s['name']}={s['status']}" for s in lb["haproxy"]["servers"])
        up = f"{lb['haproxy'].get('up', 0)}/{lb['haproxy'].get('total', 0)}" if lb["haproxy"]["running"] else "HAProxy down"
        lines.append(f"{name:14} {lb['vrrp']['state']:8} {'yes' if lb['vrrp']['holds_vip'] else 'no':4} {up:12} {servers}")
    lines.append("")
    etcd = result["etcd"]
    if etcd.get("members") is None:
        lines.append(f"etcd: unavailable ({etcd.get('error')})")
    else:
        leader = etcd.get("leader", {}).get("name")
        lines.append(f"etcd (asked {etcd['asked']}): {len(etcd['members'])} members, leader {leader}")
        for member in etcd["members"]:
            healthy = [h["healthy"] for url, h in etcd["health"].items() if url in member["client_urls"]]
            state = "healthy" if healthy and all(healthy) else "UNHEALTHY"
            lines.append(f"  {member['name'] or '(starting)':12} {state:10} {' '.join(member['peer_urls'])}")
        lines += [f"  ! {problem}" for problem in etcd.get("problems", [])]
    nodes = result.get("nodes") or {}
    lines.append("")
    lines.append("nodes: " + (", ".join(f"{n} {r}" for n, r in sorted(nodes.items())) or "unavailable (no cluster yet?)"))
    return "\n".join(lines)
