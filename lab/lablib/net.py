"""The lab network: a bridge inside its own namespace, one veth into each machine's namespace."""

import ipaddress
import json
import pathlib

from . import config
from .run import LabError, ok, run


def netns_exists(name):
    return pathlib.Path(f"/run/netns/{name}").exists()


def refuse_if_routed_on_host():
    """The lab range must not be reachable from the host: refuse if any host route covers it."""
    routes = json.loads(run("ip", "-j", "-4", "route", "show", "table", "all").stdout or "[]")
    clashes = routes_overlapping_lab(routes)
    if clashes:
        raise LabError(
            f"the host routes {', '.join(clashes)}, which overlaps the lab range {config.NETWORK}; "
            "the lab refuses to start so that no lab packet can leave the host"
        )


def routes_overlapping_lab(routes):
    """Host routes (from `ip -j route`) that cover part of the lab range; default routes do not count."""
    clashes = []
    for route in routes:
        dst = route.get("dst", "")
        if dst in ("", "default"):
            continue
        network = ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False)
        if network.overlaps(config.NETWORK):
            clashes.append(f"{dst} (dev {route.get('dev', '?')})")
    return clashes


def ensure_switch():
    ns = config.SWITCH_NS
    if not netns_exists(ns):
        run("ip", "netns", "add", ns)
    run("ip", "-n", ns, "link", "set", "lo", "up")
    if not ok("ip", "-n", ns, "link", "show", config.BRIDGE):
        run("ip", "-n", ns, "link", "add", config.BRIDGE, "type", "bridge")
    run("ip", "-n", ns, "link", "set", config.BRIDGE, "up")
    run("ip", "-n", ns, "addr", "replace", f"{config.GATEWAY}/{config.NETWORK.prefixlen}", "dev", config.BRIDGE)


def switch_port(ns):
    # veth names are at most 15 characters: derive from the namespace's short name.
    short = ns[len(config.PREFIX) + 1 :] if ns.startswith(config.PREFIX + "-") else ns
    return f"v-{short}"[:15]


def attach(ns, address):
    """Namespace `ns` with eth0 on the bridge at `address`."""
    ensure_switch()
    if not netns_exists(ns):
        run("ip", "netns", "add", ns)
    port = switch_port(ns)
    if not ok("ip", "-n", config.SWITCH_NS, "link", "show", port):
        if ok("ip", "-n", ns, "link", "show", "eth0"):
            run("ip", "-n", ns, "link", "del", "eth0")
        run("ip", "-n", config.SWITCH_NS, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
    run("ip", "-n", config.SWITCH_NS, "link", "set", port, "master", config.BRIDGE, "up")
    run("ip", "-n", ns, "link", "set", "lo", "up")
    run("ip", "-n", ns, "link", "set", "eth0", "up")
    run("ip", "-n", ns, "addr", "replace", f"{address}/{config.NETWORK.prefixlen}", "dev", "eth0")
    # Only the lab subnet is reachable: anything else (a DNS server, the internet) fails at
    # once with "network unreachable" instead of timing out, and no packet leaves the lab.
    run("ip", "-n", ns, "route", "replace", "unreachable", "default")


def set_link(ns, up):
    """Cut or restore a namespace's cable (its port on the bridge)."""
    run("ip", "-n", config.SWITCH_NS, "link", "set", switch_port(ns), "up" if up else "down")


def detach(ns):
    port = switch_port(ns)
    if netns_exists(config.SWITCH_NS) and ok("ip", "-n", config.SWITCH_NS, "link", "show", port):
        run("ip", "-n", config.SWITCH_NS, "link", "del", port, check=False)
    if netns_exists(ns):
        run("ip", "netns", "del", ns, check=False)


def lab_namespaces():
    netns = pathlib.Path("/run/netns")
    return sorted(p.name for p in netns.glob(f"{config.PREFIX}-*")) if netns.exists() else []


def drop_vrrp(drop):
    """Cut (or restore) VRRP between the machines, as a broken network or a filtering cloud would."""
    ns = config.SWITCH_NS
    if drop:
        run("ip", "netns", "exec", ns, "nft", "-f", "-", input=(
            "table bridge k8shalab_novrrp {\n"
            "  chain forward { type filter hook forward priority -5; ip protocol vrrp drop; }\n}\n"))
    else:
        run("ip", "netns", "exec", ns, "nft", "delete", "table", "bridge", "k8shalab_novrrp", check=False)


def drop_multicast(drop):
    """Make the bridge drop (or stop dropping) multicast, as many clouds do."""
    ns = config.SWITCH_NS
    if drop:
        run("ip", "netns", "exec", ns, "nft", "-f", "-", input=(
            "table bridge k8shalab_nomcast {\n"
            "  chain forward { type filter hook forward priority 0; ether daddr & 01:00:00:00:00:00 == 01:00:00:00:00:00 "
            "ether daddr != ff:ff:ff:ff:ff:ff drop; }\n}\n"))
    else:
        run("ip", "netns", "exec", ns, "nft", "delete", "table", "bridge", "k8shalab_nomcast", check=False)
