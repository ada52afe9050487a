"""
kubeadm's documents and output, for kubeadm_member (pure functions): the issuer's and the joining
node's configuration for one join (they hold secrets: written only to 0600 files), and kubeadm's
output with every token and certificate key redacted.
"""

import re

TOKEN = re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b")
HEX_KEY = re.compile(r"\b[0-9a-f]{64}\b")


def redact(text, secrets=()):
    """Text with every token, certificate key and given secret replaced (pure function)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return HEX_KEY.sub("<redacted>", TOKEN.sub("<redacted>", text))


def issuing_configuration(managed, node, material):
    """The issuer's kubeadm documents for a join (pure): its managed ClusterConfiguration and an
    InitConfiguration with the join's bootstrap token and, for a control plane, certificate key."""
    init = dict(managed.get("InitConfiguration") or {"apiVersion": managed["ClusterConfiguration"]["apiVersion"],
                                                      "kind": "InitConfiguration"})
    init["bootstrapTokens"] = [{"token": material["token"], "ttl": material.get("ttl", "1h"),
                                "description": f"k8sha: join of {node}", "usages": ["signing", "authentication"],
                                "groups": ["system:bootstrappers:kubeadm:default-node-token"]}]
    if material.get("control_plane"):
        init["certificateKey"] = material["certificate_key"]
    return [managed["ClusterConfiguration"], init]


def api_version(kubernetes_version):
    """kubeadm's configuration API: v1beta4 from Kubernetes 1.31 on, v1beta3 before (pure)."""
    return "kubeadm.k8s.io/v1beta4" if int(str(kubernetes_version).split(".")[1]) >= 31 else "kubeadm.k8s.io/v1beta3"


def node_registration(node, kubernetes_version, kubernetes_settings):
    """The nodeRegistration of this node's init or join (pure; one source for both):
    its name, the CRI socket, the kubelet's node IP (the description's address: on a node with
    several interfaces, or none with a default route, the kubelet would guess), and the preflight
    checks to ignore, each by name (kubernetes:ignore_preflight_errors)."""
    args = {"node-ip": node["address"]}
    v1beta4 = api_version(kubernetes_version).endswith("v1beta4")
    registration = {"name": node["name"], "criSocket": kubernetes_settings["cri_socket"],
                    "kubeletExtraArgs": [{"name": k, "value": v} for k, v in sorted(args.items())] if v1beta4 else args}
    ignored = kubernetes_settings.get("ignore_preflight_errors") or []
    if ignored:
        registration["ignorePreflightErrors"] = sorted(ignored)
    return registration


def join_configuration(node, material, api, kubernetes_version, kubernetes_settings):
    """kubeadm's JoinConfiguration for ``node`` (pure function; holds secrets: written 0600)."""
    config = {
        "apiVersion": api_version(kubernetes_version),
        "kind": "JoinConfiguration",
        "discovery": {"bootstrapToken": {"apiServerEndpoint": f"{api['vip']}:{api['port']}",
                                         "token": material["token"], "caCertHashes": [material["ca_cert_hash"]]}},
        "nodeRegistration": node_registration(node, kubernetes_version, kubernetes_settings),
    }
    if material.get("control_plane"):
        config["controlPlane"] = {"localAPIEndpoint": {"advertiseAddress": node["address"], "bindPort": api["port"]},
                                  "certificateKey": material["certificate_key"]}
    return config


def pod_network_of(networks, node):
    """What kubernetes.network needs on ``node`` (pure): its pod CIDR (None before the
    controller-manager gave it one) and a route to every other node's through that node."""
    here = networks.get(node) or {}
    return {"cidr": here.get("cidr"),
            "routes": {n["cidr"]: n["address"] for name, n in sorted(networks.items())
                       if name != node and n.get("cidr") and n.get("address")}}
