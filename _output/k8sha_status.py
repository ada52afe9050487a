"""
Outputter for ``salt-run cluster.status``: the verdict and its reasons, then the load balancers,
etcd and the nodes as a table. ``--out=json`` / ``--out=yaml`` give the data instead.
"""


def output(data, **kwargs):  # pylint: disable=unused-argument
    """The status as lines of text (the runner sets this outputter as its default)."""
    if not isinstance(data, dict) or "verdict" not in data:
        return str(data)
    lines = [f"{data['verdict'].upper()}" + (": " + "; ".join(data["reasons"]) if data["reasons"] else "")]
    if data.get("cluster") is None:
        return "\n".join(lines)
    return "\n".join(lines + [""] + table(data))


def table(result):
    """Lines of text for a status (pure function)."""
    lines = [f"cluster {result['cluster']}   VIP {result['vip']} held by {', '.join(result['vip_holders']) or 'NOBODY'}"]
    split = result.get("split_brain") or {}
    if split.get("split"):
        lines.append(f"SPLIT BRAIN: MASTER on {', '.join(split['masters']) or '-'}, VIP on {', '.join(split['holders']) or '-'}"
                     " (the load balancers do not hear each other's VRRP; see docs/events-and-healing.md: Split brain)")
    api = result["api"]
    lines.append(f"API through the VIP: {'healthy' if api['healthy'] else 'UNHEALTHY'} ({api['answer']})")
    lines += ["", f"{'load balancer':14} {'VRRP':8} {'VIP':4} {'backends UP':12} servers"]
    for name, lb in result["load_balancers"].items():
        if not isinstance(lb, dict):
            lines.append(f"{name:14} {'?':8} {'?':4} {'?':12} {lb}")
            continue
        servers = " ".join(f"{s['name']}={s['status']}" for s in lb["haproxy"]["servers"])
        up = f"{lb['haproxy'].get('up', 0)}/{lb['haproxy'].get('total', 0)}" if lb["haproxy"]["running"] else "HAProxy down"
        lines.append(f"{name:14} {lb['vrrp']['state']:8} {'yes' if lb['vrrp']['holds_vip'] else 'no':4} {up:12} {servers}")
    lines += ["", *_etcd_lines(result["etcd"]), ""]
    nodes = result.get("nodes") or {}
    lines.append("nodes: " + (", ".join(f"{n} {r}" for n, r in sorted(nodes.items())) or "unavailable (no cluster yet?)"))
    return lines


def _etcd_lines(etcd):
    if etcd.get("members") is None:
        return [f"etcd: unavailable ({etcd.get('error')})"]
    leader = etcd.get("leader", {}).get("name")
    lines = [f"etcd (asked {etcd['asked']}): {len(etcd['members'])} members, leader {leader}"]
    for member in etcd["members"]:
        healthy = [h["healthy"] for url, h in etcd["health"].items() if url in member["client_urls"]]
        state = "healthy" if healthy and all(healthy) else "UNHEALTHY"
        lines.append(f"  {member['name'] or '(starting)':12} {state:10} {' '.join(member['peer_urls'])}")
    return lines + [f"  ! {problem}" for problem in etcd.get("problems", [])]
