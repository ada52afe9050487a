"""
The k8sha_openstack salt-cloud driver against OpenStack's HTTP APIs (requests-mock over
tests/fake_openstack.py, a small stateful Keystone, Nova, Glance and Neutron): the exact
create-server request (cloud-init with the minion's key pair and roles grain, networks,
security groups, boot volume), the key accepted before the server exists, ACTIVE waited for,
and the errors: ERROR state with Nova's fault, quota, a missing image, the wait timing out.
"""

import base64
import importlib.util
import pytest
import requests_mock as rm
import yaml
from salt.exceptions import SaltCloudSystemExit

import salt_render
from fake_openstack import FakeOpenStack

PROVIDER = "k8sha-openstack:k8sha_openstack"


def load_driver(tmp_path, events, auth_url):
    spec = importlib.util.spec_from_file_location("k8sha_openstack", salt_render.REPO / "_clouds" / "k8sha_openstack.py")
    driver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver)
    (tmp_path / "pki" / "minions").mkdir(parents=True)
    driver.__opts__ = {
        "pki_dir": str(tmp_path / "pki"), "sock_dir": str(tmp_path), "minion": {"master": "10.0.0.5"},
        "providers": {"k8sha-openstack": {"k8sha_openstack": {
            "driver": "k8sha_openstack", "region_name": "RegionOne",
            "auth": {"auth_url": auth_url, "username": "admin", "password": "x", "project_name": "k8sha",
                     "user_domain_name": "Default", "project_domain_name": "Default"}}}},
        "profiles": {"openstack-control-plane": {"provider": PROVIDER}}}
    driver.__active_provider_name__ = PROVIDER
    driver.__utils__ = {"cloud.fire_event": lambda *args, **kwargs: events.append(args[2])}
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


def test_create_sends_the_exact_server_and_a_minion_that_joins_by_itself(cloud):
    driver, compute, mocker, events, tmp_path = cloud
    node = driver.create(profile(boot_volume_size=40))
    assert node["id"] == "srv-cp1" and node["state"] == "ACTIVE" and node["private_ips"] == ["198.51.100.150"]
    body = compute.servers["srv-cp1"]["request"]
    userdata = base64.b64decode(body.pop("user_data")).decode()
    assert body == {"name": "cp1", "flavorRef": "f-m1.small", "networks": [{"uuid": "net-1"}],
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
    driver, compute, _, _, tmp_path = cloud
    compute.fail_create = (403, "Quota exceeded for cores: Requested 8, but already used 40 of 40 cores")
    with pytest.raises(SaltCloudSystemExit, match=r"cp1: Nova refused it, quota exceeded .*raise the project's quota"):
        driver.create(profile())
    assert not (tmp_path / "pki" / "minions" / "cp1").exists()


def test_an_unknown_security_group_is_refused_as_nova_does(cloud):
    driver, compute, _, _, tmp_path = cloud
    with pytest.raises(SaltCloudSystemExit, match=r"cp1: Nova refused the server \(400: .*Security group k8sha-nope not found"):
        driver.create(profile(security_groups=["k8sha-nope"]))
    assert not (tmp_path / "pki" / "minions" / "cp1").exists()


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
