"""
OpenStack networking for the cluster, through openstacksdk: the security groups of each
role, the VIP's reserved port, the VIP as an allowed address pair on every load balancer's
port (what the blog's author clicked together in Horizon), and an optional floating IP.

Every function reads first and writes only what is missing, so a second run sends no write.
Errors name the object and the fix (port security disabled, missing network or subnet, the
VIP taken by another port).

Connection: pillar ``k8sha:lookup:openstack`` (``cloud``: a clouds.yaml entry, or ``auth``:
explicit keystone arguments; ``region``). The functions that take ``conn`` are the testable
core; the others connect first.

CLI example (on the master)::

    salt-call openstack_net.vip_networking
"""

import ipaddress
import os
import socket

import salt.config
from salt.exceptions import CommandExecutionError

try:
    import openstack
    from openstack import exceptions as os_exc

    HAS_OPENSTACK = True
except ImportError:  # pragma: no cover - openstacksdk is in requirements.lock
    HAS_OPENSTACK = False

__virtualname__ = "openstack_net"
VRRP = "112"


def __virtual__():
    if not HAS_OPENSTACK:
        return False, "openstack_net needs openstacksdk"
    return __virtualname__


def connect(settings):
    """An openstacksdk connection from k8sha:lookup:openstack settings."""
    kwargs = dict(settings.get("auth") or {})
    if settings.get("region"):
        kwargs["region_name"] = settings["region"]
    return openstack.connect(cloud=settings.get("cloud") or None, **kwargs)


# --- pure parts -----------------------------------------------------------------------------------

def _host(address):
    return str(ipaddress.ip_interface(address).ip) if "/" in str(address) else str(address)


def merged_pairs(existing, vip):
    """The port's allowed address pairs with the VIP (/32) added once; others kept as they are."""
    pairs = [dict(p) for p in existing or []]
    if any(_host(p.get("ip_address", "")) == vip for p in pairs):
        return pairs
    return pairs + [{"ip_address": f"{vip}/32"}]


def _rule(protocol, ports=None, source=None, ethertype="IPv4"):
    low, high = (None, None) if ports is None else (ports if isinstance(ports, tuple) else (ports, ports))
    return {"direction": "ingress", "ethertype": ethertype, "protocol": protocol,
            "port_range_min": low, "port_range_max": high, "remote_ip_prefix": source}


SALT_PORTS = (4505, 4506)  # the master's publish and request ports
GROUPS = {"loadbalancer": "k8sha-loadbalancer", "control_plane": "k8sha-control-plane", "worker": "k8sha-worker"}


def cluster_rules(description, admin_sources, flows, metrics_sources=(), master_sources=()):
    """{group name: [ingress rules]} for the description (pure function; the lab's switch
    enforces exactly these too, lab/lablib/secgroups.py). ``flows``: who reaches which port of
    each role (cluster_ports.flows, the source the firewall zones read too). Egress stays open
    (Neutron's default rules). SSH only from ``admin_sources`` (default: the salt-master); VRRP
    only between the load balancers; the metrics ports only from ``metrics_sources``; etcd's client
    port of the control planes also from ``master_sources`` (the salt-masters' repair locks).
    ``k8sha-salt-master`` is for the master's own instance when it runs in the cloud: the nodes
    reach its two ports."""
    nodes = description["nodes"]
    by_role = {role: [f"{n['address']}/32" for n in nodes if n["role"] == role]
               for role in ("loadbalancer", "control_plane", "worker")}
    ssh = [_rule("tcp", 22, source) for source in admin_sources]
    groups = {GROUPS[role]: list(ssh) for role in by_role}
    for flow in flows:
        if flow["sources"] in ("anywhere", "metrics sources", "salt-masters", "pod network"):
            sources = {"anywhere": ["0.0.0.0/0"], "metrics sources": list(metrics_sources),
                       "salt-masters": list(master_sources),
                       "pod network": [description["kubernetes"]["pod_cidr"]]}[flow["sources"]]
        else:
            sources = [a for r in flow["sources"] for a in by_role[r]]
        ports = tuple(flow["ports"]) if flow["ports"] else None
        groups[GROUPS[flow["role"]]] += [_rule(flow["protocol"], ports, s) for s in sources]
    groups[GROUPS["loadbalancer"]] += [_rule(VRRP, None, peer) for peer in by_role["loadbalancer"]]
    groups["k8sha-salt-master"] = [_rule("tcp", SALT_PORTS, f"{n['address']}/32") for n in nodes]
    return groups


def admin_sources(settings, provider_masters):
    """The sources SSH is open to: ``k8sha:lookup:admin_sources`` when set, else the salt-master
    as the nodes reach it (the salt-cloud providers' ``minion: master``), each as a /32 (pure
    but for name resolution). Raises naming the setting when there is none."""
    return _configured_or_master(settings.get("admin_sources"), provider_masters, "admin_sources", "SSH and Salt")


def metrics_sources(settings, provider_masters):
    """The sources the metrics ports are open to: ``k8sha:lookup:metrics:sources``, else the
    salt-master as the nodes reach it (as admin_sources)."""
    return _configured_or_master(settings["metrics"]["sources"], provider_masters, "metrics:sources", "the metrics")


def master_sources(provider_masters):
    """The salt-masters as the nodes reach them (the salt-cloud providers' ``minion: master``), each as a /32."""
    return _configured_or_master(None, provider_masters, None, "the salt-masters' etcd locks")


def _configured_or_master(configured, provider_masters, setting, what):
    """``configured``, else the providers' masters resolved; ``setting``: what overrides them (None: nothing)."""
    fix = f"set k8sha:lookup:{setting}" if setting else "name it by its address in the salt-cloud provider"
    sources = list(configured or [])
    if not sources:
        for master in provider_masters:
            try:
                sources += sorted({i[4][0] for i in socket.getaddrinfo(master, None, socket.AF_INET)})
            except OSError:
                raise CommandExecutionError(f"the salt-master address {master!r} (salt-cloud provider, minion: master) "
                                            f"does not resolve: {fix}") from None
    if not sources:
        override = f"set k8sha:lookup:{setting} (the salt-master's address as the nodes see it) or " if setting else "set "
        raise CommandExecutionError(f"no source for {what}: {override}`minion: master` in the salt-cloud provider")
    return [s if "/" in str(s) else f"{s}/32" for s in sources]


def _same_rule(existing, wanted):
    """Whether an existing rule (openstacksdk resource as a dict) is the wanted one."""
    existing = dict(existing, ethertype=existing.get("ether_type", existing.get("ethertype")))
    keys = ("direction", "ethertype", "protocol", "port_range_min", "port_range_max", "remote_ip_prefix")
    return all(str(existing.get(k)) == str(wanted.get(k)) for k in keys)


# --- reads and writes --------------------------------------------------------------------------------

def _one(items, what, fix):
    items = list(items)
    if not items:
        raise CommandExecutionError(f"{what} not found: {fix}")
    return items[0]


def security_group(conn, name, rules):
    """Group ``name`` exists with every rule in ``rules``; returns the list of what was created."""
    created = []
    group = next(iter(conn.network.security_groups(name=name)), None)
    if group is None:
        group = conn.network.create_security_group(name=name, description="k8sha: managed by Salt")
        created.append(f"security group {name}")
    existing = list(conn.network.security_group_rules(security_group_id=group.id))
    for rule in rules:
        if any(_same_rule(e.to_dict() if hasattr(e, "to_dict") else e, rule) for e in existing):
            continue
        conn.network.create_security_group_rule(security_group_id=group.id,
                                                **{k: v for k, v in rule.items() if v is not None})
        created.append(f"{name}: {rule['protocol']} {rule['port_range_min'] or ''}-{rule['port_range_max'] or ''} "
                       f"from {rule['remote_ip_prefix'] or 'anywhere'}")
    return created


def vip_port(conn, network, subnet, vip, name):
    """The VIP's reserved port (so that Neutron never gives the address to an instance)."""
    for port in conn.network.ports(network_id=network.id, fixed_ips=f"ip_address={vip}"):
        if port.name == name and not port.device_owner:
            return port, False
        raise CommandExecutionError(
            f"the VIP {vip} is already used by port {port.id} ({port.name or 'no name'}, owner "
            f"{port.device_owner or 'none'}): choose a free address for cluster:api:vip or delete that port")
    port = conn.network.create_port(network_id=network.id, name=name, device_owner="",
                                    fixed_ips=[{"subnet_id": subnet.id, "ip_address": vip}])
    return port, True


def allowed_address_pair(conn, port, vip, server_name):
    """The VIP (/32) among the allowed address pairs of a load balancer's port, merged with the
    pairs it has; returns whether the port was updated."""
    if port.is_port_security_enabled is False:
        raise CommandExecutionError(
            f"port security is disabled on port {port.id} of {server_name}: Neutron refuses allowed address "
            "pairs there (409). Enable it (openstack port set --enable-port-security) or the VIP cannot move")
    pairs = merged_pairs(port.allowed_address_pairs, vip)
    if pairs == list(port.allowed_address_pairs or []):
        return False
    try:
        conn.network.update_port(port, allowed_address_pairs=pairs)
    except os_exc.ConflictException as exc:
        raise CommandExecutionError(
            f"Neutron refused allowed address pairs on port {port.id} of {server_name} ({exc.details or exc}): "
            "is port security disabled on it or on its network?") from None
    return True


def floating_ip(conn, port, external_network):
    """A floating IP on the VIP's port, from ``external_network``; returns (address, created)."""
    for fip in conn.network.ips(port_id=port.id):
        return fip.floating_ip_address, False
    fip = conn.network.create_ip(floating_network_id=external_network.id, port_id=port.id)
    return fip.floating_ip_address, True


def security_groups_with(conn, groups):
    """Every security group of ``groups`` ({name: rules}) with its rules: what was created.
    Before the instances (their ports carry these groups)."""
    changes = []
    for group, rules in groups.items():
        changes += security_group(conn, group, rules)
    return changes


def vip_networking_with(conn, description, settings):
    """The VIP port, the pairs on every LB port, the floating IP: what changed."""
    changes = []
    network = _one(conn.network.networks(name=settings["network"]), f"network {settings['network']!r}",
                   "set k8sha:lookup:openstack:network to the network of the cluster's subnet")
    subnet = _one(conn.network.subnets(name=settings["subnet"], network_id=network.id),
                  f"subnet {settings['subnet']!r} on network {settings['network']!r}",
                  "set k8sha:lookup:openstack:subnet")
    vip = str(description["api"]["vip"])
    port, created = vip_port(conn, network, subnet, vip, f"{description['name']}-vip")
    if created:
        changes.append(f"VIP port {vip}")
    for node in (n for n in description["nodes"] if n["role"] == "loadbalancer"):
        server = _one(conn.compute.servers(name=f"^{node['name']}$"), f"instance {node['name']}",
                      "create it first (orch.provision)")
        lb_port = _one(conn.network.ports(device_id=server.id, network_id=network.id),
                       f"a port of {node['name']} on {settings['network']!r}", "attach the instance to the network")
        if allowed_address_pair(conn, lb_port, vip, node["name"]):
            changes.append(f"{vip}/32 allowed on {node['name']}'s port")
    if settings.get("external_network"):
        external = _one(conn.network.networks(name=settings["external_network"]),
                        f"external network {settings['external_network']!r}", "set k8sha:lookup:openstack:external_network")
        address, created = floating_ip(conn, port, external)
        if created:
            changes.append(f"floating IP {address} on the VIP")
    return changes


def _provider_masters():
    """The `minion: master` of every salt-cloud provider of this master."""
    path = os.path.join(os.path.dirname(__opts__["conf_file"]), "cloud")
    providers = salt.config.cloud_config(path).get("providers", {})
    masters = set()
    for entries in providers.values():
        for driver in entries.values():
            configured = driver.get("minion", {}).get("master") or []
            # One master, or a list: hot multi-master, every node connects to each (docs/architecture.md).
            masters.update(map(str, [configured] if isinstance(configured, str) else configured))
    return sorted(masters)


def rules():
    """{security group: ingress rules} for the cluster description (on the master)."""
    settings, masters = __salt__["cluster_topology.settings"](), _provider_masters()
    return cluster_rules(__salt__["cluster_topology.description"](), admin_sources(settings, masters),
                         __salt__["cluster_ports.current"](), metrics_sources(settings, masters), master_sources(masters))


def security_groups():
    """The security groups for the cluster description (on the master, in orch.provision)."""
    settings = __salt__["cluster_topology.settings"]()["openstack"]
    return security_groups_with(connect(settings), rules())


def vip_networking():
    """The VIP's networking for the cluster description (on the master, in orch.provision,
    after the instances exist)."""
    settings = __salt__["cluster_topology.settings"]()["openstack"]
    return vip_networking_with(connect(settings), __salt__["cluster_topology.description"](), settings)
