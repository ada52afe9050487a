"""
The cluster description (pillar ``cluster``): defaults, validation and the view
one node needs to configure its role.

Every problem is reported at once, each naming the field and the fix, so an
operator can correct the pillar in one pass. Nothing here changes the system.

CLI examples::

    salt-call cluster_topology.validate
    salt-call cluster_topology.view
    salt-call cluster_topology.members loadbalancer
"""

import copy
import ipaddress
import re
import socket
import time

from salt.exceptions import CommandExecutionError

__virtualname__ = "cluster_topology"

ROLES = ("loadbalancer", "control_plane", "worker")
DEFAULTS_URL = "salt://k8sha/defaults.yaml"
# Secrets that ship in examples or in the seed blog post: never accepted.
KNOWN_DEFAULT_SECRETS = {"p@ssw0rd", "change-me", "changeme", "password", "secret", "1111"}
PASS_AUTH_MAX_LEN = 8  # keepalived truncates PASS authentication to 8 characters
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
K8S_VERSION_RE = re.compile(r"^1\.\d{1,2}(\.\d{1,3})?$")


def __virtual__():
    return __virtualname__


# --------------------------------------------------------------------------
# Loading: defaults.yaml (one place) merged with pillar
# --------------------------------------------------------------------------
def _merge(base, override):
    """Deep merge of dicts; lists and scalars in ``override`` replace."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


DEFAULTS_CACHE_SECONDS = 10


def _defaults():
    """defaults.yaml from the file server. Kept for a few seconds: one render or one healing
    check reads it many times, and each read makes a file client (costly on the master)."""
    cached = __context__.get("k8sha_defaults")
    if cached and time.monotonic() - cached[0] < DEFAULTS_CACHE_SECONDS:
        return copy.deepcopy(cached[1])
    defaults = __salt__["slsutil.renderer"](DEFAULTS_URL, default_renderer="yaml") or {}
    __context__["k8sha_defaults"] = (time.monotonic(), defaults)
    return copy.deepcopy(defaults)


def settings():
    """
    How the roles are installed (packages, paths, check timings): ``k8sha`` in
    defaults.yaml merged with pillar ``k8sha:lookup``.

    CLI example: ``salt-call cluster_topology.settings``
    """
    return _merge(_defaults().get("k8sha", {}), __pillar__.get("k8sha", {}).get("lookup", {}))


def description():
    """The cluster description: ``cluster`` in defaults.yaml merged with pillar ``cluster``."""
    pillar_cluster = __pillar__.get("cluster")
    if not isinstance(pillar_cluster, dict):
        return pillar_cluster
    return _merge(_defaults().get("cluster", {}), pillar_cluster)


# --------------------------------------------------------------------------
# Validation (pure functions: they take the description, return problems)
# --------------------------------------------------------------------------
def _ip(value):
    try:
        return ipaddress.IPv4Address(str(value))
    except ValueError:
        return None


def _network(value):
    try:
        return ipaddress.IPv4Network(str(value), strict=True)
    except ValueError:
        return None


def _int_in(value, low, high):
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_nodes(desc, problems):
    nodes = desc.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        problems.append(
            "cluster.nodes: missing or empty; list every node as "
            "{name, role, address} (see pillar/cluster.sls)"
        )
        return []
    seen_names, seen_addresses, valid = {}, {}, []
    for index, node in enumerate(nodes):
        where = f"cluster.nodes[{index}]"
        if not isinstance(node, dict):
            problems.append(f"{where}: expected a mapping with name, role and address")
            continue
        name = node.get("name")
        if isinstance(name, str) and name:
            where = f"cluster.nodes[{index}] ({name})"
        if not isinstance(name, str) or not NAME_RE.match(name):
            problems.append(
                f"{where}.name: {name!r} is not a valid node name; use the minion id, "
                "lower-case letters, digits and '-' (at most 63 characters)"
            )
        elif name.lower() in seen_names:
            problems.append(
                f"{where}.name: duplicate name {name!r} (also cluster.nodes[{seen_names[name.lower()]}]); "
                "every node needs its own minion id"
            )
        else:
            seen_names[name.lower()] = index
        role = node.get("role")
        if role not in ROLES:
            problems.append(f"{where}.role: unknown role {role!r}; use one of {', '.join(ROLES)}")
        address = _ip(node.get("address"))
        if address is None:
            problems.append(
                f"{where}.address: {node.get('address')!r} is not an IPv4 address; "
                "set the node's address on the cluster network"
            )
        elif address in seen_addresses:
            problems.append(
                f"{where}.address: duplicate address {address} (also {seen_addresses[address]}); "
                "give every node its own address"
            )
        else:
            seen_addresses[address] = where
        if role in ROLES and address is not None:
            valid.append(dict(node, address=str(address)))
    return valid


def _check_counts(nodes, problems):
    control_planes = [n for n in nodes if n["role"] == "control_plane"]
    if not control_planes:
        problems.append(
            "cluster.nodes: no control_plane node; add 3 (etcd needs an odd number: 1, 3 or 5)"
        )
    elif len(control_planes) % 2 == 0:
        problems.append(
            f"cluster.nodes: {len(control_planes)} control_plane nodes; stacked etcd needs an odd "
            f"number (quorum): use {len(control_planes) - 1} or {len(control_planes) + 1}"
        )
    balancers = [n for n in nodes if n["role"] == "loadbalancer"]
    if len(balancers) < 2:
        problems.append(
            f"cluster.nodes: {len(balancers)} loadbalancer node(s); the VIP needs at least 2 to fail over: "
            "add a loadbalancer node"
        )


def _check_api(desc, nodes, problems):
    api = desc.get("api") if isinstance(desc.get("api"), dict) else {}
    if not isinstance(desc.get("api"), dict):
        problems.append("cluster.api: missing; set api.vip (the virtual IP) and api.prefix")
    vip = _ip(api.get("vip"))
    if vip is None:
        problems.append(
            f"cluster.api.vip: {api.get('vip')!r} is not an IPv4 address; "
            "set a free address in the load balancers' subnet"
        )
    if not _int_in(api.get("port"), 1, 65535):
        problems.append(f"cluster.api.port: {api.get('port')!r} is not a TCP port; use 1-65535 (6443)")
    prefix = api.get("prefix")
    if not _int_in(prefix, 8, 32):
        problems.append(f"cluster.api.prefix: {prefix!r} is not a prefix length; use the subnet's, e.g. 24")
        return
    if vip is None:
        return
    subnet = ipaddress.IPv4Network(f"{vip}/{prefix}", strict=False)
    if prefix < 31 and vip in (subnet.network_address, subnet.broadcast_address):
        problems.append(
            f"cluster.api.vip: {vip} is the network or broadcast address of {subnet}; choose a host address"
        )
    for node in nodes:
        if node["address"] == str(vip):
            problems.append(
                f"cluster.api.vip: {vip} is also the address of node {node['name']}; "
                "the VIP must be an address no node owns"
            )
    outside = [
        n for n in nodes
        if n["role"] == "loadbalancer" and ipaddress.IPv4Address(n["address"]) not in subnet
    ]
    if outside:
        names = ", ".join(f"{n['name']} ({n['address']})" for n in outside)
        problems.append(
            f"cluster.api.vip: {vip}/{prefix} is outside the subnet of loadbalancer {names}; "
            f"VRRP works inside one subnet: choose a VIP in {outside[0]['address']}/{prefix} or fix api.prefix"
        )


def _check_vrrp(desc, nodes, problems, require_secrets):
    vrrp = desc.get("vrrp") if isinstance(desc.get("vrrp"), dict) else {}
    version = vrrp.get("version")
    if version not in (2, 3):
        problems.append(f"cluster.vrrp.version: {version!r}; use 3 (default, sub-second adverts) or 2")
    if vrrp.get("mode") not in ("unicast", "multicast"):
        problems.append(
            f"cluster.vrrp.mode: {vrrp.get('mode')!r}; use unicast (works where the cloud drops multicast) "
            "or multicast"
        )
    if not _int_in(vrrp.get("virtual_router_id"), 1, 255):
        problems.append(
            f"cluster.vrrp.virtual_router_id: {vrrp.get('virtual_router_id')!r}; use 1-255, "
            "unique on the subnet"
        )
    if not isinstance(vrrp.get("interface"), str) or not vrrp.get("interface"):
        problems.append("cluster.vrrp.interface: missing; name the load balancers' network interface (eth0)")
    _check_advert(vrrp.get("advert_interval"), version, problems)
    _check_priorities(nodes, problems)
    _check_secret(vrrp, version, problems, require_secrets)


def _check_advert(advert, version, problems):
    field = "cluster.vrrp.advert_interval"
    if version == 2 and not _int_in(advert, 1, 255):
        problems.append(f"{field}: {advert!r}; VRRP version 2 takes whole seconds (1-255); use 1 or version 3")
    elif version == 3:
        ok = isinstance(advert, (int, float)) and not isinstance(advert, bool) and 0.01 <= advert <= 40.95
        if not ok or abs(round(advert * 100) - advert * 100) > 1e-6:
            problems.append(f"{field}: {advert!r}; VRRP version 3 takes 0.01-40.95 s in steps of 0.01 (0.3)")


def _check_priorities(nodes, problems):
    seen = {}
    for node in nodes:
        if node["role"] != "loadbalancer" or node.get("vrrp_priority") is None:
            continue
        priority = node["vrrp_priority"]
        where = f"cluster.nodes ({node['name']}).vrrp_priority"
        if not _int_in(priority, 1, 254):
            problems.append(f"{where}: {priority!r}; use 1-254 (255 is reserved for the address owner)")
        elif priority in seen:
            problems.append(
                f"{where}: {priority} is also the priority of {seen[priority]}; "
                "give each load balancer a different priority"
            )
        else:
            seen[priority] = node["name"]


def _check_secret(vrrp, version, problems, require_secrets):
    secret = vrrp.get("auth_pass")
    field = "cluster.vrrp.auth_pass"
    if version == 3 and secret is not None:
        problems.append(
            f"{field}: VRRP version 3 has no authentication; remove the secret "
            "(VRRP is accepted only from the peers' addresses) or set vrrp.version: 2"
        )
    if version != 2 or not require_secrets:
        return
    fix = "set a random one of at most 8 characters in pillar/secrets/loadbalancer.sls"
    if not secret:
        problems.append(f"{field}: missing; VRRP version 2 uses PASS authentication: {fix}")
    elif str(secret).lower() in KNOWN_DEFAULT_SECRETS:
        problems.append(f"{field}: a published default password is not a secret; {fix}")
    elif len(str(secret)) > PASS_AUTH_MAX_LEN:
        problems.append(
            f"{field}: {len(str(secret))} characters; keepalived uses only the first "
            f"{PASS_AUTH_MAX_LEN} of a PASS secret: {fix}"
        )


def _check_kubernetes(desc, nodes, problems):
    kube = desc.get("kubernetes") if isinstance(desc.get("kubernetes"), dict) else {}
    # Unquoted, YAML reads 1.30 as the number 1.3: only a string is accepted.
    if not isinstance(kube.get("version"), str) or not K8S_VERSION_RE.match(kube["version"]):
        problems.append(
            f"cluster.kubernetes.version: {kube.get('version')!r}; use a minor or patch version such as '1.31' "
            "(quoted, so YAML keeps it a string)"
        )
    networks = {}
    for field in ("pod_cidr", "service_cidr"):
        net = _network(kube.get(field))
        if net is None:
            problems.append(
                f"cluster.kubernetes.{field}: {kube.get(field)!r} is not a network address with prefix "
                "(e.g. 10.244.0.0/16)"
            )
            continue
        networks[field] = net
        for node in nodes:
            if ipaddress.IPv4Address(node["address"]) in net:
                problems.append(
                    f"cluster.kubernetes.{field}: {net} contains node {node['name']} ({node['address']}); "
                    "choose a range that no node address is in"
                )
                break
    if len(networks) == 2 and networks["pod_cidr"].overlaps(networks["service_cidr"]):
        problems.append(
            "cluster.kubernetes.service_cidr: overlaps pod_cidr; choose two separate ranges"
        )
    sans = kube.get("extra_sans", [])
    if not isinstance(sans, list) or not all(isinstance(s, str) and s for s in sans):
        problems.append("cluster.kubernetes.extra_sans: expected a list of DNS names or addresses")


def problems_in(desc, require_secrets=False):
    """Every problem of a cluster description, as 'field: problem; fix' strings."""
    if not isinstance(desc, dict):
        return [
            "cluster: the pillar has no cluster description; copy pillar/cluster.sls "
            "and make sure pillar/top.sls assigns it to every minion"
        ]
    problems = []
    if not isinstance(desc.get("name"), str) or not NAME_RE.match(desc.get("name", "")):
        problems.append(
            f"cluster.name: {desc.get('name')!r}; name the cluster with lower-case letters, digits and '-'"
        )
    nodes = _check_nodes(desc, problems)
    if nodes:
        _check_counts(nodes, problems)
    _check_api(desc, nodes, problems)
    _check_vrrp(desc, nodes, problems, require_secrets)
    _check_kubernetes(desc, nodes, problems)
    return problems


# --------------------------------------------------------------------------
# The view of one node
# --------------------------------------------------------------------------
def _priorities(balancers):
    """Explicit priorities as given; the others get distinct ones from 150 down, in list order."""
    taken = {n["vrrp_priority"] for n in balancers if n.get("vrrp_priority") is not None}
    out, candidate = {}, 150
    for node in balancers:
        if node.get("vrrp_priority") is not None:
            out[node["name"]] = node["vrrp_priority"]
            continue
        while candidate in taken:
            candidate -= 1
        out[node["name"]] = candidate
        taken.add(candidate)
    return out


def build_view(desc, minion_id):
    """Derived facts for ``minion_id`` from a valid description (pure function)."""
    # Templates read the VRRP secret from pillar themselves: the view (shown by
    # state.show_sls and the CLI) never carries it.
    desc = copy.deepcopy(desc)
    desc["vrrp"]["authenticated"] = desc["vrrp"].pop("auth_pass", None) is not None
    nodes = desc["nodes"]
    by_role = {role: [n for n in nodes if n["role"] == role] for role in ROLES}
    node = next((n for n in nodes if n["name"] == minion_id), None)
    view = {
        "cluster": desc,
        "node": node,
        "role": node["role"] if node else None,
        "nodes_by_role": by_role,
        "api_endpoint": f"{desc['api']['vip']}:{desc['api']['port']}",
    }
    if node and node["role"] == "loadbalancer":
        priorities = _priorities(by_role["loadbalancer"])
        preempt = bool(desc["vrrp"].get("preempt"))
        highest = max(priorities.values())
        view["vrrp"] = {
            "priority": priorities[node["name"]],
            # With nopreempt every node starts BACKUP (keepalived refuses MASTER + nopreempt):
            # a recovered LB does not take the VIP back, so a flapping node cannot cause flaps.
            "state": "MASTER" if preempt and priorities[node["name"]] == highest else "BACKUP",
            "nopreempt": not preempt,
            "peers": [n["address"] for n in by_role["loadbalancer"] if n["name"] != node["name"]],
        }
    return view


def _minion_id():
    return __opts__["id"]


def validate(require_secrets=None):
    """
    Validate the cluster description from pillar. Returns ``{'valid': bool, 'problems': [...]}``.

    ``require_secrets`` defaults to whether this minion is a load balancer (the only
    role that receives the VRRP secret).

    CLI example: ``salt-call cluster_topology.validate``
    """
    desc = description()
    if require_secrets is None:
        node = _find(desc, _minion_id())
        require_secrets = bool(node and node.get("role") == "loadbalancer")
    problems = problems_in(desc, require_secrets=require_secrets)
    return {"valid": not problems, "problems": problems}


def _find(desc, minion_id):
    if not isinstance(desc, dict) or not isinstance(desc.get("nodes"), list):
        return None
    return next(
        (n for n in desc["nodes"] if isinstance(n, dict) and n.get("name") == minion_id), None
    )


def view(minion_id=None):
    """
    The validated description plus what ``minion_id`` (default: this minion) needs:
    its node entry, role, VRRP priority, initial state and unicast peers.
    Raises a CommandExecutionError listing every problem when the description is invalid,
    so states that use it refuse to render with that message.

    CLI example: ``salt-call cluster_topology.view``
    """
    minion_id = minion_id or _minion_id()
    desc = description()
    node = _find(desc, minion_id)
    problems = problems_in(desc, require_secrets=bool(node and node.get("role") == "loadbalancer"))
    if problems:
        raise CommandExecutionError(
            "invalid cluster description (pillar 'cluster'), nothing was changed:\n  - "
            + "\n  - ".join(problems)
        )
    return build_view(desc, minion_id)


def members(role):
    """Minion ids with ``role`` in the cluster description (empty if none or invalid)."""
    desc = description()
    if not isinstance(desc, dict) or not isinstance(desc.get("nodes"), list):
        return []
    return [n["name"] for n in desc["nodes"] if isinstance(n, dict) and n.get("role") == role and n.get("name")]


def salt_master():
    """
    The IPv4 addresses and ports of this minion's salt-master(s): the firewall keeps Salt's
    own connections open (they were opened before firewalld first started, so conntrack may
    not know them). Empty when running masterless.
    """
    masters = __opts__.get("master") or []
    if __opts__.get("file_client") == "local" and masters == "salt":
        masters = []  # masterless with the default setting: no master connection to keep
    addresses = set()
    for master in [masters] if isinstance(masters, str) else masters:
        try:
            infos = socket.getaddrinfo(master.split(":")[0], None, socket.AF_INET, socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            continue
        addresses.update(info[4][0] for info in infos)
    return {
        "addresses": sorted(addresses),
        "ports": sorted({int(__opts__.get("publish_port", 4505)), int(__opts__.get("master_port", 4506))}),
    }


def config_owners(role=None):
    """
    {managed config file: the SLS that writes it} for a role (default: this node's): the
    drift beacon watches these files and the config repair (orch.heal) re-applies the owner.

    CLI example: ``salt-call cluster_topology.config_owners loadbalancer``
    """
    if role is None:
        node = _find(description(), _minion_id())
        role = node.get("role") if node else None
    s = settings()
    zone = f"{s['firewall']['zones_dir']}/{s['firewall']['zone']}.xml"
    owners = {
        "loadbalancer": {s["haproxy"]["config"]: "haproxy.config", s["keepalived"]["config"]: "keepalived.config",
                         zone: "firewall"},
        "control_plane": {s["containerd"]["config"]: "containerd", s["kubernetes"]["kubeadm_config"]: "kubernetes.config",
                          zone: "firewall"},
        "worker": {s["containerd"]["config"]: "containerd", zone: "firewall"},
    }
    return owners.get(role, {})
