"""
Security groups enforced by the lab's switch, as Neutron enforces them on each port: the
rules are the ones orch.provision computes for OpenStack (openstack_net.cluster_rules, via
cluster_machines.security_groups_ready), made into nftables rules on the bridge inside the
switch namespace. A machine's port gets the groups of its salt-cloud profile; each master's
port gets `k8sha-salt-master`, as the masters' instances would on OpenStack.

Faithful: ingress only (Neutron's default egress rules allow everything out), IPv4 rules,
ARP and IPv6 pass. Different: the kernel here has no bridge conntrack, so "established" is
judged statelessly: TCP segments that are not a connection's first SYN pass, and so do ICMP
errors (what conntrack marks RELATED). Every connection is still opened against the rules.
"""

import json
import subprocess

from . import config
from .run import LabError, run

TABLE = f"{config.PREFIX}_secgroups"
STATE = config.LAB_DIR / "security-groups.json"
# The masters' ports (the second one's whether or not it runs): their namespaces.
MASTER_PORTS = {"master": config.MASTER_NS, "master-b": config.SECOND_MASTER_NS}
MASTER_GROUP = "k8sha-salt-master"
# The lab's image registry (lab/lablib/images.py) runs beside the first master: the lab's own
# group opens it to the lab's network. Production nodes pull from their registries (or mirrors).
REGISTRY_GROUP = "k8sha-lab-registry"
REGISTRY_PORT = 5000


def lab_groups():
    """The lab's own groups (pure), added to those orch.provision computes."""
    return {REGISTRY_GROUP: [{"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                              "port_range_min": REGISTRY_PORT, "port_range_max": REGISTRY_PORT,
                              "remote_ip_prefix": str(config.NETWORK)}]}


def load():
    return json.loads(STATE.read_text()) if STATE.exists() else {"groups": {}, "ports": {}}


def _save(state):
    STATE.parent.mkdir(parents=True, exist_ok=True)
    STATE.write_text(json.dumps(state, indent=1, sort_keys=True))


def nft_rule(rule):
    """One Neutron ingress rule as an nftables match + accept (pure)."""
    if rule.get("direction", "ingress") != "ingress" or rule.get("ethertype", "IPv4") != "IPv4":
        return None
    parts = []
    if rule.get("remote_ip_prefix") and rule["remote_ip_prefix"] != "0.0.0.0/0":
        parts.append(f"ip saddr {rule['remote_ip_prefix']}")
    protocol = rule.get("protocol")
    low, high = rule.get("port_range_min"), rule.get("port_range_max")
    if protocol in ("tcp", "udp") and low is not None:
        parts.append(f"{protocol} dport {low}" if low == high else f"{protocol} dport {low}-{high}")
    elif protocol:
        parts.append(f"ip protocol {protocol}")
    return " ".join(parts + ["accept"])


def ruleset(state, switch_port):
    """The nftables script for every port's groups (pure); ``switch_port(name)`` names a
    machine's port on the bridge."""
    chains, verdicts = [], []
    defined = {**state["groups"], **lab_groups()}
    for name, groups in sorted(state["ports"].items()):
        missing = [g for g in groups if g not in defined]
        if missing:
            continue  # only the masters' ports can be here before their group exists
        chain = f"to_{name}".replace("-", "_")
        body = ["tcp flags & (syn | ack) != syn accept",
                "icmp type { destination-unreachable, time-exceeded, parameter-problem } accept"]
        body += [r for g in groups for r in map(nft_rule, defined[g]) if r]
        body.append("counter drop")
        chains.append(f"  chain {chain} {{\n" + "".join(f"    {line}\n" for line in body) + "  }\n")
        verdicts.append(f'"{switch_port(name)}" : jump {chain}')
    forward = ("  chain forward {\n    type filter hook forward priority 0; policy accept;\n"
               "    ether type != ip accept\n"
               + (f"    oifname vmap {{ {', '.join(verdicts)} }}\n" if verdicts else "") + "  }\n")
    return f"table bridge {TABLE}\ndelete table bridge {TABLE}\ntable bridge {TABLE} {{\n{forward}{''.join(chains)}}}\n"


def _switch_port(name):
    from . import net  # pylint: disable=import-outside-toplevel
    return net.switch_port(MASTER_PORTS.get(name) or config.machine_ns(name))


def apply(state=None):
    state = state or load()
    run("ip", "netns", "exec", config.SWITCH_NS, "nft", "-f", "-", input=ruleset(state, _switch_port))


def set_groups(groups):
    """The groups and their rules (orch.provision); the masters' ports join their group."""
    state = load()
    state["groups"] = groups
    for port in MASTER_PORTS:
        state["ports"][port] = [MASTER_GROUP, REGISTRY_GROUP] if MASTER_GROUP in groups else []
    _save(state)
    apply(state)


def set_port(name, groups):
    """Machine ``name``'s port carries ``groups``; an unknown group is refused, as Neutron does."""
    state = load()
    unknown = [g for g in groups if g not in state["groups"]]
    if unknown:
        raise LabError(f"security group {unknown[0]} not found: orch.provision creates the cluster's groups "
                       "(cluster_machines.security_groups_ready)")
    state["ports"][name] = list(groups)
    _save(state)
    apply(state)


def remove_port(name):
    state = load()
    if state["ports"].pop(name, None) is not None:
        _save(state)
        apply(state)


def dropped(name):
    """Packets the groups of ``name``'s port dropped so far (0 when it has no groups)."""
    chain = f"to_{name}".replace("-", "_")
    out = subprocess.run(["ip", "netns", "exec", config.SWITCH_NS, "nft", "-j", "list", "chain", "bridge", TABLE, chain],
                         capture_output=True, text=True, check=False).stdout
    if not out:
        return 0
    return sum(e["rule"]["expr"][0]["counter"]["packets"] for e in json.loads(out)["nftables"]
               if "rule" in e and e["rule"]["expr"] and "counter" in e["rule"]["expr"][0])
