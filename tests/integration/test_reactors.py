"""
Events -> reactors -> healing orchestrations, on a real master with the project's reactor
configuration: forged events are refused (k8sha/heal/refused), a storm of events starts few
repairs, a fault that keeps failing is left to a human (k8sha/heal/needs_human), the
control-plane lock makes a second repair wait and a repair never removes what it cannot
put back. Repairs here only append to a file (heal_dir/restarts).
"""

import json
import threading
import time


def restarts(heal_dir):
    path = heal_dir / "restarts"
    return len(path.read_text().splitlines()) if path.exists() else 0


def heal_state(heal_dir):
    path = heal_dir / "heal.json"
    return json.loads(path.read_text()) if path.exists() else {"attempts": {}, "locks": {}}


def wait_for(event_listener, master, tag, after, timeout=90):
    events = event_listener.wait_for_events([(master.id, tag)], after_time=after, timeout=timeout)
    assert events.found_all_events, f"no {tag} event in {timeout} s"
    return [e.data for e in events]


def test_a_worker_cannot_ask_for_a_control_plane_repair(salt_cli, master, event_listener, heal_dir):
    before, start = restarts(heal_dir), time.time()
    salt_cli.run("event.send", "salt/beacon/worker1/k8sha_apiserver/unhealthy", minion_tgt="worker1")
    refused = wait_for(event_listener, master, "k8sha/heal/refused", start)
    assert refused[0]["reason"] == "worker1 is a worker, this repair is for a control_plane"
    assert refused[0]["kind"] == "apiserver"
    assert restarts(heal_dir) == before


def test_an_event_about_another_node_is_refused(salt_cli, master, event_listener, heal_dir):
    before, start = restarts(heal_dir), time.time()
    salt_cli.run("event.send", "salt/beacon/cp1/k8sha_apiserver/unhealthy", minion_tgt="worker1")
    refused = wait_for(event_listener, master, "k8sha/heal/refused", start)
    assert refused[0]["reason"] == "the event is about cp1 but was sent by worker1"
    assert restarts(heal_dir) == before


def test_a_storm_of_events_starts_few_repairs_and_repeated_failures_go_to_a_human(
        salt_cli, master, event_listener, heal_dir):
    """cp1's API server (nothing listens at 127.0.0.21:6443) is reported unhealthy 10 times at
    once. The repair (a restart, then /healthz checked again) cannot succeed here."""
    start = time.time()
    senders = [threading.Thread(target=salt_cli.run, args=("event.send", "salt/beacon/cp1/k8sha_apiserver/unhealthy"),
                                kwargs={"minion_tgt": "cp1"}) for _ in range(10)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    wait_for(event_listener, master, "k8sha/heal/apiserver/result", start)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and heal_state(heal_dir)["locks"]:
        time.sleep(0.5)  # every orchestration of the storm is done once no lock is held
    assert 1 <= restarts(heal_dir) <= 3, "one repair at a time, at most max_attempts in the window"
    # More reports: each one a failed repair, until the third failure; then a human is asked.
    for _ in range(3):
        if restarts(heal_dir) >= 3:
            break
        sent = time.time()
        salt_cli.run("event.send", "salt/beacon/cp1/k8sha_apiserver/unhealthy", minion_tgt="cp1")
        wait_for(event_listener, master, "k8sha/heal/apiserver/result", sent)
    assert restarts(heal_dir) == 3
    sent = time.time()
    salt_cli.run("event.send", "salt/beacon/cp1/k8sha_apiserver/unhealthy", minion_tgt="cp1")
    human = wait_for(event_listener, master, "k8sha/heal/needs_human", sent)
    assert human[0]["minion"] == "cp1" and "left to a human" in human[0]["reason"]
    time.sleep(3)
    assert restarts(heal_dir) == 3


def orchestrate(master, mods, heal):
    run = master.salt_run_cli(timeout=180).run("state.orchestrate", mods, f"pillar={json.dumps({'heal': heal})}")
    # Salt prints "No minions matched the target" before the JSON when a step asks absent minions.
    data = json.loads(run.stdout[run.stdout.index("{"):])
    states = next(iter(data["data"].values()))
    return {v["__id__"]: v for v in states.values()}


def test_one_control_plane_repair_at_a_time_and_nothing_removed_without_a_quorum(master, minions, heal_dir, kube_dir):
    heal = {"tag": "salt/minion/cp1/start", "sender": "cp1"}
    member = orchestrate(master, "orch.heal_control_plane", heal)
    assert not member["heal-control-plane-needed"]["changes"]  # a member is left alone
    assert "nothing to repair: cp1: member" in member["heal-control-plane-needed"]["comment"]
    state = heal_state(heal_dir)
    state["locks"]["control_plane"] = {"minion": "cp2", "token": "other", "since": time.time(), "expires": time.time() + 60}
    (heal_dir / "heal.json").write_text(json.dumps(state))
    waited = orchestrate(master, "orch.heal_control_plane", heal)
    assert waited["heal-control-plane-permitted"]["result"] is False
    assert "cp2 is being repaired (control_plane)" in waited["heal-control-plane-permitted"]["comment"]
    assert heal_state(heal_dir)["locks"]["control_plane"]["token"] == "other"  # not released by this run
    # The lock expires, and cp1 is half-joined (its kubelet.conf is gone): a rejoin starts, but no
    # other control plane answers for etcd: no snapshot can be taken, so nothing is removed, cp1 is
    # not reset, and the repair stops, recorded as failed.
    state = heal_state(heal_dir)
    state["locks"]["control_plane"]["expires"] = time.time() - 1
    (heal_dir / "heal.json").write_text(json.dumps(state))
    (kube_dir / "kubelet.conf").unlink()
    try:
        tried = orchestrate(master, "orch.heal_control_plane", heal)
    finally:
        (kube_dir / "kubelet.conf").touch()
    assert tried["heal-control-plane-needed"]["changes"]
    snapshot = tried["heal-control-plane-etcd-snapshot-taken"]
    assert snapshot["result"] is False and "no control plane with a healthy etcd member" in snapshot["comment"]
    removal = tried["heal-control-plane-stale-member-removed"]
    assert removal["result"] is False and not removal["changes"]  # never ran: its requisite failed
    assert tried["heal-control-plane-node-reset"]["result"] is False  # never ran: its requisite failed
    assert not tried["heal-control-plane-node-reset"]["changes"]
    assert all((kube_dir / name).exists() for name in ("pki/ca.crt", "manifests/etcd.yaml"))
    assert tried["heal-control-plane-failed"]["result"] is True
    assert "control_plane" not in heal_state(heal_dir)["locks"]


def test_a_minion_start_of_a_load_balancer_is_not_a_control_plane_matter(master, minions):
    states = orchestrate(master, "orch.heal_control_plane", {"tag": "salt/minion/lb1/start", "sender": "lb1"})
    assert list(states) == ["heal-control-plane-not-a-control-plane"]
    assert states["heal-control-plane-not-a-control-plane"]["result"] is True
