"""
The whole cluster at a glance, from the master: which load balancer holds the VIP, each
LB's VRRP state and HAProxy backends, etcd members, health and leader, the API's health
through the VIP, and the nodes as the API reports them.

CLI examples::

    salt-run cluster.status                 # structured
    salt-run cluster.status format=table    # for people
"""

import pathlib
import ssl
import urllib.request

import salt.client
import yaml

__virtualname__ = "cluster"


def __virtual__():
    return __virtualname__


def _description():
    """The cluster description as the master serves it (pillar_roots/cluster.sls)."""
    for root in __opts__.get("pillar_roots", {}).get("base", []):
        path = pathlib.Path(root) / "cluster.sls"
        if path.exists():
            return (yaml.safe_load(path.read_text()) or {}).get("cluster", {})
    return {}


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
        "etcd": _etcd(client, _names(desc, "control_plane")),
        "api": _api_health(desc),
        "nodes": _nodes(client, _names(desc, "control_plane")),
    }
    return table(result) if format == "table" else result


def table(result):
    """Lines of text for `status` (pure function)."""
    lines = [f"cluster {result['cluster']}   VIP {result['vip']} held by {', '.join(result['vip_holders']) or 'NOBODY'}"]
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
