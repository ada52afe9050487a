"""kube_nodes: the kubectl command lines orch.remove_node relies on (drain before the node
leaves, delete after), run against a recording kubectl; readiness read from kubectl's JSON."""

import json
import stat

import pytest
from helpers import salt_render


@pytest.fixture
def nodes(tmp_path):
    calls = tmp_path / "calls"
    kubectl = tmp_path / "kubectl"
    listing = {"items": [{"metadata": {"name": "cp1"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
                         {"metadata": {"name": "worker1"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}]}
    kubectl.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n"
                       f"case \"$*\" in *'get nodes'*) echo '{json.dumps(listing)}';; esac\n")
    kubectl.chmod(kubectl.stat().st_mode | stat.S_IEXEC)

    def make(drain=True):
        module = salt_render.load("_modules", "kube_nodes")
        module.__salt__ = {"cluster_topology.settings": lambda: {"kubernetes": {
            "kubectl": str(kubectl), "config_dir": "/etc/kubernetes", "drain_before_removal": drain, "drain_timeout": 120}}}
        module.__utils__ = salt_render.as_utils("k8sha_kubeadm")
        return module
    make.calls = calls
    return make


def test_a_node_is_drained_with_kubectls_eviction_flags_and_a_bounded_timeout(nodes):
    assert nodes().drain("worker1")["drained"] is True
    assert nodes.calls.read_text().split("\n")[0] == (
        "--kubeconfig /etc/kubernetes/admin.conf drain worker1 --ignore-daemonsets --delete-emptydir-data --timeout=120s")


def test_no_drain_where_the_setting_says_so(nodes):
    assert nodes(drain=False).drain("worker1")["drained"] is False
    assert not nodes.calls.exists()


def test_delete_ignores_a_node_already_gone_and_readiness_comes_from_the_conditions(nodes):
    module = nodes()
    module.delete("cp3")
    assert "delete node cp3 --ignore-not-found --wait=false" in nodes.calls.read_text()
    assert module.ready() == {"cp1": "Ready", "worker1": "NotReady"}
