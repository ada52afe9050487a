"""
openstack_net against OpenStack's HTTP APIs (requests-mock with a small stateful Keystone,
Nova and Neutron): the exact bodies of the writes (security rules, the VIP port, the VIP /32 merged into
the load balancers' allowed address pairs, the floating IP), a second run without a single
write, and the errors operators meet (port security disabled, missing network, VIP taken).
(tests/helpers/fake_openstack.py is the fake cloud.)
"""

import json
import urllib.parse

import openstack
import pytest
import requests_mock as rm
from helpers import salt_render
from helpers.fake_openstack import MOCK_BASE, FakeOpenStack
from salt.exceptions import CommandExecutionError

net = salt_render.load_module("openstack_net")
SETTINGS = {"network": "k8s-net", "subnet": "k8s-subnet", "external_network": "public"}


@pytest.fixture
def cloud():
    with rm.Mocker() as mocker:
        fake = FakeOpenStack().mock(mocker)
        fake.add_server_with_port("lb1", "198.51.100.11")
        fake.add_server_with_port("lb2", "198.51.100.12")
        conn = openstack.connect(auth_url=fake.auth_url, username="admin", password="x", project_name="k8sha",
                                 user_domain_name="Default", project_domain_name="Default", region_name="RegionOne")
        yield fake, conn, mocker


def writes(mocker):
    return [(r.method, urllib.parse.urlparse(r.url).path.removeprefix("/network"), r.json() if r.body else None)
            for r in mocker.request_history if r.method in ("POST", "PUT", "DELETE") and "auth/tokens" not in r.url]


def test_the_vip_is_merged_into_both_load_balancers_pairs_and_a_second_run_writes_nothing(cloud):
    fake, conn, mocker = cloud
    description = salt_render.description()
    changes = net.vip_networking_with(conn, description, SETTINGS)
    sent = writes(mocker)
    pairs = [w for w in sent if w[0] == "PUT"]
    assert pairs == [
        ("PUT", f"/v2.0/ports/port-{n}", {"port": {"allowed_address_pairs": [
            {"ip_address": "10.9.9.9", "mac_address": "fa:16:3e:00:00:01"}, {"ip_address": "198.51.100.100/32"}]}})
        for n in ("lb1", "lb2")]
    vip_port = [w for w in sent if w[0] == "POST" and w[1] == "/v2.0/ports"]
    vip_fixed_ips = [{"subnet_id": "sub-1", "ip_address": "198.51.100.100"}]
    assert vip_port == [("POST", "/v2.0/ports", {"port": {"network_id": "net-1", "name": "k8sha-lab-vip", "device_owner": "",
                                                           "fixed_ips": vip_fixed_ips}})]
    assert ("POST", "/v2.0/floatingips", {"floatingip": {"floating_network_id": "ext-1", "port_id": vip_port and
                                                         fake.objects["ports"][-1]["id"]}}) in sent
    assert "198.51.100.100/32 allowed on lb1's port" in changes and "VIP port 198.51.100.100" in changes
    mocker.reset_mock()
    assert net.vip_networking_with(conn, description, SETTINGS) == []
    assert writes(mocker) == []


def test_security_rules_allow_vrrp_only_between_the_load_balancers(cloud):
    fake, conn, mocker = cloud
    net.security_groups_with(conn, net.cluster_rules(salt_render.description(), ["198.51.100.5/32"],
                                                      salt_render.flows(salt_render.description())))
    rules = [w[2]["security_group_rule"] for w in writes(mocker) if w[1] == "/v2.0/security-group-rules"]
    groups = {g["id"]: g["name"] for g in fake.objects["security-groups"]}
    vrrp = [r for r in rules if r.get("protocol") == "112"]
    assert {groups[r["security_group_id"]] for r in vrrp} == {"k8sha-loadbalancer"}
    assert sorted(r["remote_ip_prefix"] for r in vrrp) == ["198.51.100.11/32", "198.51.100.12/32"]
    assert vrrp[0] == {"security_group_id": vrrp[0]["security_group_id"], "direction": "ingress", "ethertype": "IPv4",
                       "protocol": "112", "remote_ip_prefix": "198.51.100.11/32"}
    etcd = [r for r in rules if r.get("port_range_min") == 2379]
    assert {groups[r["security_group_id"]] for r in etcd} == {"k8sha-control-plane"}
    assert sorted(r["remote_ip_prefix"] for r in etcd) == [f"198.51.100.2{i}/32" for i in (1, 2, 3)]
    # The routed pod network: every protocol from the pod CIDR only (never from the nodes: etcd and
    # the kubelet stay closed to them), to the control planes and workers (Neutron: no protocol = all).
    pods = [r for r in rules if "protocol" not in r]
    assert {groups[r["security_group_id"]] for r in pods} == {"k8sha-control-plane", "k8sha-worker"}
    assert {r["remote_ip_prefix"] for r in pods} == {"10.244.0.0/16"}
    assert not [r for r in pods if "port_range_min" in r]
    api = [r for r in rules if r.get("port_range_min") == 6443 and groups[r["security_group_id"]] == "k8sha-loadbalancer"]
    assert api == [{"security_group_id": api[0]["security_group_id"], "direction": "ingress", "ethertype": "IPv4",
                    "protocol": "tcp", "port_range_min": 6443, "port_range_max": 6443, "remote_ip_prefix": "0.0.0.0/0"}]


def test_port_security_disabled_is_named_with_the_fix(cloud):
    fake, conn, _ = cloud
    fake.objects["ports"][1]["port_security_enabled"] = False
    with pytest.raises(CommandExecutionError, match=r"port security is disabled on port port-lb2 of lb2.*enable-port-security"):
        net.vip_networking_with(conn, salt_render.description(), SETTINGS)


def test_a_conflict_from_neutron_on_the_pairs_is_explained(cloud):
    fake, conn, mocker = cloud
    mocker.put(f"{MOCK_BASE}/network/v2.0/ports/port-lb1", status_code=409, json={"NeutronError": {
        "type": "PortSecurityAndIPRequiredForSecurityGroups", "message": "Port Security must be enabled"}})
    with pytest.raises(CommandExecutionError, match="Neutron refused allowed address pairs on port port-lb1 of lb1"):
        net.vip_networking_with(conn, salt_render.description(), SETTINGS)


def test_a_missing_network_is_named_with_the_setting_to_fix(cloud):
    _, conn, _ = cloud
    with pytest.raises(CommandExecutionError, match=r"network 'nope' not found: set k8sha:lookup:openstack:network"):
        net.vip_networking_with(conn, salt_render.description(), dict(SETTINGS, network="nope"))


def test_a_vip_taken_by_another_port_is_refused_before_any_pair_is_set(cloud):
    fake, conn, mocker = cloud
    fake.objects["ports"].append({"id": "port-x", "name": "someone", "network_id": "net-1", "device_owner": "compute:nova",
                                  "fixed_ips": [{"subnet_id": "sub-1", "ip_address": "198.51.100.100"}]})
    with pytest.raises(CommandExecutionError, match=r"VIP 198.51.100.100 is already used by port port-x \(someone"):
        net.vip_networking_with(conn, salt_render.description(), SETTINGS)
    assert not [w for w in writes(mocker) if w[0] == "PUT"]


@pytest.mark.parametrize("existing, expected", [
    ([], [{"ip_address": "10.0.0.5/32"}]),
    ([{"ip_address": "10.0.0.5"}], [{"ip_address": "10.0.0.5"}]),
    ([{"ip_address": "10.0.0.5/32", "mac_address": "m"}], [{"ip_address": "10.0.0.5/32", "mac_address": "m"}]),
    ([{"ip_address": "10.0.0.6/32"}], [{"ip_address": "10.0.0.6/32"}, {"ip_address": "10.0.0.5/32"}]),
])
def test_pairs_are_merged_never_replaced(existing, expected):
    assert net.merged_pairs(existing, "10.0.0.5") == expected
    assert json.dumps(existing)  # the input is left as it was


def test_ssh_and_salt_are_open_only_to_the_named_sources_never_to_everyone():
    groups = net.cluster_rules(salt_render.description(), net.admin_sources({}, ["198.51.100.5"]),
                               salt_render.flows(salt_render.description()))
    for name, rules in groups.items():
        ssh = [r["remote_ip_prefix"] for r in rules if r["port_range_min"] == 22]
        assert ssh == ([] if name == "k8sha-salt-master" else ["198.51.100.5/32"]), name
    salt_master = groups["k8sha-salt-master"]
    assert {(r["port_range_min"], r["port_range_max"]) for r in salt_master} == {(4505, 4506)}
    assert sorted(r["remote_ip_prefix"] for r in salt_master) == sorted(
        f"{n['address']}/32" for n in salt_render.description()["nodes"])
    assert net.admin_sources({"admin_sources": ["192.0.2.0/28", "192.0.2.77"]}, ["198.51.100.5"]) == [
        "192.0.2.0/28", "192.0.2.77/32"]


def test_metrics_ports_are_open_on_the_load_balancers_only_to_the_metrics_sources():
    sources = net.metrics_sources({"metrics": {"sources": []}}, ["198.51.100.5"])
    assert sources == ["198.51.100.5/32"]
    groups = net.cluster_rules(salt_render.description(), ["198.51.100.5/32"],
                               salt_render.flows(salt_render.description()), ["192.0.2.10/32"])
    for name, rules in groups.items():
        metrics = sorted((r["port_range_min"], r["remote_ip_prefix"]) for r in rules if r["port_range_min"] in (8405, 9100))
        assert metrics == ([(8405, "192.0.2.10/32"), (9100, "192.0.2.10/32")] if name == "k8sha-loadbalancer" else []), name
    with pytest.raises(CommandExecutionError, match=r"set k8sha:lookup:metrics:sources"):
        net.metrics_sources({"metrics": {"sources": []}}, [])


def test_no_source_for_ssh_is_named_with_the_setting():
    with pytest.raises(CommandExecutionError, match=r"set k8sha:lookup:admin_sources"):
        net.admin_sources({}, [])
