"""Role targeting and secret delivery through a real master's pillar and top files."""

import json


def test_minions_answer(salt_cli):
    result = salt_cli.run("test.ping", minion_tgt="*")
    assert result.returncode == 0
    assert result.data == {"lb1": True, "cp1": True, "worker1": True}


def test_vrrp_secret_reaches_the_load_balancer_only(salt_cli, vrrp_secret):
    lb = salt_cli.run("pillar.get", "cluster:vrrp:auth_pass", "unmask=True", minion_tgt="lb1")
    cp = salt_cli.run("pillar.items", "unmask=True", minion_tgt="cp1")
    assert lb.data == vrrp_secret
    assert vrrp_secret not in json.dumps(cp.data)
    assert cp.data["cluster"]["name"] == "k8sha-lab"


def test_top_file_assigns_states_by_role(salt_cli):
    lb = salt_cli.run("state.show_top", minion_tgt="lb1")
    cp = salt_cli.run("state.show_top", minion_tgt="cp1")
    assert lb.data["base"] == ["base", "firewall", "haproxy", "keepalived", "metrics", "beacons"]
    assert cp.data["base"] == ["base", "firewall", "kubernetes.control_plane", "beacons"]


def test_description_validates_on_every_node_with_the_secret_only_required_where_delivered(salt_cli):
    lb = salt_cli.run("cluster_topology.validate", minion_tgt="lb1")
    cp = salt_cli.run("cluster_topology.validate", minion_tgt="cp1")
    assert lb.data == {"valid": True, "problems": []}
    assert cp.data == {"valid": True, "problems": []}
    # cp1 has no secret: asked to require it, it reports the field and where to set it.
    strict = salt_cli.run("cluster_topology.validate", "require_secrets=True", minion_tgt="cp1")
    assert strict.data["valid"] is False
    assert strict.data["problems"][0].startswith("cluster.vrrp.auth_pass: missing")


def test_keepalived_state_renders_on_the_master_served_tree_without_leaking_the_secret(salt_cli, vrrp_secret):
    result = salt_cli.run("state.show_sls", "keepalived", minion_tgt="lb1")
    assert result.returncode == 0, result.stdout
    assert "keepalived-config" in result.data
    assert vrrp_secret not in json.dumps(result.data)
