"""The healing side, pure parts: the fault catalogue, which events may start a repair, locks,
coalescing, damping and the attempt window, stale join material, the beacons' transitions;
the beacons each role gets; the reactor files (one runner each) and the master's reactors."""

import subprocess
import sys

import pytest
import yaml
from helpers import salt_render

from lablib import master as lab_master

load = salt_render.load
healing = load("_utils", "k8sha_heal")
heal_check = load("_modules", "heal_check")
FAULTS = healing.catalogue()
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
    assert healing.node_of(tag) == minion


@pytest.mark.parametrize("tag, fault, detail", [
    ("salt/beacon/lb1/k8sha_haproxy/down", "haproxy", None),
    ("salt/beacon/lb1/service/keepalived", "keepalived", "keepalived"),
    ("salt/beacon/lb1/service/sshd", None, None),
    ("salt/beacon/cp2/inotify//etc/containerd/config.toml", "config", "/etc/containerd/config.toml"),
    ("salt/beacon/cp1/k8sha_apiserver/unhealthy", "apiserver", None),
    ("salt/minion/cp3/start", "control_plane", None),
    ("salt/beacon/cp1/k8sha_apiserver/healthy", None, None),
])
def test_the_catalogue_names_the_fault_and_its_detail_from_the_tag(tag, fault, detail):
    assert healing.fault_of(tag, FAULTS) == fault
    assert (healing.detail_of(FAULTS[fault], tag) if fault else None) == detail


def test_refusals_name_the_reason():
    apiserver = FAULTS["apiserver"]
    assert healing.refusal("apiserver", apiserver, "cp1", "control_plane") is None
    assert healing.refusal("config", FAULTS["config"], "worker1", "worker") is None  # any role
    assert "not a node" in healing.refusal("apiserver", apiserver, "cp9", None)
    assert healing.refusal("apiserver", apiserver, "worker1", "worker") == \
        "worker1 is a worker, this repair is for a control_plane"
    assert healing.refusal(None, None, "cp1", "control_plane") == "no fault of the catalogue has this tag"


@pytest.mark.parametrize("sender, note", [("cp1", "matches"), ("worker1", "mismatch"), (None, "missing"), ("", "missing")])
def test_the_claimed_sender_is_recorded_as_a_hint(sender, note):
    assert healing.sender_note("cp1", sender) == note


def test_only_recent_failures_count():
    attempts = [[100, False], [500, True], [900, False], [950, False]]
    assert healing.recent_failures(attempts, now=1000, window=600) == 2
    assert healing.recent_failures(attempts, now=1000, window=1000) == 3


def test_a_held_lock_coalesces_events_which_come_back_once_each_when_it_frees(tmp_path):
    with healing.store(str(tmp_path)) as data:
        assert healing.claim(data, "haproxy:lb1", "lb1", 1000, 900, "mine") is None
        held = healing.claim(data, "haproxy:lb1", "lb1", 1001, 900, "theirs")
        assert held["token"] == "mine"
        for at in (1001, 1002, 1003):
            healing.coalesce(data, "haproxy:lb1", "haproxy", "lb1", at)
        healing.coalesce(data, "haproxy:lb1", "config", "lb1", 1004, "/etc/haproxy/haproxy.cfg")
        assert data["counts"]["coalesced"] == 4
    with healing.store(str(tmp_path)) as data:  # kept on disk
        assert healing.next_pending(data, "haproxy:lb1") == ("haproxy", "lb1", None)
        assert healing.next_pending(data, "haproxy:lb1") == ("config", "lb1", "/etc/haproxy/haproxy.cfg")
        assert healing.next_pending(data, "haproxy:lb1") is None
        assert healing.release(data, "haproxy:lb1", "theirs") is False
        assert healing.release(data, "haproxy:lb1", "mine") is True and not data["locks"]


def test_a_lock_frees_when_its_process_is_gone_or_it_expires(tmp_path):
    child = subprocess.Popen(["sleep", "30"])
    try:
        lock = {"minion": "cp3", "token": "t", "since": 0, "expires": 2000, "pid": child.pid,
                "pid_start": healing.process_start(child.pid)}
        assert healing.alive(lock, 1000)
        assert not healing.alive(lock, 2001)
        assert not healing.alive({**lock, "pid_start": lock["pid_start"] + 1}, 1000)  # the pid was reused
    finally:
        child.kill()
        child.wait()
    assert not healing.alive(lock, 1000)  # a master restart: its runs are gone, so are their locks


def test_damping_spaces_repairs_and_spacing_spaces_checks_of_one_fault_on_one_node():
    data = {"last_repair": {"haproxy:lb1": 1000}, "last_check": {"haproxy:lb1": 1010}}
    assert healing.wait_after(data, "last_repair", "haproxy:lb1", 20, 1005) == 15
    assert healing.wait_after(data, "last_repair", "haproxy:lb1", 20, 1030) == 0
    assert healing.wait_after(data, "last_repair", "haproxy:lb2", 20, 1005) == 0
    assert healing.wait_after(data, "last_check", "haproxy:lb1", 2, 1011) == 1


def test_history_keeps_the_newest_records_and_vip_moves_only_when_the_holders_change(tmp_path):
    with healing.store(str(tmp_path)) as data:
        for n in range(healing.HISTORY_KEEP + 5):
            healing.record(data, n, "repair", fault="haproxy", node="lb1", ok=True, found="HAProxy is not running")
        assert healing.vip_moved(data, 1000, ["lb1"]) is True
        assert healing.vip_moved(data, 1001, ["lb1"]) is False
        assert healing.vip_moved(data, 1002, ["lb2"]) is True
    with healing.store(str(tmp_path)) as data:
        history = data["history"]
    assert len(history) == healing.HISTORY_KEEP and history[0]["at"] == 7
    assert history[-1] == {"at": 1002, "kind": "vip", "previous": ["lb1"], "holders": ["lb2"]}
    metrics = (tmp_path / "k8sha_heal.prom").read_text()
    assert 'k8sha_repairs_total{fault="haproxy",outcome="repaired"} 505' in metrics
    assert 'k8sha_vip_holder{holder="lb2"} 1' in metrics and 'holder="lb1"' not in metrics
    promtool = subprocess.run(["promtool", "check", "metrics"], input=metrics, capture_output=True, text=True)
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr
    shown = load("_output", "k8sha_history").output(list(reversed(history[-3:])))
    assert shown.splitlines()[0] == "1970-01-01 00:16:42 UTC  vip         VIP held by lb2 (before: lb1)"
    assert "haproxy on lb1: repaired (HAProxy is not running)" in shown.splitlines()[2]


def test_a_node_taken_out_by_remove_node_gets_no_repair_until_it_leaves_the_description(tmp_path):
    with healing.store(tmp_path) as data:
        assert healing.retired_reason(data, "cp3") is None
        data["retired"]["cp3"] = {"at": 0, "by": "orch.remove_node"}
    with healing.store(tmp_path) as data:  # kept in the heal file
        reason = healing.retired_reason(data, "cp3")
        assert "removed by orch.remove_node" in reason and "delete it from pillar/cluster.sls" in reason
        assert healing.retired_reason(data, "cp2") is None


def test_join_material_whose_writer_died_is_stale(tmp_path):
    alive = tmp_path / "cp2.sls"
    alive.write_text(healing.writer_line() + "k8sha_join: {}\n")
    child = subprocess.Popen([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(salt_render.REPO / '_utils')!r}); "
                              f"import k8sha_heal; open({str(tmp_path / 'cp3.sls')!r}, 'w').write(k8sha_heal.writer_line())"])
    child.wait()
    (tmp_path / "worker1.sls").write_text("k8sha_join: {}\n")  # no writer line: from before, stale
    assert [p.name for p in healing.stale_join_files(tmp_path)] == ["cp3.sls", "worker1.sls"]


def test_every_catalogue_entry_has_a_check_and_its_role_exists():
    checks = set(load("_modules", "heal_check").CHECKS)
    assert {e["check"] for e in FAULTS.values()} <= checks
    assert {e["role"] for e in FAULTS.values()} <= {"any", "loadbalancer", "control_plane", "worker"}
    with pytest.raises(ValueError, match="fault broken lacks"):
        bad = salt_render.REPO / "tests" / "unit" / "_bad_faults.yaml"
        try:
            bad.write_text("broken: {tag: x}\n")
            healing.catalogue(bad)
        finally:
            bad.unlink()


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


def test_the_projects_beacons_get_their_socket_and_url_from_the_state_and_ask_no_master(minion):
    """They run in the minion's main process: a master's file server there (a dead one: 180 s)
    would make the minion deaf. The state renders what they need from the one source."""
    desc = salt_render.description()
    desc["api"]["port"] = 16443
    lb = beacon_names(minion(desc, minion_id="lb1").show_sls("beacons"))["k8sha_haproxy"]
    cp = beacon_names(minion(desc, minion_id="cp1").show_sls("beacons"))["k8sha_apiserver"]
    assert beacon_arg(lb, "socket") == salt_render.DEFAULTS["k8sha"]["haproxy"]["stats_socket"]
    assert beacon_arg(cp, "url") == "https://127.0.0.1:16443/healthz"
    assert haproxy_beacon.validate([{"interval": 2}])[0] is False
    assert "state.apply beacons" in apiserver_beacon.validate([{"interval": 2}])[1]
    asked = []
    haproxy_beacon.__salt__ = {"lb_status.haproxy_backends": lambda path: asked.append(path) or
                               {"running": False, "reason": "gone", "servers": []}}
    haproxy_beacon.__context__ = {}
    assert haproxy_beacon.beacon([{"socket": "/run/x.sock"}])[0]["tag"] == "down" and asked == ["/run/x.sock"]


@pytest.mark.parametrize("reactor, tag, runner, args", [
    ("fault", "salt/beacon/lb1/k8sha_haproxy/down", "heal.admit", {"tag": "salt/beacon/lb1/k8sha_haproxy/down", "sender": "lb1"}),
    ("fault", "salt/minion/cp3/start", "heal.admit", {"tag": "salt/minion/cp3/start", "sender": "lb1"}),
    ("heal_recheck", "k8sha/heal/recheck", "heal.recheck", {"lock": "control_plane"}),
    ("keepalived_state", "k8sha/keepalived/state", "cluster.split_brain", None),
])
def test_each_reactor_only_hands_the_event_to_one_runner(minion, reactor, tag, runner, args):
    text = (salt_render.REPO / "reactor" / f"{reactor}.sls").read_text()
    data = {"id": "lb1", "lock": "control_plane", "_stamp": "2026-01-01T00:00:00"}
    rendered = minion(salt_render.description()).call(
        "file.apply_template_on_contents", contents=text, template="jinja",
        context={"tag": tag, "data": data}, defaults={}, saltenv="base")
    reaction = yaml.safe_load(rendered)
    assert len(reaction) == 1
    body = next(iter(reaction.values()))
    assert list(body) == [f"runner.{runner}"]
    if args is not None:
        given = {}
        for item in body[f"runner.{runner}"][0]["args"]:
            given.update(item)
        assert given == args


def test_the_masters_reactors_cover_the_catalogue_and_nothing_else_reaches_a_repair():
    reactions = {tag: files for item in healing.master_reactors(FAULTS) for tag, files in item.items()}
    assert {t for t, f in reactions.items() if f == ["salt://reactor/fault.sls"]} == {e["tag"] for e in FAULTS.values()}
    assert lab_master.master_config()["reactor"] == healing.master_reactors(FAULTS)
    assert lab_master.master_config()["schedule"]["k8sha-reconcile"]["function"] == "heal.reconcile"


def test_the_member_of_a_node_is_found_by_its_peer_url():
    members = [{"name": "cp1", "peer_urls": ["https://198.51.100.21:2380"]},
               {"name": "", "id": "9f", "peer_urls": ["https://198.51.100.22:2380/"]}]
    assert heal_check.member_at(members, "198.51.100.21", 2380)["name"] == "cp1"
    assert heal_check.member_at(members, "198.51.100.22", 2380)["id"] == "9f"
    assert heal_check.member_at(members, "198.51.100.23", 2380) is None
    assert heal_check.member_at(members, "198.51.100.21", 12380) is None


def test_the_documented_remediation_table_is_the_catalogues():
    readme = (salt_render.REPO / "docs" / "events-and-healing.md").read_text()
    start = readme.index("<!-- remediation table: generated from salt/k8sha/faults.yaml")
    table = readme[readme.index("\n", start) + 1:readme.index("<!-- end of the remediation table -->")].strip()
    assert table == healing.remediation_table(FAULTS), "run python3 _utils/k8sha_heal.py and paste its table"


@pytest.mark.parametrize("files, member, real, says", [
    ("absent", {"name": "cp3", "id": "9f", "healthy": False}, True, "cp3: etcd member not healthy; kubeadm's files: absent"),
    ("half-joined", None, True, "cp3: no etcd member; kubeadm's files: half-joined"),
    ("member", None, True, "cp3: no etcd member; kubeadm's files: member"),  # its member was removed
    ("half-joined", {"name": "cp3", "id": "9f", "healthy": True}, False, "is healthy"),  # a manifest moved away
    ("member", {"name": "cp3", "id": "9f", "healthy": False}, False, "etcd restarting is not a rejoin; left alone"),
    ("member", "no cluster", False, "no other control plane reports an etcd cluster: nothing to rejoin"),
])
def test_a_control_plane_is_a_member_when_etcd_says_so_not_kubeadms_files(files, member, real, says):
    """The rejoin check: etcd's member list and that member's health (asked through another
    control plane) decide; kubeadm's files only say how the node looks."""
    check = load("_modules", "heal_check")
    membership = None if member == "no cluster" else {"members": [], "health": {}}
    found = member if isinstance(member, dict) else None

    def cmd(targets, fun, arg=(), tgt_type=None, timeout=None, kwarg=None):
        answers = {"kubeadm_member.status": {"state": files, "reason": "as found"},
                   "etcd_cluster.membership": membership, "test.ping": True}
        return {t: {"ret": answers[fun], "retcode": 0} for t in targets if answers[fun] is not None}
    check.__opts__ = {"test": False}
    check.__salt__ = {
        "saltutil.cmd": cmd,
        "cluster_topology.members": lambda role: ["cp1", "cp2", "cp3"],
        "cluster_topology.description": lambda: {"nodes": [{"name": "cp3", "address": "198.51.100.23"}]},
        "cluster_topology.settings": lambda: {"ports": {"etcd_peer": 2380}},
    }
    check.member_at = lambda members, address, port: found
    result = check.fault("control_plane_rejoin", "cp3")
    assert result["real"] is real and says in result["reason"], result


def test_the_documented_master_configuration_reacts_as_the_labs_master():
    readme = (salt_render.REPO / "docs" / "architecture.md").read_text()
    block = readme[readme.index("\nreactor:", readme.index("Point the salt-master at the tree")):]
    block = block[:block.index("```")]
    listed = yaml.safe_load(block)
    assert listed["reactor"] == healing.master_reactors(FAULTS) == lab_master.reactors()
    assert listed["schedule"] == healing.master_schedule() == lab_master.schedule()


def test_join_material_of_another_masters_machine_is_stale_only_after_the_lock_ttl(tmp_path):
    """Several masters share the pillar: a pid of another machine means nothing here."""
    path = tmp_path / "cp2.sls"
    path.write_text(f"{healing.WRITER} 1 12345 another-machine-id\nk8sha_join: {{}}\n")
    assert healing.stale_join_files(tmp_path, foreign_after=900) == []
    assert healing.stale_join_files(tmp_path, foreign_after=900, now=path.stat().st_mtime + 901) == [path]
    here = tmp_path / "cp3.sls"
    here.write_text(f"{healing.WRITER} 999999999 1 {healing.this_machine()}\nk8sha_join: {{}}\n")
    assert healing.stale_join_files(tmp_path) == [here]  # this machine's, its writer gone: at once
