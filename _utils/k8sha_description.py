"""
The cluster description: its one reader and its validation (pure functions).

``read`` merges a description with the defaults (salt/k8sha/defaults.yaml ``cluster:``) and
validates it. Every consumer goes through it: on a node, ``cluster_topology.description``
(pillar ``cluster``); on the master, ``served`` (the file pillar_roots serve), which the pillar
top, the runners and the cloud drivers use. A broken description never raises here: it comes
back with its problems, each "field: problem; fix", and with the members that are well formed
enough to be targeted.

Values land in keepalived, HAProxy, firewalld XML and kubeadm YAML unquoted, so every value
is checked against a pattern no configuration syntax can be broken out of.
"""

import copy
import difflib
import ipaddress
import pathlib
import re

import salt.utils.dictupdate
import salt.utils.yaml

ROLES = ("loadbalancer", "control_plane", "worker")
# Secrets that ship in examples or in the seed blog post: never accepted.
KNOWN_DEFAULT_SECRETS = {"p@ssw0rd", "change-me", "changeme", "password", "secret", "1111"}
PASS_AUTH_MAX_LEN = 8  # keepalived truncates PASS authentication to 8 characters
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
K8S_VERSION_RE = re.compile(r"^1\.\d{1,2}(\.\d{1,3})?$")
# Linux interface names: at most 15 characters; no blank, quote, '/' or markup.
INTERFACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
# keepalived reads '!' and '#' as comments and splits on blanks: none of them in a secret.
SECRET_RE = re.compile(r"^[A-Za-z0-9._~+=@%:,/-]+$")
DNS_NAME_RE = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")

# Every key the description may have.
SECTIONS = {
    "api": ("vip", "prefix", "port"),
    "vrrp": ("version", "mode", "virtual_router_id", "advert_interval", "interface", "preempt", "auth_pass"),
    "kubernetes": ("version", "pod_cidr", "service_cidr", "extra_sans"),
}
TOP_KEYS = ("name", "api", "vrrp", "kubernetes", "nodes")
NODE_KEYS = ("name", "role", "address", "vrrp_priority")
BOOLEANS = {("vrrp", "preempt")}


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------
def merge(defaults, raw):
    """``raw`` over ``defaults`` (Salt's own recursive merge; lists replace). A ``raw`` that is not
    a mapping is returned as it is, for the validation to name."""
    if not isinstance(raw, dict):
        return copy.deepcopy(raw)
    return salt.utils.dictupdate.merge(copy.deepcopy(defaults or {}), copy.deepcopy(raw), strategy="recurse")


def members(desc):
    """{role: [names]} of the nodes well formed enough to target (a valid name and role), never
    raising: the pillar top targets secrets with it even when the description is broken."""
    out = {role: [] for role in ROLES}
    nodes = desc.get("nodes") if isinstance(desc, dict) else None
    for node in nodes if isinstance(nodes, list) else []:
        if not isinstance(node, dict) or node.get("role") not in ROLES:
            continue
        name = node.get("name")
        if isinstance(name, str) and NAME_RE.match(name) and name not in out[node["role"]]:
            out[node["role"]].append(name)
    return out


def read(raw, defaults, require_secrets=False):
    """The one reader: ``{'cluster': merged description, 'problems': [...], 'members': {...}}``."""
    desc = merge(defaults, raw)
    return {"cluster": desc, "problems": problems_in(desc, require_secrets), "members": members(desc)}


def _yaml_in(roots, relative):
    for root in roots:
        path = pathlib.Path(root) / relative
        if path.is_file():
            return path, salt.utils.yaml.safe_load(path.read_text()) or {}
    return None, None


def defaults(opts):
    """salt/k8sha/defaults.yaml as the master's file server has it (file_roots)."""
    return _yaml_in(opts.get("file_roots", {}).get("base", []), "k8sha/defaults.yaml")[1] or {}


def served(opts):
    """``read`` of the description the master serves: pillar_roots' cluster.sls (plain YAML)
    over the file server's k8sha/defaults.yaml. For the master's own code (pillar top, runners,
    cloud drivers): the nodes get the same file as pillar ``cluster``."""
    try:
        path, raw = _yaml_in(opts.get("pillar_roots", {}).get("base", []), "cluster.sls")
    except salt.utils.yaml.YAMLError as exc:
        problem = f"pillar/cluster.sls: not YAML ({' '.join(str(exc).split())}); fix its syntax"
        return {"cluster": None, "problems": [problem], "members": members(None)}
    if path is None:
        return read(None, None)
    cluster = raw.get("cluster") if isinstance(raw, dict) else None
    return read(cluster, defaults(opts).get("cluster", {}))


# --------------------------------------------------------------------------
# Shape: sections, unknown keys, types
# --------------------------------------------------------------------------
def _unknown(where, key, allowed):
    close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else f"the keys here are {', '.join(allowed)}"
    return f"{where}.{key}: unknown key; {hint} (pillar/cluster.sls)"


def _check_shape(desc, problems):
    for key in desc:
        if key not in TOP_KEYS:
            problems.append(_unknown("cluster", key, list(TOP_KEYS)))
    for section, keys in SECTIONS.items():
        if section not in desc:
            continue
        value = desc[section]
        if not isinstance(value, dict):
            problems.append(f"cluster.{section}: {_kind(value)} ({_plain(value)!r}); expected a mapping of "
                            f"{', '.join(keys)}")
            continue
        for key in value:
            if key not in keys:
                problems.append(_unknown(f"cluster.{section}", key, list(keys)))
            elif (section, key) in BOOLEANS and not isinstance(value[key], bool):
                problems.append(f"cluster.{section}.{key}: {value[key]!r} is not a boolean; write true or false "
                                "without quotes")


def _kind(value):
    """What a YAML value is, in the words of the file (pillar data may arrive as OrderedDict)."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return {str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _plain(value):
    """``value`` with its mappings as plain dicts, for a message."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _int_in(value, low, high):
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _ip(value):
    try:
        return ipaddress.IPv4Address(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _network(value):
    try:
        return ipaddress.IPv4Network(value, strict=True) if isinstance(value, str) else None
    except ValueError:
        return None


# --------------------------------------------------------------------------
# Nodes
# --------------------------------------------------------------------------
def _check_node_keys(node, where, problems):
    for key in node:
        if key not in NODE_KEYS:
            problems.append(_unknown(where, key, list(NODE_KEYS)))
    if node.get("vrrp_priority") is not None and node.get("role") != "loadbalancer":
        problems.append(f"{where}.vrrp_priority: only load balancers take part in VRRP; remove it from this "
                        f"{node.get('role')} node")


def _check_node(node, where, seen, problems):
    """Problems of one node; its checked copy, or None."""
    name, role, address = node.get("name"), node.get("role"), _ip(node.get("address"))
    if not isinstance(name, str) or not NAME_RE.match(name):
        problems.append(f"{where}.name: {name!r} is not a valid node name; use the minion id, lower-case letters, "
                        "digits and '-' (at most 63 characters)")
    elif name in seen["names"]:
        problems.append(f"{where}.name: duplicate name {name!r} (also cluster.nodes[{seen['names'][name]}]); "
                        "every node needs its own minion id")
    else:
        seen["names"][name] = seen["index"]
    if role not in ROLES:
        problems.append(f"{where}.role: unknown role {role!r}; use one of {', '.join(ROLES)}")
    if address is None:
        problems.append(f"{where}.address: {node.get('address')!r} is not an IPv4 address; "
                        "set the node's address on the cluster network (quoted or not)")
    elif address in seen["addresses"]:
        problems.append(f"{where}.address: duplicate address {address} (also {seen['addresses'][address]}); "
                        "give every node its own address")
    else:
        seen["addresses"][address] = where
    _check_node_keys(node, where, problems)
    return dict(node, address=str(address)) if role in ROLES and address is not None else None


def _check_nodes(desc, problems):
    nodes = desc.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        got = "" if nodes in (None, []) else f" (got {_kind(nodes)}: {_plain(nodes)!r})"
        problems.append(f"cluster.nodes: missing, empty or not a list{got}; list every node as "
                        "{name, role, address} (see pillar/cluster.sls)")
        return []
    seen, valid = {"names": {}, "addresses": {}}, []
    for index, node in enumerate(nodes):
        where = f"cluster.nodes[{index}]"
        if not isinstance(node, dict):
            problems.append(f"{where}: {_plain(node)!r} is {_kind(node)}; expected a mapping "
                            "{name, role, address}")
            continue
        if isinstance(node.get("name"), str) and node["name"]:
            where = f"{where} ({node['name']})"
        seen["index"] = index
        checked = _check_node(node, where, seen, problems)
        if checked:
            valid.append(checked)
    return valid


def _check_counts(nodes, problems):
    control_planes = sum(1 for n in nodes if n["role"] == "control_plane")
    if not control_planes:
        problems.append("cluster.nodes: no control_plane node; add 3 (etcd needs an odd number: 1, 3 or 5)")
    elif control_planes % 2 == 0:
        problems.append(f"cluster.nodes: {control_planes} control_plane nodes; stacked etcd needs an odd number "
                        f"(quorum): use {control_planes - 1} or {control_planes + 1}")
    balancers = sum(1 for n in nodes if n["role"] == "loadbalancer")
    if balancers < 2:
        problems.append(f"cluster.nodes: {balancers} loadbalancer node(s); the VIP needs at least 2 to fail over: "
                        "add a loadbalancer node")


# --------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------
def _section(desc, name):
    return desc.get(name) if isinstance(desc.get(name), dict) else {}


def _check_api(desc, nodes, problems):
    api = _section(desc, "api")
    vip = _ip(api.get("vip"))
    if vip is None:
        problems.append(f"cluster.api.vip: {api.get('vip')!r} is not an IPv4 address; "
                        "set a free address in the load balancers' subnet")
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
        problems.append(f"cluster.api.vip: {vip} is the network or broadcast address of {subnet}; "
                        "choose a host address")
    for node in nodes:
        if node["address"] == str(vip):
            problems.append(f"cluster.api.vip: {vip} is also the address of node {node['name']}; "
                            "the VIP must be an address no node owns")
    outside = [n for n in nodes if n["role"] == "loadbalancer" and ipaddress.IPv4Address(n["address"]) not in subnet]
    if outside:
        names = ", ".join(f"{n['name']} ({n['address']})" for n in outside)
        problems.append(f"cluster.api.vip: {vip}/{prefix} is outside the subnet of loadbalancer {names}; "
                        f"VRRP works inside one subnet: choose a VIP in {outside[0]['address']}/{prefix} "
                        "or fix api.prefix")


def _check_vrrp(desc, nodes, problems, require_secrets):
    vrrp = _section(desc, "vrrp")
    version = vrrp.get("version")
    if version not in (2, 3) or isinstance(version, bool):
        problems.append(f"cluster.vrrp.version: {version!r}; use 3 (default, sub-second adverts) or 2")
    if vrrp.get("mode") not in ("unicast", "multicast"):
        problems.append(f"cluster.vrrp.mode: {vrrp.get('mode')!r}; use unicast (works where the cloud drops "
                        "multicast) or multicast")
    if not _int_in(vrrp.get("virtual_router_id"), 1, 255):
        problems.append(f"cluster.vrrp.virtual_router_id: {vrrp.get('virtual_router_id')!r}; use 1-255, "
                        "unique on the subnet")
    interface = vrrp.get("interface")
    if not isinstance(interface, str) or not INTERFACE_RE.match(interface):
        problems.append(f"cluster.vrrp.interface: {interface!r} is not an interface name; name the load "
                        "balancers' network interface (letters, digits, '_', '.', '-'; at most 15), e.g. eth0")
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
            problems.append(f"{where}: {priority} is also the priority of {seen[priority]}; "
                            "give each load balancer a different priority")
        else:
            seen[priority] = node["name"]


def _check_secret(vrrp, version, problems, require_secrets):
    secret, field = vrrp.get("auth_pass"), "cluster.vrrp.auth_pass"
    if version == 3 and secret is not None:
        problems.append(f"{field}: VRRP version 3 has no authentication; remove the secret (VRRP is accepted "
                        "only from the peers' addresses) or set vrrp.version: 2")
    if version != 2 or not require_secrets:
        return
    fix = "set a random one of at most 8 characters in pillar/secrets/loadbalancer.sls"
    if not secret:
        problems.append(f"{field}: missing; VRRP version 2 uses PASS authentication: {fix}")
    elif not isinstance(secret, str) or not SECRET_RE.match(secret):
        # The value is never repeated: it is a secret.
        problems.append(f"{field}: not a quoted string of letters, digits and . _ ~ + = @ % : , / - "
                        f"(keepalived reads blanks, '!' and '#' as syntax); {fix}")
    elif secret.lower() in KNOWN_DEFAULT_SECRETS:
        problems.append(f"{field}: a published default password is not a secret; {fix}")
    elif len(secret) > PASS_AUTH_MAX_LEN:
        problems.append(f"{field}: {len(secret)} characters; keepalived uses only the first "
                        f"{PASS_AUTH_MAX_LEN} of a PASS secret: {fix}")


def _check_kubernetes(desc, nodes, problems):
    kube = _section(desc, "kubernetes")
    # Unquoted, YAML reads 1.30 as the number 1.3: only a string is accepted.
    if not isinstance(kube.get("version"), str) or not K8S_VERSION_RE.match(kube["version"]):
        problems.append(f"cluster.kubernetes.version: {kube.get('version')!r}; use a minor or patch version such "
                        "as '1.31' (quoted, so YAML keeps it a string)")
    networks = {}
    for field in ("pod_cidr", "service_cidr"):
        net = _network(kube.get(field))
        if net is None:
            problems.append(f"cluster.kubernetes.{field}: {kube.get(field)!r} is not a network address with "
                            "prefix (e.g. 10.244.0.0/16)")
            continue
        networks[field] = net
        inside = next((n for n in nodes if ipaddress.IPv4Address(n["address"]) in net), None)
        if inside:
            problems.append(f"cluster.kubernetes.{field}: {net} contains node {inside['name']} "
                            f"({inside['address']}); choose a range that no node address is in")
    if len(networks) == 2 and networks["pod_cidr"].overlaps(networks["service_cidr"]):
        problems.append("cluster.kubernetes.service_cidr: overlaps pod_cidr; choose two separate ranges")
    _check_sans(kube.get("extra_sans", []), problems)


def _check_sans(sans, problems):
    if not isinstance(sans, list):
        problems.append(f"cluster.kubernetes.extra_sans: {sans!r}; expected a list of DNS names or addresses")
        return
    for index, san in enumerate(sans):
        is_address = isinstance(san, str) and _is_address(san)
        if not is_address and not (isinstance(san, str) and len(san) <= 253 and DNS_NAME_RE.match(san)):
            problems.append(f"cluster.kubernetes.extra_sans[{index}]: {san!r} is neither a DNS name (lower-case "
                            "letters, digits, '-', '.') nor an IP address; fix or remove it")


def _is_address(value):
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def problems_in(desc, require_secrets=False):
    """Every problem of a (merged) cluster description, as 'field: problem; fix' strings."""
    if desc is None:
        return ["cluster: the pillar has no cluster description; copy pillar/cluster.sls and make sure "
                "pillar/top.sls assigns it to every minion"]
    if not isinstance(desc, dict):
        return [f"cluster: {_kind(desc)}; expected a mapping of {', '.join(TOP_KEYS)} "
                "(see pillar/cluster.sls)"]
    problems = []
    _check_shape(desc, problems)
    if not isinstance(desc.get("name"), str) or not NAME_RE.match(desc["name"]):
        problems.append(f"cluster.name: {desc.get('name')!r}; name the cluster with lower-case letters, digits "
                        "and '-'")
    nodes = _check_nodes(desc, problems)
    if nodes:
        _check_counts(nodes, problems)
    _check_api(desc, nodes, problems)
    _check_vrrp(desc, nodes, problems, require_secrets)
    _check_kubernetes(desc, nodes, problems)
    return problems
