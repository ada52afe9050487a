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

    def flow(role, port, sources, why):
        return {"role": role, "protocol": "tcp", "ports": _range(port), "sources": sources, "why": why}

    return [
        flow("loadbalancer", api, ANYWHERE, "clients reach the API through the VIP"),
        flow("control_plane", api, ["loadbalancer", "control_plane"], "HAProxy's backends and health checks"),
        flow("control_plane", (min(etcd), max(etcd)), control_plane, "etcd clients and peers"),
        flow("control_plane", ports["kubelet"], control_plane, "kubelet API"),
        flow("control_plane", ports["controller_manager"], control_plane, "kube-controller-manager"),
        flow("control_plane", ports["scheduler"], control_plane, "kube-scheduler"),
        flow("worker", ports["kubelet"], control_plane, "kubelet API"),
        flow("worker", ports["node_ports"], ANYWHERE, "NodePort services"),
    ]


def zone_ports_of(flows_, role):
    """firewalld's `port/protocol` entries for ``role`` (pure)."""
    return [f"{f['ports'][0]}/{f['protocol']}" if f["ports"][0] == f["ports"][1]
            else f"{f['ports'][0]}-{f['ports'][1]}/{f['protocol']}" for f in flows_ if f["role"] == role]


def current():
    """The flows of the cluster description with this node's settings."""
    return flows(__salt__["cluster_topology.description"](), __salt__["cluster_topology.settings"]()["ports"])


def zone_ports(role):
    """firewalld's port entries for ``role`` (the firewall state's zone)."""
    return zone_ports_of(current(), role)
