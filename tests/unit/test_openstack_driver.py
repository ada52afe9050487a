"""
The k8sha_openstack salt-cloud driver against OpenStack's HTTP APIs (requests-mock over
tests/helpers/fake_openstack.py, a small stateful Keystone, Nova, Glance and Neutron): the exact
port and create-server requests (the description's fixed IP on a port with the security
groups; cloud-init with the roles grain and a one-time enrolment value, never a key), ACTIVE
waited for, a free port reused, a taken address named, the floating IP released on destroy,
and the errors: ERROR state with Nova's fault, quota, a missing image, the wait timing out.
"""

import base64

import pytest
import requests_mock as rm
import yaml
from helpers import salt_render
from helpers.fake_openstack import FakeOpenStack
from salt.exceptions import SaltCloudSystemExit

PROVIDER = "k8sha-openstack:k8sha_openstack"


def load_driver(tmp_path, events, auth_url):
    driver = salt_render.load("_clouds", "k8sha_openstack")
    (tmp_path / "pki" / "minions").mkdir(parents=True)
    driver.__opts__ = {
        "pki_dir": str(tmp_path / "pki"), "sock_dir": str(tmp_path), "minion": {"master": "10.0.0.5"},
        "providers": {"k8sha-openstack": {"k8sha_openstack": {
            "driver": "k8sha_openstack", "region_name": "RegionOne",
            "auth": {"auth_url": auth_url, "username": "admin", "password": "x", "project_name": "k8sha",
                     "user_domain_name": "Default", "project_domain_name": "Default"}}}},
        "profiles": {"openstack-control-plane": {"provider": PROVIDER}}}
    driver.__active_provider_name__ = PROVIDER
    driver.__opts__["pillar_roots"] = {"base": [str(salt_render.REPO / "pillar")]}
    driver.__opts__["file_roots"] = {"base": [str(salt_render.REPO / "salt")]}
    driver.__utils__ = dict(salt_render.as_utils("k8sha_enrolment", "k8sha_cloud", "k8sha_description"),
                            **{"cloud.fire_event": lambda *args, **kwargs: events.append(args[2])})
    return driver


@pytest.fixture
def cloud(tmp_path):
    events = []
    with rm.Mocker() as mocker:
        fake = FakeOpenStack().mock(mocker)
        fake.objects["security-groups"].append({"id": "sg-cp", "name": "k8sha-control-plane"})
        yield load_driver(tmp_path, events, fake.auth_url), fake, mocker, events, tmp_path


def profile(name="cp1", **extra):
    return dict({"name": name, "profile": "openstack-control-plane", "driver": PROVIDER, "image": "debian-12",
                 "size": "m1.small", "networks": ["k8s-net"], "security_groups": ["k8sha-control-plane"],
                 "key_name": "ops", "minion": {"master": "10.0.0.5", "grains": {"roles": ["control_plane"]}},
                 "wait_timeout": 5}, **extra)


def test_create_puts_the_server_on_a_port_with_the_descriptions_address_and_no_key_in_its_user_data(cloud):
    driver, fake, mocker, events, tmp_path = cloud
    node = driver.create(profile(boot_volume_size=40))
    assert node["id"] == "srv-cp1" and node["state"] == "ACTIVE" and node["private_ips"] == ["198.51.100.21"]
    port = next(p for p in fake.objects["ports"] if p["device_id"] == "srv-cp1")
    assert [w for w in fake.writes if w[1].endswith("/ports")] == [("POST", "/network/v2.0/ports", {"port": {
        "network_id": "net-1", "name": "cp1", "description": "k8sha: made by salt-cloud for cp1",
        "fixed_ips": [{"subnet_id": "sub-1", "ip_address": "198.51.100.21"}], "security_groups": ["sg-cp"]}})]
    body = fake.servers["srv-cp1"]["request"]
    userdata = base64.b64decode(body.pop("user_data")).decode()
    assert body == {"name": "cp1", "flavorRef": "f-m1.small", "networks": [{"port": port["id"]}], "key_name": "ops",
                    "metadata": {"k8sha-name": "cp1"},
                    "block_device_mapping_v2": [{"boot_index": 0, "uuid": "img-1", "source_type": "image",
                                                 "destination_type": "volume", "volume_size": 40,
                                                 "delete_on_termination": True}]}
    assert userdata.startswith("#cloud-config\n") and "PRIVATE KEY" not in userdata and "PUBLIC KEY" not in userdata
    minion = yaml.safe_load(userdata)["salt_minion"]
    assert set(minion) == {"conf"}
    conf = minion["conf"]
    assert conf["master"] == "10.0.0.5" and conf["id"] == "cp1" and conf["autosign_grains"] == ["k8sha_enrolment"]
    value = conf["grains"].pop("k8sha_enrolment")
    assert conf["grains"] == {"roles": ["control_plane"]}
    # The master holds the same one-time value for cp1 (0600) and no key for it yet.
    issued = tmp_path / "pki" / "k8sha_enrolment" / "issued" / "cp1"
    assert value in issued.read_text() and issued.stat().st_mode & 0o077 == 0
    assert not (tmp_path / "pki" / "minions" / "cp1").exists()
    assert events == ["salt/cloud/cp1/creating", "salt/cloud/cp1/created"]
    assert driver.list_nodes()["cp1"]["state"] == "ACTIVE"


def test_a_free_port_with_the_address_is_reused_and_a_taken_address_names_both(cloud):
    driver, fake, _, _, _ = cloud
    fake.objects["ports"].append(fake.new_port(id="port-kept", network_id="net-1",
                                               fixed_ips=[{"subnet_id": "sub-1", "ip_address": "198.51.100.22"}]))
    driver.create(profile(name="cp2"))
    assert next(p for p in fake.objects["ports"] if p["id"] == "port-kept")["device_id"] == "srv-cp2"
    assert fake.servers["srv-cp2"]["request"]["networks"] == [{"port": "port-kept"}]
    fake.objects["ports"].append(fake.new_port(id="port-other", network_id="net-1", device_id="srv-someone",
                                               device_owner="compute:nova",
                                               fixed_ips=[{"subnet_id": "sub-1", "ip_address": "198.51.100.23"}]))
    with pytest.raises(SaltCloudSystemExit, match=r"cp3: its address 198.51.100.23 is taken by port port-other "
                                                  r"\(no name\) of device srv-someone \(compute:nova\)"):
        driver.create(profile(name="cp3"))
    assert "srv-cp3" not in fake.servers


def test_an_address_outside_the_network_is_refused_before_anything_is_made(cloud):
    driver, fake, _, _, tmp_path = cloud
    with pytest.raises(SaltCloudSystemExit, match=r"cp1: its address 10.1.2.3 is in no subnet of network k8s-net"):
        driver.create(profile(address="10.1.2.3"))
    assert fake.writes == [] and not (tmp_path / "pki" / "k8sha_enrolment" / "issued" / "cp1").exists()


def test_destroy_releases_the_floating_ip_and_port_it_made_and_nothing_else(cloud):
    driver, fake, _, _, tmp_path = cloud
    fake.objects["floatingips"].append({"id": "fip-theirs", "floating_ip_address": "203.0.113.7", "port_id": None,
                                        "description": "someone else's", "floating_network_id": "ext-1"})
    node = driver.create(profile(floating_ip_network="public"))
    assert node["public_ips"] == ["203.0.113.50"]
    assert driver.destroy("cp1") == {"cp1": "destroyed"}
    assert [f["id"] for f in fake.objects["floatingips"]] == ["fip-theirs"]
    assert not [p for p in fake.objects["ports"] if p["name"] == "cp1"]
    assert not (tmp_path / "pki" / "k8sha_enrolment" / "issued" / "cp1").exists()


def test_a_server_in_error_names_novas_fault_and_is_left_for_inspection(cloud):
    driver = cloud[0]
    refusal = r"broken \(srv-broken\) went to ERROR: No valid host was found.*salt-cloud -d broken"
    with pytest.raises(SaltCloudSystemExit, match=refusal):
        driver.create(profile(name="broken", address="198.51.100.40"))


def test_quota_exceeded_is_said_with_the_fix_and_nothing_is_left_behind(cloud):
    driver, compute, _, _, tmp_path = cloud
    compute.fail_create = (403, "Quota exceeded for cores: Requested 8, but already used 40 of 40 cores")
    with pytest.raises(SaltCloudSystemExit, match=r"cp1: Nova refused it, quota exceeded .*raise the project's quota"):
        driver.create(profile())
    assert not (tmp_path / "pki" / "k8sha_enrolment" / "issued" / "cp1").exists()
    assert compute.objects["ports"] == []


def test_an_unknown_security_group_is_named_before_anything_is_made(cloud):
    driver, compute, _, _, tmp_path = cloud
    with pytest.raises(SaltCloudSystemExit, match=r"security group 'k8sha-nope' not found: orch.provision creates"):
        driver.create(profile(security_groups=["k8sha-nope"]))
    assert compute.writes == []


def test_a_missing_image_is_named_before_anything_is_created(cloud):
    driver, compute, mocker, _, _ = cloud
    with pytest.raises(SaltCloudSystemExit, match=r"image 'ubuntu-99' not found: salt-cloud --list-images"):
        driver.create(profile(image="ubuntu-99"))
    assert compute.servers == {}


def test_a_server_that_never_becomes_active_times_out_with_a_clear_error(cloud):
    driver, compute, _, _, _ = cloud
    compute.never_active = True
    with pytest.raises(SaltCloudSystemExit, match=r"cp1 \(srv-cp1\) is not ACTIVE after 2 s: raise wait_timeout"):
        driver.create(profile(wait_timeout=2))
