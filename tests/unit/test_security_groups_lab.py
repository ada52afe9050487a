"""
The lab switch enforces the same security groups as Neutron: the rules come from
openstack_net.cluster_rules (one function) and become nftables rules per port. The script is
checked by nft itself (`nft --check`, no change to any ruleset).
"""

import shutil
import subprocess

import pytest
from helpers import salt_render

from lablib import secgroups

net = salt_render.load_module("openstack_net")
GROUPS = net.cluster_rules(salt_render.description(), ["198.51.100.5/32"], salt_render.flows(salt_render.description()))
PORTS = {"lb1": ["k8sha-loadbalancer"], "cp1": ["k8sha-control-plane"], "worker1": ["k8sha-worker"],
         "master": ["k8sha-salt-master"]}


def script():
    return secgroups.ruleset({"groups": GROUPS, "ports": PORTS}, lambda name: f"v-{name}")


def chain(text, name):
    return text.split(f"chain to_{name} {{", 1)[1].split("}\n", 1)[0]


def test_each_port_gets_its_groups_rules_and_drops_the_rest():
    text = script()
    assert '"v-lb1" : jump to_lb1' in text and '"v-cp1" : jump to_cp1' in text
    lb1 = chain(text, "lb1")
    assert "ip saddr 198.51.100.5/32 tcp dport 22 accept" in lb1
    assert "tcp dport 6443 accept" in lb1 and "ip saddr 198.51.100.12/32 ip protocol 112 accept" in lb1
    assert lb1.strip().endswith("counter drop")
    cp1 = chain(text, "cp1")
    assert "ip saddr 198.51.100.11/32 tcp dport 6443 accept" in cp1
    assert "tcp dport 6443 accept" not in [line.strip() for line in cp1.splitlines()]  # never from anywhere
    assert "ip saddr 198.51.100.21/32 tcp dport 2379-2380 accept" in cp1
    assert "ip saddr 198.51.100.31/32 tcp dport 4505-4506 accept" in chain(text, "master")


def test_a_port_whose_group_does_not_exist_yet_is_left_out_and_an_unknown_rule_kind_is_skipped():
    text = secgroups.ruleset({"groups": {}, "ports": {"master": ["k8sha-salt-master"]}}, lambda n: f"v-{n}")
    assert "jump" not in text
    assert secgroups.nft_rule({"direction": "egress", "ethertype": "IPv4"}) is None
    assert secgroups.nft_rule({"direction": "ingress", "ethertype": "IPv6", "protocol": "tcp"}) is None


def test_nft_accepts_the_script(needs_root):
    if not shutil.which("nft"):
        pytest.skip("nft is not installed (make setup)")
    checked = subprocess.run(["nft", "--check", "-f", "-"], input=script(), capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
