"""
The cluster's Node objects, from a control plane, through the real kubectl with kubeadm's
admin.conf: which are Ready and their kubelets' versions, and, for orch.remove_node and
orch.upgrade, a node drained (cordoned, its pods evicted), uncordoned, deleted.

CLI examples::

    salt cp1 kube_nodes.ready
    salt cp1 kube_nodes.versions
    salt cp1 kube_nodes.drain worker1
    salt cp1 kube_nodes.uncordon worker1
    salt cp1 kube_nodes.delete worker1
"""

import json
import subprocess

from salt.exceptions import CommandExecutionError

__virtualname__ = "kube_nodes"


def __virtual__():
    return __virtualname__


def _settings():
    return __salt__["cluster_topology.settings"]()["kubernetes"]


def _redact(text):
    return __utils__["k8sha_kubeadm.redact"](text, ())


def _kubectl(args, timeout=30):
    """kubectl with admin.conf: (returncode, stdout, stderr)."""
    kubectl = _settings().get("kubectl", "kubectl")
    try:
        result = subprocess.run([kubectl, "--kubeconfig", f"{_settings()['config_dir']}/admin.conf", *args],
                                capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CommandExecutionError(f"kubectl {' '.join(args)}: {exc}") from None
    return result.returncode, result.stdout, _redact(result.stderr.strip())


def _nodes():
    code, out, err = _kubectl(["get", "nodes", "-o", "json"])
    if code != 0:
        raise CommandExecutionError(f"kubectl get nodes: {err}")
    return json.loads(out).get("items", [])


def _is_ready(item):
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in item.get("status", {}).get("conditions", []))


def _internal_ip(item):
    return next((a["address"] for a in item.get("status", {}).get("addresses", []) if a.get("type") == "InternalIP"),
                None)


def pod_networks():
    """{node: {cidr, address}}: the pod CIDR the controller-manager gave each node (None until
    then) and its InternalIP (kubectl with admin.conf: a control plane's view; a kubelet may read
    only its own Node)."""
    return {i["metadata"]["name"]: {"cidr": i.get("spec", {}).get("podCIDR"), "address": _internal_ip(i)}
            for i in _nodes()}


def ready():
    """{node: 'Ready'|'NotReady'} as the API server reports them (kubectl with admin.conf)."""
    return {item["metadata"]["name"]: "Ready" if _is_ready(item) else "NotReady" for item in _nodes()}


def versions():
    """{node: {ready, kubelet}}: readiness and the version its kubelet reports (status.nodeInfo)."""
    return {item["metadata"]["name"]: {"ready": _is_ready(item),
                                       "kubelet": item.get("status", {}).get("nodeInfo", {}).get("kubeletVersion")}
            for item in _nodes()}


def drain(name, setting="drain_before_removal"):
    """From a control plane: ``kubectl drain`` (cordon, then evict the pods, respecting
    PodDisruptionBudgets) before the node leaves or is upgraded; skipped where the setting
    (kubernetes:drain_before_removal, kubernetes:drain_before_upgrade) is false.

    CLI example: ``salt cp1 kube_nodes.drain worker1``"""
    settings = _settings()
    if not settings.get(setting, True):
        return {"drained": False, "comment": f"kubernetes:{setting} is false: pods are not evicted"}
    timeout = int(settings.get("drain_timeout", 300))
    code, _, err = _kubectl(["drain", name, "--ignore-daemonsets", "--delete-emptydir-data", f"--timeout={timeout}s"],
                            timeout=timeout + 30)
    if code != 0:
        raise CommandExecutionError(f"kubectl drain {name}: {err}")
    return {"drained": True, "comment": f"{name} cordoned and its pods evicted"}


def uncordon(name, setting="drain_before_upgrade"):
    """From a control plane: ``kubectl uncordon`` after an upgrade's drain (skipped with the drain).

    CLI example: ``salt cp1 kube_nodes.uncordon worker1``"""
    if not _settings().get(setting, True):
        return {"uncordoned": False, "comment": f"kubernetes:{setting} is false: the node was not cordoned"}
    code, _, err = _kubectl(["uncordon", name])
    if code != 0:
        raise CommandExecutionError(f"kubectl uncordon {name}: {err}")
    return {"uncordoned": True, "comment": f"{name} schedulable again"}


def delete(name):
    """From a control plane: the Node object ``name`` deleted from the API (absent is no error).

    CLI example: ``salt cp1 kube_nodes.delete worker1``"""
    code, _, err = _kubectl(["delete", "node", name, "--ignore-not-found", "--wait=false"])
    if code != 0:
        raise CommandExecutionError(f"kubectl delete node {name}: {err}")
    return {"deleted": name}
