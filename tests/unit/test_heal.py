"""The healing side, pure parts: which events may start a repair, the attempt window, the
beacons' transitions; the beacons each role gets; the reactor files (one reaction each)."""

import pytest
import yaml

import salt_render

load = salt_render.load
heal = load("_states", "heal")
haproxy_beacon = load("_beacons", "k8sha_haproxy")
apiserver_beacon = load("_beacons", "k8sha_apiserver")
CP1 = {"name": "cp1", "role": "control_plane"}


@pytest.mark.parametrize("tag, minion", [
    ("salt/beacon/lb1/k8sha_haproxy/down", "lb1"),
    ("salt/beacon/cp2/inotify//etc/containerd/config.toml", "cp2"),
    ("salt/minion/cp3/start", "cp3"),
    ("k8sha/keepalived/state", None),
    ("salt/presence/change", None),
])
def test_the_node_an_event_is_about_comes_from_its_tag(tag, minion):
    assert heal.minion_of(tag) == minion


def test_refusals_name_the_reason():
    assert heal.refusal(CP1, "control_plane", "cp1", "cp1") is None
    assert heal.refusal(CP1, None, "cp1", None) is None
    assert "not a node" in heal.refusal(None, "control_plane", "cp9", "cp9")
    assert heal.refusal({"name": "worker1", "role": "worker"}, "control_plane", "worker1", "worker1") == \
        "worker1 is a worker, this repair is for a control_plane"
    assert heal.refusal(CP1, "control_plane", "cp1", "worker1") == "the event is about cp1 but was sent by worker1"


def test_only_recent_failures_count():
    attempts = [[100, False], [500, True], [900, False], [950, False]]
    assert heal.recent_failures(attempts, now=1000, window=600) == 2
    assert heal.recent_failures(attempts, now=1000, window=1000) == 3


def backends(*statuses, running=True):
    return {"running": running, "servers": [{"name": f"cp{i + 1}", "status": s} for i, s in enumerate(statuses)]}


def test_haproxy_beacon_reports_down_once_then_reminds_then_up_and_backend_changes():
    down = {"running": False, "reason": "stats socket missing", "servers": []}
    assert haproxy_beacon.transitions(None, down, 10, 0, 60) == [{"tag": "down", "reason": "stats socket missing"}]
    assert haproxy_beacon.transitions(down, down, 20, 10, 60) == []          # no repeat within 60 s
    assert haproxy_beacon.transitions(down, down, 75, 10, 60)[0]["tag"] == "down"  # reminder
    assert haproxy_beacon.transitions(down, backends("UP", "UP"), 80, 75, 60) == [{"tag": "up"}]
    changed = haproxy_beacon.transitions(backends("UP", "UP"), backends("UP", "DOWN"), 90, 0, 60)
    assert changed == [{"tag": "backend", "server": "cp2", "status": "DOWN", "previous": "UP"}]
    # "UP 1/2" while rising is still UP: not a change.
    assert haproxy_beacon.transitions(backends("UP", "DOWN"), backends("UP", "DOWN 1/2"), 91, 0, 60) == []


def test_apiserver_beacon_needs_fall_failures_and_rise_successes():
    state = {"healthy": True, "failures": 0, "successes": 0, "sent": 0}
    events = []
    for now, ok in enumerate([False, False, False, False, True, True, True]):
        state, new = apiserver_beacon.step(state, ok, fall=3, rise=2, now=now, remind=60)
        events += [(now, e["tag"]) for e in new]
    assert events == [(2, "unhealthy"), (5, "healthy")]
    state = {"healthy": False, "failures": 5, "successes": 0, "sent": 0}
    assert apiserver_beacon.step(state, False, 3, 2, now=61, remind=60)[1][0]["tag"] == "unhealthy"


def beacon_names(states):
    return {next(i["name"] for i in body["beacon"] if isinstance(i, dict) and "name" in i): body
            for body in states.values() if "beacon" in body}


def beacon_arg(body, key):
    return next(i[key] for i in body["beacon"] if isinstance(i, dict) and key in i)


@pytest.mark.parametrize("minion_id, beacons, files", [
    ("lb1", {"inotify", "k8sha_haproxy", "service"},
     {"/etc/haproxy/haproxy.cfg", "/etc/keepalived/keepalived.conf", "/etc/firewalld/zones/k8sha.xml"}),
    ("cp1", {"inotify", "k8sha_apiserver"},
     {"/etc/containerd/config.toml", "/etc/kubernetes/k8sha-kubeadm.yaml", "/etc/firewalld/zones/k8sha.xml"}),
    ("worker1", {"inotify"}, {"/etc/containerd/config.toml", "/etc/firewalld/zones/k8sha.xml"}),
])
def test_each_role_watches_its_daemons_and_the_files_salt_manages(minion, minion_id, beacons, files):
    states = minion(salt_render.description(), minion_id=minion_id).show_sls("beacons")
    found = beacon_names(states)
    assert set(found) == beacons
    assert set(beacon_arg(found["inotify"], "files")) == files
    for body in found.values():  # Salt's own changes never trigger a repair
        assert beacon_arg(body, "disable_during_state_run") is True


@pytest.mark.parametrize("reactor, tag, orchestration", [
    ("haproxy_down", "salt/beacon/lb1/k8sha_haproxy/down", "orch.heal_haproxy"),
    ("service_stopped", "salt/beacon/lb1/service/keepalived", "orch.heal_keepalived"),
    ("config_drift", "salt/beacon/lb1/inotify//etc/haproxy/haproxy.cfg", "orch.heal_config"),
    ("apiserver_unhealthy", "salt/beacon/cp1/k8sha_apiserver/unhealthy", "orch.heal_apiserver"),
    ("node_back", "salt/minion/cp3/start", "orch.heal_control_plane"),
    ("node_lost", "salt/presence/change", "orch.heal_node_lost"),
])
def test_each_reactor_only_starts_its_orchestration_with_tag_and_sender(minion, reactor, tag, orchestration):
    text = (salt_render.REPO / "reactor" / f"{reactor}.sls").read_text()
    data = {"id": "lb1", "lost": ["cp2"], "_stamp": "2026-01-01T00:00:00"}
    rendered = minion(salt_render.description()).call(
        "file.apply_template_on_contents", contents=text, template="jinja",
        context={"tag": tag, "data": data}, defaults={}, saltenv="base")
    reaction = yaml.safe_load(rendered)
    assert len(reaction) == 1
    body = next(iter(reaction.values()))
    assert list(body) == ["runner.state.orchestrate"]
    args = body["runner.state.orchestrate"][0]["args"]
    assert args[0] == {"mods": orchestration}
    assert args[1]["pillar"]["heal"]["tag"] == tag
    assert args[1]["pillar"]["heal"]["sender"] == "lb1"


def test_the_member_of_a_node_is_found_by_its_peer_url():
    members = [{"name": "cp1", "peer_urls": ["https://198.51.100.21:2380"]},
               {"name": "", "id": "9f", "peer_urls": ["https://198.51.100.22:2380/"]}]
    assert heal.member_at(members, "198.51.100.21", 2380)["name"] == "cp1"
    assert heal.member_at(members, "198.51.100.22", 2380)["id"] == "9f"
    assert heal.member_at(members, "198.51.100.23", 2380) is None
    assert heal.member_at(members, "198.51.100.21", 12380) is None
