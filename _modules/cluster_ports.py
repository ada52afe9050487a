"""
Which ports each role opens, to whom: the one source that the firewalld zones
(salt/firewall), the security groups (openstack_net.cluster_rules, enforced in Neutron and on
the lab's switch) and the checks read. The numbers themselves are settings
(`k8sha:ports`, salt/k8sha/defaults.yaml); the API port is the description's
`cluster:api:port`.

CLI example: ``salt-call cluster_ports.zone_ports control_plane``
"""

__virtualname__ = "cluster_ports"
ANYWHERE = "anywhere"
# Sources of the metrics flows: the addresses k8sha:lookup:metrics:sources names (not roles).
METRICS_SOURCES = "metrics sources"
# Source of the salt-masters' flows: the masters' addresses (their repair locks live in etcd).
# The zone opens etcd's ports already (to the control planes, as the security groups allow):
# this flow only adds the masters to the security groups.
SALT_MASTERS = "salt-masters"
# Source of the pod network's flows: the description's kubernetes:pod_cidr (pods' own addresses).
POD_NETWORK = "pod network"
RESTRICTED = (METRICS_SOURCES, SALT_MASTERS)
KUBERNETES_ROLES = ("control_plane", "worker")


def __virtual__():
    return __virtualname__


def _range(value):
    low, high = (value if isinstance(value, (list, tuple)) else (value, value))
    return int(low), int(high)


def flows(description, ports):
    """[{role, protocol, ports: (low, high), sources: [roles] or 'anywhere', why}] (pure):
    what reaches each role, as kubeadm documents its ports."""
    api = int(description["api"]["port"])
    etcd = (int(ports["etcd_client"]), int(ports["etcd_peer"]))
    control_plane = ["control_plane"]

    def flow(role, port, sources, why, protocol="tcp"):
        return {"role": role, "protocol": protocol, "ports": None if port is None else _range(port),
                "sources": sources, "why": why}

    # The routed pod network (salt/kubernetes/network.sls): pods reach pods on every node, every
    # protocol, from the pods' own addresses (the bridge does not masquerade them). Never from the
    # nodes' addresses: that would open etcd and the kubelet to every node (a security group matches
    # sources only).
    pods = [flow(role, None, POD_NETWORK, "the pod network: pods' own addresses", protocol=None)
            for role in KUBERNETES_ROLES]
    return pods + [
        flow("loadbalancer", api, ANYWHERE, "clients reach the API through the VIP"),
        flow("control_plane", api, ["loadbalancer", "control_plane"], "HAProxy's backends and health checks"),
        flow("control_plane", (min(etcd), max(etcd)), control_plane, "etcd clients and peers"),
        flow("control_plane", ports["etcd_client"], SALT_MASTERS, "the salt-masters' repair locks in etcd"),
        flow("control_plane", ports["kubelet"], control_plane, "kubelet API"),
        flow("control_plane", ports["controller_manager"], control_plane, "kube-controller-manager"),
        flow("control_plane", ports["scheduler"], control_plane, "kube-scheduler"),
        flow("worker", ports["kubelet"], control_plane, "kubelet API"),
        flow("worker", ports["node_ports"], ANYWHERE, "NodePort services"),
        flow("loadbalancer", ports["haproxy_metrics"], METRICS_SOURCES, "HAProxy's Prometheus exporter"),
        flow("loadbalancer", ports["node_exporter"], METRICS_SOURCES, "node-exporter (VRRP state)"),
    ]


def _entry(flow):
    low, high = flow["ports"]
    return f"{low}/{flow['protocol']}" if low == high else f"{low}-{high}/{flow['protocol']}"


def zone_ports_of(flows_, role):
    """firewalld's `port/protocol` entries for ``role``: the ports open to every address the
    security groups let through (pure). The pod network's flows are the zone's trusted sources."""
    return [_entry(f) for f in flows_ if f["role"] == role and f["sources"] not in RESTRICTED and f["ports"]]


def metrics_ports_of(flows_, role):
    """`port/protocol` of ``role`` open only to the metrics sources (rich rules in the zone; pure)."""
    return [_entry(f) for f in flows_ if f["role"] == role and f["sources"] == METRICS_SOURCES]


def pod_network_sources_of(flows_, role, description):
    """The sources the pod network's flows let reach ``role`` on every port (pure): the pod
    CIDR where ``role`` has such a flow (the firewall zone accepts it)."""
    has_pods = any(f["role"] == role and f["sources"] == POD_NETWORK for f in flows_)
    return [description["kubernetes"]["pod_cidr"]] if has_pods else []


def pod_network_sources(role):
    """The sources the firewall zone of ``role`` accepts on every port (the pod network)."""
    return pod_network_sources_of(current(), role, __salt__["cluster_topology.description"]())


def current():
    """The flows of the cluster description with this node's settings."""
    return flows(__salt__["cluster_topology.description"](), __salt__["cluster_topology.settings"]()["ports"])


def zone_ports(role):
    """firewalld's port entries for ``role`` (the firewall state's zone)."""
    return zone_ports_of(current(), role)


def metrics_ports(role):
    """The ports of ``role`` that only the metrics sources reach (the firewall state's rich rules)."""
    return metrics_ports_of(current(), role)


def metrics_sources():
    """Who may scrape the metrics ports, as this node sees it: ``k8sha:lookup:metrics:sources``,
    else its salt-master's addresses; each as a CIDR."""
    sources = __salt__["cluster_topology.settings"]()["metrics"]["sources"] or \
        __salt__["cluster_topology.salt_master"]()["addresses"]
    return [s if "/" in str(s) else f"{s}/32" for s in sources]
