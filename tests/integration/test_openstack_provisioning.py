"""
Provisioning on OpenStack end to end, against tests/helpers/fake_openstack.py served over HTTP on
127.0.0.1: on a real salt-master, `orch.provision` creates the seed's six instances through
salt-cloud with the project's driver and profiles, each on a port with the description's
address, and prepares the VIP's networking (security groups, VIP port, the VIP allowed on both
LB ports); a second run sends no write; `salt-cloud -m cloud/maps/openstack.map` creates only
what is missing, at the same address. The fake's instances run no minion, so orch.provision
stops where it waits for them, naming them; a real minion started with one instance's user
data enrols through the master's engine, and a replay of its value is refused.
"""

import base64
import json
import pathlib
import re
import shutil
import subprocess
import sys
import time

import pytest
import salt.config
import salt.key
import yaml
from helpers import salt_render
from helpers.fake_openstack import FakeOpenStack

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
        "engines": [{"k8sha_enrolment": {}}],
        "auth_events_autosign_grains": ["pend", "denied"],
    }, on_auth_event_callback=lambda master, payload: None)  # not the test harness: only the engine accepts keys
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
    """'METHOD /path' with ids folded, counted: the API calls of a run (for docs/openstack.md)."""
    counted = {}
    for method, path, *_ in calls:
        key = f"{method} {re.sub(r'/(srv|port|ports|security-groups|floatingips)-[^/]+', r'/<id>', path)}"
        counted[key] = counted.get(key, 0) + 1
    return counted


def addresses(fake_cloud):
    return {s["name"]: [a["addr"] for net in fake_cloud.server_view(s)["addresses"].values() for a in net]
            for s in fake_cloud.servers.values()}


def user_data(fake_cloud, name):
    server = next(s for s in fake_cloud.servers.values() if s["name"] == name)
    return base64.b64decode(server["OS-EXT-SRV-ATTR:user_data"]).decode()


def test_provisioning_creates_the_six_instances_at_the_descriptions_addresses_then_writes_nothing(
        openstack_master, fake_cloud):
    first = provision(openstack_master)
    assert first["cluster-description-valid"]["result"] is True
    # The groups the profiles name exist before the instances' ports carry them.
    assert first["cluster-security-groups-ready"]["result"] is True, first["cluster-security-groups-ready"]["comment"]
    assert first["cluster-machines-present"]["changes"] == {"created": NODES}
    wanted = {n["name"]: [n["address"]] for n in salt_render.description()["nodes"]}
    print("\ninstance addresses (fake cloud) vs the description:")
    for name in NODES:
        print(f"  {name:8} {addresses(fake_cloud)[name]}  description {wanted[name]}")
    assert addresses(fake_cloud) == wanted
    port_requests = [body["port"] for method, path, body in fake_cloud.writes
                     if (method, path) == ("POST", "/network/v2.0/ports") and body["port"].get("name") in NODES]
    print("port requests:", *(json.dumps(b, sort_keys=True) for b in port_requests), sep="\n  ")
    assert sorted(b["fixed_ips"][0]["ip_address"] for b in port_requests) == sorted(a[0] for a in wanted.values())
    worker = next(s for s in fake_cloud.servers.values() if s["name"] == "worker1")["request"]
    worker_port = next(p for p in fake_cloud.objects["ports"] if p["device_id"] == "srv-worker1")
    assert worker["networks"] == [{"port": worker_port["id"]}] and "security_groups" not in worker
    groups = {g["id"]: g["name"] for g in fake_cloud.objects["security-groups"]}
    assert [groups[g] for g in worker_port["security_groups"]] == ["k8sha-worker"]
    assert worker["flavorRef"] == "f-m1.xxlarge" and worker["block_device_mapping_v2"][0]["volume_size"] == 100
    networking = first["cluster-vip-networking-ready"]
    assert networking["result"] is True, networking["comment"]
    created = networking["changes"]["created"]
    assert "VIP port 198.51.100.100" in created
    assert {"198.51.100.100/32 allowed on lb1's port", "198.51.100.100/32 allowed on lb2's port"} <= set(created)
    for lb in ("lb1", "lb2"):
        port = next(p for p in fake_cloud.objects["ports"] if p.get("device_id") == f"srv-{lb}")
        assert port["allowed_address_pairs"] == [{"ip_address": "198.51.100.100/32"}]
    # No key pair was made for the instances: their user data holds a one-time value, no key.
    for name in NODES:
        text = user_data(fake_cloud, name)
        assert "PRIVATE KEY" not in text and "private_key" not in text and "k8sha_enrolment" in text, name
    keys = openstack_master.salt_key_cli().run("-L", "--out=json").data
    assert keys["minions"] == []
    print("user data of cp1 (value redacted):\n" + re.sub(r"(k8sha_enrolment: )\S+", r"\1<redacted>",
                                                           user_data(fake_cloud, "cp1")))
    # The fake's instances run no minion: the orchestration stops there and names them.
    waiting = first["cluster-minions-ready"]
    assert waiting["result"] is False and "no answer in 3 s from lb1, lb2, cp1, cp2, cp3, worker1" in waiting["comment"]
    print(f"full provisioning run: {len(fake_cloud.requests)} requests; writes: {summary(fake_cloud.writes)}")
    before, requests_before = len(fake_cloud.writes), len(fake_cloud.requests)
    second = provision(openstack_master)
    assert not second["cluster-security-groups-ready"]["changes"]
    assert not second["cluster-machines-present"]["changes"]
    assert not second["cluster-vip-networking-ready"]["changes"]
    assert fake_cloud.writes[before:] == []
    print(f"second run: {len(fake_cloud.requests) - requests_before} requests, 0 writes")


def minion_from_user_data(master, tmp_path, name, text, minion_id=None):
    """A salt-call with the minion configuration an instance's cloud-init would write (the
    master's address and ports are this test master's), and a key pair of its own."""
    conf = yaml.safe_load(text)["salt_minion"]["conf"]
    root = tmp_path / name
    (root / "pki").mkdir(parents=True)
    conf.update(id=minion_id or conf["id"], master="127.0.0.1", master_port=master.config["ret_port"],
                publish_port=master.config["publish_port"], pki_dir=str(root / "pki"), cachedir=str(root / "cache"),
                sock_dir=str(root / "run"), log_file=str(root / "log"), user=master.config["user"],
                file_client="remote", acceptance_wait_time=1)
    (root / "minion").write_text(yaml.safe_dump(conf))
    return root


def enrol(root, master, seconds):
    """salt-call tries to authenticate for ``seconds`` (it gives up at once while its key is
    pending, a salt-minion would retry by itself); the master's key list says what came of it."""
    deadline = time.monotonic() + seconds
    minion_id = yaml.safe_load((root / "minion").read_text())["id"]
    while time.monotonic() < deadline:
        try:
            run = subprocess.run([pathlib.Path(sys.executable).parent / "salt-call", "-c", str(root), "test.ping"],
                           capture_output=True, timeout=max(1, deadline - time.monotonic()), check=False)
        except subprocess.TimeoutExpired:  # a denied key: salt-call waits for the master to change its mind
            break
        if run.returncode == 0:
            break
        time.sleep(0.5)
    return key_state(master, minion_id)


def _keys(master):
    """The master's key store, read in-process (what salt-key -L reads)."""
    return salt.key.get_key(salt.config.master_config(master.config_file))


def key_state(master, minion_id):
    with _keys(master) as keys:
        return next((state for state, ids in keys.list_keys().items() if minion_id in ids), None)


def accepted_key(master, minion_id):
    with _keys(master) as keys:
        return (keys.key_str(minion_id).get("minions") or {}).get(minion_id, "").strip()


def test_a_minion_enrols_with_its_one_time_value_and_a_replay_is_refused(openstack_master, fake_cloud, tmp_path):
    text = user_data(fake_cloud, "worker1")
    real = minion_from_user_data(openstack_master, tmp_path, "real", text)
    assert enrol(real, openstack_master, 20) == "minions", "worker1 did not enrol with its value"
    assert accepted_key(openstack_master, "worker1") == (real / "pki" / "minion.pub").read_text().strip()
    # A second machine presenting the same value, as worker1 or under a name of its own, stays out.
    enrol(minion_from_user_data(openstack_master, tmp_path, "replay", text), openstack_master, 6)
    assert accepted_key(openstack_master, "worker1") == (real / "pki" / "minion.pub").read_text().strip()
    intruder = minion_from_user_data(openstack_master, tmp_path, "intruder", text, "intruder")
    assert enrol(intruder, openstack_master, 6) == "minions_pre"
    stranger = minion_from_user_data(openstack_master, tmp_path, "stranger",
                                     text.replace("k8sha_enrolment: ", "k8sha_enrolment: x"), "stranger")
    assert enrol(stranger, openstack_master, 6) == "minions_pre"
    log = pathlib.Path(openstack_master.config["log_file"]).read_text()
    refused = [line.split("k8sha_enrolment: ", 1)[1] for line in log.splitlines() if "left unaccepted" in line]
    print("\nrefusals in the master's log:", *refused, sep="\n  ")
    assert any(r.startswith("key of worker1 left unaccepted: replayed enrolment value: it was used by worker1")
               for r in refused)
    assert any(r.startswith("key of intruder left unaccepted: replayed enrolment value") for r in refused)
    assert any(r.startswith("key of stranger left unaccepted: no enrolment value was issued") for r in refused)


def test_salt_cloud_map_creates_only_what_is_missing_at_the_same_address(openstack_master, fake_cloud):
    cloud = openstack_master.salt_cloud_cli(timeout=300)
    destroyed = cloud.run("-y", "-d", "lb2")
    assert destroyed.returncode == 0 and "srv-lb2" not in fake_cloud.servers
    assert not [p for p in fake_cloud.objects["ports"] if p["name"] == "lb2"]
    before = len(fake_cloud.writes)
    created = cloud.run("-y", "-m", str(REPO / "cloud" / "maps" / "openstack.map"))
    assert created.returncode == 0, created.stderr
    assert sorted(s["name"] for s in fake_cloud.servers.values()) == NODES
    assert [(m, p) for m, p, _ in fake_cloud.writes[before:]] == [("POST", "/network/v2.0/ports"),
                                                                  ("POST", "/compute/v2.1/servers")]
    assert addresses(fake_cloud)["lb2"] == ["198.51.100.12"]
