"""
Provisioning on OpenStack end to end, against tests/fake_openstack.py served over HTTP on
127.0.0.1: on a real salt-master, `orch.provision` creates the seed's six instances through
salt-cloud with the project's driver and profiles and prepares the VIP's networking (security
groups, VIP port, the VIP allowed on both LB ports); a second run sends no write; and
`salt-cloud -m cloud/maps/openstack.map` creates only what is missing. The fake's instances run no minion, so orch.provision stops where it waits for
them, naming them.
"""

import json
import pathlib
import re
import shutil

import pytest
import yaml

import salt_render
from fake_openstack import FakeOpenStack

REPO = salt_render.REPO
NODES = ["cp1", "cp2", "cp3", "lb1", "lb2", "worker1"]


@pytest.fixture(scope="module")
def fake_cloud():
    fake = FakeOpenStack()
    server = fake.serve()
    yield fake
    server.shutdown()


@pytest.fixture(scope="module")
def openstack_master(salt_factories, tmp_path_factory, fake_cloud):
    pillar = tmp_path_factory.mktemp("openstack-pillar")
    shutil.copy(REPO / "pillar" / "top.sls", pillar / "top.sls")
    auth = {"auth_url": fake_cloud.auth_url, "username": "admin", "password": "x", "project_name": "k8sha",
            "user_domain_name": "Default", "project_domain_name": "Default"}
    lookup = {"cloud": {"provision": True, "minion_timeout": 3, "profiles": {
                  "loadbalancer": "openstack-loadbalancer", "control_plane": "openstack-control-plane",
                  "worker": "openstack-worker"}},
              "openstack": {"auth": auth, "region": "RegionOne", "network": "k8s-net", "subnet": "k8s-subnet"},
              "heal": {"state_dir": str(tmp_path_factory.mktemp("heal"))}}
    (pillar / "cluster.sls").write_text(yaml.safe_dump({"cluster": salt_render.description(),
                                                        "k8sha": {"lookup": lookup}}))
    factory = salt_factories.salt_master_daemon("k8sha-openstack-master", overrides={
        "file_roots": {"base": [str(REPO / "salt"), str(REPO / "srv")]},
        "pillar_roots": {"base": [str(pillar)]},
        "module_dirs": [str(REPO)],
    })
    config_dir = pathlib.Path(factory.config_dir)
    (config_dir / "cloud.providers.d").mkdir(exist_ok=True)
    (config_dir / "cloud.profiles.d").mkdir(exist_ok=True)
    (config_dir / "cloud.providers.d" / "k8sha-openstack.conf").write_text(yaml.safe_dump({"k8sha-openstack": {
        "driver": "k8sha_openstack", "region_name": "RegionOne", "auth": auth, "minion": {"master": "127.0.0.1"}}}))
    shutil.copy(REPO / "cloud" / "openstack.profiles.conf", config_dir / "cloud.profiles.d" / "k8sha-openstack.conf")
    with factory.started():
        yield factory


def provision(master):
    run = master.salt_run_cli(timeout=300).run("state.orchestrate", "orch.provision")
    data = json.loads(run.stdout[run.stdout.index("{"):])
    return {v["__id__"]: v for v in next(iter(data["data"].values())).values()}


def summary(calls):
    """'METHOD /path' with ids folded, counted: the API calls of a run (for the README)."""
    counted = {}
    for method, path, *_ in calls:
        key = f"{method} {re.sub(r'/(srv|port|ports|security-groups|floatingips)-[^/]+', r'/<id>', path)}"
        counted[key] = counted.get(key, 0) + 1
    return counted


def test_provisioning_creates_the_six_instances_and_the_vip_networking_then_writes_nothing(openstack_master, fake_cloud):
    first = provision(openstack_master)
    assert first["cluster-description-valid"]["result"] is True
    # The groups the profiles name exist before the instances (the fake refuses unknown ones, as Nova).
    assert len(first["cluster-security-groups-ready"]["changes"]["created"]) == 30
    assert first["cluster-machines-present"]["changes"] == {"created": NODES}
    assert sorted(s["name"] for s in fake_cloud.servers.values()) == NODES
    worker = next(s for s in fake_cloud.servers.values() if s["name"] == "worker1")["request"]
    assert worker["flavorRef"] == "f-m1.xxlarge" and worker["security_groups"] == [{"name": "k8sha-worker"}]
    assert worker["block_device_mapping_v2"][0]["volume_size"] == 100
    networking = first["cluster-vip-networking-ready"]
    assert networking["result"] is True, networking["comment"]
    created = networking["changes"]["created"]
    assert "VIP port 198.51.100.100" in created
    assert {"198.51.100.100/32 allowed on lb1's port", "198.51.100.100/32 allowed on lb2's port"} <= set(created)
    for lb in ("lb1", "lb2"):
        port = next(p for p in fake_cloud.objects["ports"] if p.get("device_id") == f"srv-{lb}")
        assert port["allowed_address_pairs"] == [{"ip_address": "198.51.100.100/32"}]
    # Every minion's key was accepted on the master before its server booted.
    keys = openstack_master.salt_key_cli().run("-L", "--out=json").data
    assert sorted(keys["minions"]) == NODES
    # The fake's instances run no minion: the orchestration stops there and names them.
    waiting = first["cluster-minions-ready"]
    assert waiting["result"] is False and "no answer in 3 s from lb1, lb2, cp1, cp2, cp3, worker1" in waiting["comment"]
    print(f"\nfull provisioning run: {len(fake_cloud.requests)} requests; writes: {summary(fake_cloud.writes)}")
    before, requests_before = len(fake_cloud.writes), len(fake_cloud.requests)
    second = provision(openstack_master)
    assert not second["cluster-security-groups-ready"]["changes"]
    assert not second["cluster-machines-present"]["changes"]
    assert not second["cluster-vip-networking-ready"]["changes"]
    assert fake_cloud.writes[before:] == []
    print(f"second run: {len(fake_cloud.requests) - requests_before} requests, 0 writes")


def test_salt_cloud_map_creates_only_what_is_missing(openstack_master, fake_cloud):
    cloud = openstack_master.salt_cloud_cli(timeout=300)
    destroyed = cloud.run("-y", "-d", "lb2")
    assert destroyed.returncode == 0 and "srv-lb2" not in fake_cloud.servers
    before = len(fake_cloud.writes)
    created = cloud.run("-y", "-m", str(REPO / "cloud" / "maps" / "openstack.map"))
    assert created.returncode == 0, created.stderr
    assert sorted(s["name"] for s in fake_cloud.servers.values()) == NODES
    assert [(m, p) for m, p, _ in fake_cloud.writes[before:]] == [("POST", "/compute/v2.1/servers")]
