"""
The cluster description as a node sees it (pillar ``cluster`` over defaults.yaml, read and
validated by _utils/k8sha_description.py), the settings (``k8sha``), and the view one node
needs to configure its role.

Every problem is reported at once, each naming the field and the fix, so an
operator can correct the pillar in one pass. Nothing here changes the system.

CLI examples::

    salt-call cluster_topology.validate
    salt-call cluster_topology.view
    salt-call cluster_topology.members loadbalancer
"""

import copy
import os
import socket
import time

import salt.config
import salt.utils.yaml
from salt.exceptions import CommandExecutionError

__virtualname__ = "cluster_topology"

ROLES = ("loadbalancer", "control_plane", "worker")
DEFAULTS_URL = "salt://k8sha/defaults.yaml"


def __virtual__():
    return __virtualname__


# --------------------------------------------------------------------------
# Reading: defaults.yaml (one place) under pillar, through the one reader
# --------------------------------------------------------------------------
DEFAULTS_CACHE_SECONDS = 10     # in this process: one render or one check reads it many times
DEFAULTS_REFRESH_SECONDS = 300  # the minion's cached copy, before the master is asked again


def _defaults():
    """defaults.yaml from the file server, through the minion's file cache. Beacons read it every
    few seconds in the minion's main process: asking the master each time made every minion wait
    for a busy master's file server (up to its 180 s timeout, deaf to jobs meanwhile). The
    project's defaults change only with the project; settings come from pillar."""
    cached = __context__.get("k8sha_defaults")
    if cached and time.monotonic() - cached[0] < DEFAULTS_CACHE_SECONDS:
        return copy.deepcopy(cached[1])
    local = __salt__["cp.is_cached"](DEFAULTS_URL)
    if local and time.time() - os.path.getmtime(local) < DEFAULTS_REFRESH_SECONDS:
        with open(local, encoding="utf-8") as handle:
            defaults = salt.utils.yaml.safe_load(handle) or {}
    else:
        defaults = __salt__["slsutil.renderer"](DEFAULTS_URL, default_renderer="yaml") or {}
        local = __salt__["cp.is_cached"](DEFAULTS_URL)
        if local:
            os.utime(local)  # checked against the master now
    __context__["k8sha_defaults"] = (time.monotonic(), defaults)
    return copy.deepcopy(defaults)


def settings():
    """
    How the roles are installed (packages, paths, check timings): ``k8sha`` in
    defaults.yaml merged with pillar ``k8sha:lookup``.

    CLI example: ``salt-call cluster_topology.settings``
    """
    return __utils__["k8sha_description.merge"](_defaults().get("k8sha", {}), __pillar__.get("k8sha", {}).get("lookup", {}))


def _read(require_secrets=None):
    """The one reader over this minion's pillar; by default the VRRP secret is required where
    it is delivered (the load balancers)."""
    raw = __pillar__.get("cluster")
    if require_secrets is None:
        node = next((n for n in raw.get("nodes", []) if isinstance(n, dict) and n.get("name") == _minion_id()), None) \
            if isinstance(raw, dict) and isinstance(raw.get("nodes"), list) else None
        require_secrets = bool(node and node.get("role") == "loadbalancer")
    return __utils__["k8sha_description.read"](raw, _defaults().get("cluster", {}), require_secrets)


def _refuse(problems):
    raise CommandExecutionError(
        "invalid cluster description (pillar 'cluster'), nothing was changed:\n  - " + "\n  - ".join(problems))


def description(strict=True):
    """
    The cluster description: ``cluster`` in defaults.yaml merged with pillar ``cluster``, validated.
    Raises a CommandExecutionError listing every problem when it is invalid; with ``strict=False``
    it is returned as it is (``{}`` if it is no mapping), for labels only: the orchestrations name
    their steps with it and their first step refuses an invalid description.

    CLI example: ``salt-call cluster_topology.description``
    """
    read = _read()
    if not strict:
        return read["cluster"] if isinstance(read["cluster"], dict) else {}
    if read["problems"]:
        _refuse(read["problems"])
    return read["cluster"]


def validate(require_secrets=None):
    """
    Validate the cluster description from pillar. Returns ``{'valid': bool, 'problems': [...]}``.
    ``require_secrets`` defaults to whether this minion is a load balancer (the only role that
    receives the VRRP secret).

    CLI example: ``salt-call cluster_topology.validate``
    """
    problems = _read(require_secrets)["problems"]
    return {"valid": not problems, "problems": problems}


def members(role):
    """Minion ids with ``role`` in the cluster description (well-formed nodes only; never raises)."""
    return _read()["members"].get(role, [])


def served():
    """
    The description the master serves (its pillar_roots' cluster.sls over defaults.yaml), read and
    validated: ``{cluster, problems, members}``. Never raises: the pillar top targets with it.

    CLI example: ``salt-run salt.cmd cluster_topology.served``
    """
    return __utils__["k8sha_description.served"](__opts__)


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


def node_registration(minion_id=None):
    """kubeadm's nodeRegistration for this node's init or join (_utils/k8sha_kubeadm.py)."""
    here = view(minion_id)
    return __utils__["k8sha_kubeadm.node_registration"](here["node"], here["cluster"]["kubernetes"]["version"],
                                                         settings()["kubernetes"])


def kubeadm_api_version(minion_id=None):
    """kubeadm's configuration API for the description's Kubernetes version."""
    return __utils__["k8sha_kubeadm.api_version"](view(minion_id)["cluster"]["kubernetes"]["version"])


def _minion_id():
    return __opts__["id"]


def view(minion_id=None):
    """
    The validated description plus what ``minion_id`` (default: this minion) needs:
    its node entry, role, VRRP priority, initial state and unicast peers.
    Raises a CommandExecutionError listing every problem when the description is invalid,
    so states that use it refuse to render with that message.

    CLI example: ``salt-call cluster_topology.view``
    """
    return build_view(description(), minion_id or _minion_id())


def salt_master():
    """
    The IPv4 addresses and ports of this minion's salt-master(s): the firewall keeps Salt's
    own connections open (they were opened before firewalld first started, so conntrack may
    not know them). Empty when running masterless.
    """
    masters = _configured_masters()
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


def _configured_masters():
    """Every master this minion connects to. With several (hot multi-master), each connection's
    opts name only its own master: a state rendered for one job would otherwise open the firewall
    to the master that sent it and close it to the other."""
    masters = __opts__.get("master") or []
    if __opts__.get("multimaster") and __opts__.get("conf_file"):
        masters = salt.config.minion_config(__opts__["conf_file"]).get("master") or masters
    return masters


def config_owners(role=None):
    """
    {managed config file: the SLS that writes it} for a role (default: this node's): the
    drift beacon watches these files and the config repair (orch.heal) re-applies the owner.

    CLI example: ``salt-call cluster_topology.config_owners loadbalancer``
    """
    if role is None:
        role = next((r for r, names in _read()["members"].items() if _minion_id() in names), None)
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
