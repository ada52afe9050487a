"""
The k8sha_openstack salt-cloud driver against OpenStack's HTTP APIs (requests-mock, a small
stateful Nova and Glance beside the Neutron fake of test_openstack_net): the exact
create-server request (cloud-init with the minion's key pair and roles grain, networks,
security groups, boot volume), the key accepted before the server exists, ACTIVE waited for,
and the errors: ERROR state with Nova's fault, quota, a missing image, the wait timing out.
"""

import base64
import importlib.util
import re
import urllib.parse

import pytest
import requests_mock as rm
import yaml
from salt.exceptions import SaltCloudSystemExit

import salt_render
from test_openstack_net import AUTH, NOVA, FakeCloud

GLANCE = "https://glance.example.test"
PROVIDER = "k8sha-openstack:k8sha_openstack"


def load_driver(tmp_path, events):
    spec = importlib.util.spec_from_file_location("k8sha_openstack", salt_render.REPO / "_clouds" / "k8sha_openstack.py")
    driver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver)
    (tmp_path / "pki" / "minions").mkdir(parents=True)
    driver.__opts__ = {
        "pki_dir": str(tmp_path / "pki"), "sock_dir": str(tmp_path), "minion": {"master": "10.0.0.5"},
        "providers": {"k8sha-openstack": {"k8sha_openstack": {
            "driver": "k8sha_openstack", "region_name": "RegionOne",
            "auth": {"auth_url": AUTH, "username": "admin", "password": "x", "project_name": "k8sha",
                     "user_domain_name": "Default", "project_domain_name": "Default"}}}},
        "profiles": {"openstack-control-plane": {"provider": PROVIDER}}}
    driver.__active_provider_name__ = PROVIDER
    driver.__utils__ = {"cloud.fire_event": lambda *args, **kwargs: events.append(args[2])}
    return driver


class FakeCompute:
    """Nova servers and flavors, Glance images."""

    def __init__(self, mocker, fail_with=None, never_active=False):
        self.servers, self.fail_with, self.never_active = {}, fail_with, never_active
        self.flavors = [{"id": "f-small", "name": "m1.small", "vcpus": 2, "ram": 4096, "disk": 20}]
        self.images = [{"id": "img-1", "name": "debian-12", "status": "active"}]
        mocker.register_uri(rm.ANY, re.compile(re.escape(NOVA) + r"/(servers|flavors).*"), json=self.nova)
        mocker.get(GLANCE, json={"versions": [{"id": "v2.9", "status": "CURRENT",
                                               "links": [{"rel": "self", "href": GLANCE + "/v2/"}]}]})
        mocker.get(re.compile(re.escape(GLANCE) + r"/v2/images.*"), json=self.glance)

    def glance(self, request, context):
        path = urllib.parse.urlparse(request.url).path
        query = urllib.parse.parse_qs(urllib.parse.urlparse(request.url).query)
        if path.rstrip("/").endswith("/images"):
            return {"images": [i for i in self.images if query.get("name", [i["name"]])[0] == i["name"]]}
        found = [i for i in self.images if i["id"] == path.rsplit("/", 1)[1]]
        if not found:
            context.status_code = 404
            return {"message": "not found"}
        return found[0]

    def nova(self, request, context):
        path = urllib.parse.urlparse(request.url).path.split("/v2.1/")[1]
        query = urllib.parse.parse_qs(urllib.parse.urlparse(request.url).query)
        if path.startswith("flavors"):
            ident = path.split("/")[1] if "/" in path else ""
            if ident and ident != "detail":
                found = [f for f in self.flavors if f["id"] == ident]
                if not found:
                    context.status_code = 404
                    return {"itemNotFound": {"message": "not found"}}
                return {"flavor": found[0]}
            return {"flavors": [f for f in self.flavors if query.get("name", [f["name"]])[0] == f["name"]]}
        if request.method == "POST":
            if self.fail_with:
                context.status_code = self.fail_with[0]
                return {"forbidden": {"message": self.fail_with[1], "code": self.fail_with[0]}}
            body = request.json()["server"]
            server = {"id": f"srv-{body['name']}", "name": body["name"], "status": "BUILD", "request": body,
                      "addresses": {"k8s-net": [{"addr": "10.0.0.11", "OS-EXT-IPS:type": "fixed"}]},
                      "flavor": {"original_name": "m1.small"}, "image": {"id": "img-1"}}
            self.servers[server["id"]] = server
            context.status_code = 202
            return {"server": {"id": server["id"]}}
        ident = path.split("/")[1] if "/" in path else ""
        if ident in ("", "detail"):
            return {"servers": list(self.servers.values())}
        server = self.servers[ident]
        if not self.never_active and server["status"] == "BUILD":
            server["status"] = "ERROR" if server["name"] == "broken" else "ACTIVE"
            if server["status"] == "ERROR":
                server["fault"] = {"message": "No valid host was found. There are not enough hosts available."}
        return {"server": server}


@pytest.fixture
def cloud(tmp_path):
    events = []
    with rm.Mocker() as mocker:
        network = FakeCloud(mocker)
        compute = FakeCompute(mocker)
        mocker.get(AUTH, json={"version": {"id": "v3.14", "status": "stable", "links": [{"rel": "self", "href": AUTH + "/"}]}})
        catalog_token = {"token": {"methods": ["password"], "expires_at": "2099-01-01T00:00:00.000000Z",
                                   "project": {"id": "p1", "name": "k8sha", "domain": {"id": "default", "name": "Default"}},
                                   "user": {"id": "u1", "name": "admin", "domain": {"id": "default", "name": "Default"}},
                                   "catalog": [{"type": t, "name": t, "endpoints": [{"interface": "public", "region": "RegionOne",
                                                                                     "region_id": "RegionOne", "url": u}]}
                                               for t, u in (("network", "https://neutron.example.test"),
                                                            ("compute", NOVA), ("image", GLANCE))]}}
        mocker.post(AUTH + "/auth/tokens", json=catalog_token, headers={"X-Subject-Token": "tok"}, status_code=201)
        yield load_driver(tmp_path, events), compute, network, mocker, events, tmp_path


def profile(name="cp1", **extra):
    return dict({"name": name, "profile": "openstack-control-plane", "driver": PROVIDER, "image": "debian-12",
                 "size": "m1.small", "networks": ["k8s-net"], "security_groups": ["k8sha-control-plane"],
                 "key_name": "ops", "minion": {"master": "10.0.0.5", "grains": {"roles": ["control_plane"]}},
                 "wait_timeout": 5}, **extra)


def test_create_sends_the_exact_server_and_a_minion_that_joins_by_itself(cloud):
    driver, compute, _, mocker, events, tmp_path = cloud
    node = driver.create(profile(boot_volume_size=40))
    assert node["id"] == "srv-cp1" and node["state"] == "ACTIVE" and node["private_ips"] == ["10.0.0.11"]
    body = compute.servers["srv-cp1"]["request"]
    userdata = base64.b64decode(body.pop("user_data")).decode()
    assert body == {"name": "cp1", "flavorRef": "f-small", "networks": [{"uuid": "net-1"}],
                    "security_groups": [{"name": "k8sha-control-plane"}], "key_name": "ops",
                    "metadata": {"k8sha-name": "cp1"},
                    "block_device_mapping_v2": [{"boot_index": 0, "uuid": "img-1", "source_type": "image",
                                                 "destination_type": "volume", "volume_size": 40,
                                                 "delete_on_termination": True}]}
    assert userdata.startswith("#cloud-config\n")
    minion = yaml.safe_load(userdata)["salt_minion"]
    assert minion["conf"]["master"] == "10.0.0.5" and minion["conf"]["id"] == "cp1"
    assert minion["conf"]["grains"] == {"roles": ["control_plane"]}
    accepted = (tmp_path / "pki" / "minions" / "cp1").read_text()
    assert accepted == minion["public_key"] and "PRIVATE KEY" in minion["private_key"]
    assert events == ["salt/cloud/cp1/creating", "salt/cloud/cp1/created"]
    assert driver.list_nodes()["cp1"]["state"] == "ACTIVE"


def test_a_server_in_error_names_novas_fault_and_is_left_for_inspection(cloud):
    driver = cloud[0]
    with pytest.raises(SaltCloudSystemExit, match=r"broken \(srv-broken\) went to ERROR: No valid host was found.*salt-cloud -d broken"):
        driver.create(profile(name="broken"))


def test_quota_exceeded_is_said_with_the_fix_and_the_key_is_not_left_accepted(cloud):
    driver, compute, _, _, _, tmp_path = cloud
    compute.fail_with = (403, "Quota exceeded for cores: Requested 8, but already used 40 of 40 cores")
    with pytest.raises(SaltCloudSystemExit, match=r"cp1: Nova refused it, quota exceeded .*raise the project's quota"):
        driver.create(profile())
    assert not (tmp_path / "pki" / "minions" / "cp1").exists()


def test_a_missing_image_is_named_before_anything_is_created(cloud):
    driver, compute, _, mocker, _, _ = cloud
    with pytest.raises(SaltCloudSystemExit, match=r"image 'ubuntu-99' not found: salt-cloud --list-images"):
        driver.create(profile(image="ubuntu-99"))
    assert compute.servers == {}


def test_a_server_that_never_becomes_active_times_out_with_a_clear_error(cloud):
    driver, compute, _, _, _, _ = cloud
    compute.never_active = True
    with pytest.raises(SaltCloudSystemExit, match=r"cp1 \(srv-cp1\) is not ACTIVE after 2 s: raise wait_timeout"):
        driver.create(profile(wait_timeout=2))
