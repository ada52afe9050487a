"""
openstack_net against OpenStack's HTTP APIs (requests-mock with a small stateful Neutron and
Nova): the exact bodies of the writes (security rules, the VIP port, the VIP /32 merged into
the load balancers' allowed address pairs, the floating IP), a second run without a single
write, and the errors operators meet (port security disabled, missing network, VIP taken).
"""

import json
import re
import urllib.parse

import openstack
import pytest
import requests_mock as rm
from salt.exceptions import CommandExecutionError

import salt_render

net = salt_render.load_module("openstack_net")
AUTH = "https://keystone.example.test/v3"
NEUTRON = "https://neutron.example.test"
NOVA = "https://nova.example.test/v2.1"
SETTINGS = {"network": "k8s-net", "subnet": "k8s-subnet", "external_network": "public"}


class FakeCloud:
    """Neutron and Nova as far as openstack_net uses them, keeping state between calls."""

    def __init__(self, mocker):
        self.objects = {"security-groups": [], "security-group-rules": [], "ports": [], "floatingips": [],
                        "networks": [{"id": "net-1", "name": "k8s-net"}, {"id": "ext-1", "name": "public"}],
                        "subnets": [{"id": "sub-1", "name": "k8s-subnet", "network_id": "net-1"}]}
        self.servers = [{"id": f"srv-{n}", "name": n, "status": "ACTIVE"} for n in ("lb1", "lb2")]
        for n in ("lb1", "lb2"):
            self.objects["ports"].append({"id": f"port-{n}", "name": "", "network_id": "net-1", "device_id": f"srv-{n}",
                                          "device_owner": "compute:nova", "port_security_enabled": True,
                                          "allowed_address_pairs": [{"ip_address": "10.9.9.9", "mac_address": "fa:16:3e:00:00:01"}],
                                          "fixed_ips": [{"subnet_id": "sub-1", "ip_address": f"198.51.100.1{n[-1]}"}]})
        self.count = 0
        token = {"token": {"methods": ["password"], "expires_at": "2099-01-01T00:00:00.000000Z",
                           "project": {"id": "p1", "name": "k8sha", "domain": {"id": "default", "name": "Default"}},
                           "user": {"id": "u1", "name": "admin", "domain": {"id": "default", "name": "Default"}},
                           "catalog": [{"type": t, "name": t, "endpoints": [{"interface": "public", "region": "RegionOne",
                                                                             "region_id": "RegionOne", "url": u}]}
                                       for t, u in (("network", NEUTRON), ("compute", NOVA))]}}
        mocker.get(AUTH, json={"version": {"id": "v3.14", "status": "stable", "links": [{"rel": "self", "href": AUTH + "/"}]}})
        mocker.post(AUTH + "/auth/tokens", json=token, headers={"X-Subject-Token": "tok"}, status_code=201)
        mocker.get(NEUTRON, json={"versions": [{"id": "v2.0", "status": "CURRENT",
                                                "links": [{"rel": "self", "href": NEUTRON + "/v2.0/"}]}]})
        mocker.register_uri(rm.ANY, re.compile(re.escape(NEUTRON) + r"/v2\.0/.*"), json=self.neutron)
        mocker.get(re.compile(re.escape(NOVA) + r"/servers/detail.*"), json=self.nova)
        mocker.get(NOVA, json={"version": {"id": "v2.1", "status": "CURRENT", "links": [{"rel": "self", "href": NOVA + "/"}]}})

    def nova(self, request, context):
        wanted = urllib.parse.parse_qs(urllib.parse.urlparse(request.url).query).get("name", [""])[0]
        return {"servers": [s for s in self.servers if re.fullmatch(wanted.strip("^$"), s["name"])]}

    def neutron(self, request, context):
        path = urllib.parse.urlparse(request.url).path.split("/v2.0/")[1].removesuffix(".json")
        kind, _, ident = path.partition("/")
        singular = {"security-groups": "security_group", "security-group-rules": "security_group_rule",
                    "ports": "port", "floatingips": "floatingip", "networks": "network", "subnets": "subnet"}[kind]
        plural = singular + "s" if kind != "floatingips" else "floatingips"
        items = self.objects[kind]
        if request.method == "GET" and not ident:
            query = urllib.parse.parse_qs(urllib.parse.urlparse(request.url).query)
            return {plural: [o for o in items if all(self.matches(o, k, v[0]) for k, v in query.items())]}
        if request.method == "POST":
            body = request.json()[singular]
            if kind == "ports" and any(ip["ip_address"] == f["ip_address"] for p in items for ip in p["fixed_ips"]
                                       for f in body.get("fixed_ips", [])):
                context.status_code = 409
                return {"NeutronError": {"type": "IpAddressInUse", "message": "IP address already allocated"}}
            self.count += 1
            obj = dict(body, id=f"{kind}-{self.count}")
            if kind == "floatingips":
                obj["floating_ip_address"] = "203.0.113.50"
            items.append(obj)
            context.status_code = 201
            return {singular: obj}
        obj = next((o for o in items if o["id"] == ident), None)
        if obj is None:
            context.status_code = 404
            return {"NeutronError": {"type": "NotFound", "message": f"{singular} {ident} could not be found"}}
        if request.method == "PUT":
            if obj.get("port_security_enabled") is False:
                context.status_code = 409
                return {"NeutronError": {"type": "PortSecurityAndIPRequiredForSecurityGroups",
                                         "message": "Port Security must be enabled in order to have allowed address pairs"}}
            obj.update(request.json()[singular])
        return {singular: obj}

    @staticmethod
    def matches(obj, key, value):
        if key == "fixed_ips":
            return any(f"ip_address={ip['ip_address']}" == value for ip in obj.get("fixed_ips", []))
        if key in obj:
            return str(obj[key]) == value
        return True  # filters the fake does not know (fields, limits) do not exclude anything


@pytest.fixture
def cloud():
    with rm.Mocker() as mocker:
        fake = FakeCloud(mocker)
        conn = openstack.connect(auth_url=AUTH, username="admin", password="x", project_name="k8sha",
                                 user_domain_name="Default", project_domain_name="Default", region_name="RegionOne")
        yield fake, conn, mocker


def writes(mocker):
    return [(r.method, urllib.parse.urlparse(r.url).path, r.json() if r.body else None)
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
    assert vip_port == [("POST", "/v2.0/ports", {"port": {"network_id": "net-1", "name": "k8sha-lab-vip", "device_owner": "",
                                                           "fixed_ips": [{"subnet_id": "sub-1", "ip_address": "198.51.100.100"}]}})]
    assert ("POST", "/v2.0/floatingips", {"floatingip": {"floating_network_id": "ext-1", "port_id": vip_port and
                                                         fake.objects["ports"][-1]["id"]}}) in sent
    assert "198.51.100.100/32 allowed on lb1's port" in changes and "VIP port 198.51.100.100" in changes
    mocker.reset_mock()
    assert net.vip_networking_with(conn, description, SETTINGS) == []
    assert writes(mocker) == []


def test_security_rules_allow_vrrp_only_between_the_load_balancers(cloud):
    fake, conn, mocker = cloud
    net.vip_networking_with(conn, salt_render.description(), SETTINGS)
    rules = [w[2]["security_group_rule"] for w in writes(mocker) if w[1] == "/v2.0/security-group-rules"]
    groups = {g["id"]: g["name"] for g in fake.objects["security-groups"]}
    vrrp = [r for r in rules if r["protocol"] == "112"]
    assert {groups[r["security_group_id"]] for r in vrrp} == {"k8sha-loadbalancer"}
    assert sorted(r["remote_ip_prefix"] for r in vrrp) == ["198.51.100.11/32", "198.51.100.12/32"]
    assert vrrp[0] == {"security_group_id": vrrp[0]["security_group_id"], "direction": "ingress", "ethertype": "IPv4",
                       "protocol": "112", "remote_ip_prefix": "198.51.100.11/32"}
    etcd = [r for r in rules if r.get("port_range_min") == 2379]
    assert {groups[r["security_group_id"]] for r in etcd} == {"k8sha-control-plane"}
    assert sorted(r["remote_ip_prefix"] for r in etcd) == [f"198.51.100.2{i}/32" for i in (1, 2, 3)]
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
    mocker.put(f"{NEUTRON}/v2.0/ports/port-lb1", status_code=409, json={"NeutronError": {
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
