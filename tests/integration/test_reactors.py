"""
Events -> reactor/fault.sls -> heal.admit -> orch.heal, on a real master with the project's
reactor configuration: forged events are refused (k8sha/heal/refused), a forged batched event
is only a hint that the master's own check decides, a storm of events is coalesced into few
repairs, a fault that keeps failing is left to a human (k8sha/heal/needs_human), the
control-plane lock makes a second repair wait (and its event is re-checked later), a repair
never removes what it cannot put back, and join material left by a dead run is removed.
Repairs here only append to a file (heal_dir/restarts).
"""

import json
import os
import pathlib
import subprocess
import threading
import time

from helpers.tls_backends import ApiServerStandIn, self_signed


def restarts(heal_dir):
    path = heal_dir / "restarts"
    return len(path.read_text().splitlines()) if path.exists() else 0


def heal_state(heal_dir):
    path = heal_dir / "heal.json"
    return json.loads(path.read_text()) if path.exists() else {"attempts": {}, "locks": {}, "pending": {}, "counts": {}}


def wait_for(event_listener, master, tag, after, timeout=90):
    events = event_listener.wait_for_events([(master.id, tag)], after_time=after, timeout=timeout)
    assert events.found_all_events, f"no {tag} event in {timeout} s"
    return [e.data for e in events]


def admission_of(event_listener, master, tag, after, timeout=120):
    """What heal.admit returned for the event ``tag`` (the runner's return event)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in event_listener.get_events([(master.id, "salt/run/*/ret")], after_time=after):
            data = event.data
            if data.get("fun") == "runner.heal.admit" and data.get("fun_args") and tag in json.dumps(data["fun_args"]):
                return data["return"]
        time.sleep(0.5)
    raise AssertionError(f"heal.admit did not return for {tag} in {timeout} s")


def test_a_worker_cannot_ask_for_a_control_plane_repair(salt_cli, master, event_listener, heal_dir):
    before, start = restarts(heal_dir), time.time()
    salt_cli.run("event.send", "salt/beacon/worker1/k8sha_apiserver/unhealthy", minion_tgt="worker1")
    refused = wait_for(event_listener, master, "k8sha/heal/refused", start)
    assert refused[0]["reason"] == "worker1 is a worker, this repair is for a control_plane"
    assert refused[0]["fault"] == "apiserver"
    assert restarts(heal_dir) == before


def test_an_event_about_another_node_is_refused(salt_cli, master, event_listener, heal_dir):
    before, start = restarts(heal_dir), time.time()
    salt_cli.run("event.send", "salt/beacon/cp1/k8sha_apiserver/unhealthy", minion_tgt="worker1")
    refused = wait_for(event_listener, master, "k8sha/heal/refused", start)
    assert refused[0]["reason"] == "the event is about cp1 but was sent by worker1"
    assert restarts(heal_dir) == before


def test_a_forged_batched_event_is_only_a_hint_the_masters_check_decides(
        salt_cli, master, event_listener, heal_dir, tmp_path):
    """worker1 sends a batched event (the form beacons use: its data, id included, is written by
    the minion) claiming to be cp1 with its API server unhealthy. The claimed sender matches,
    so it is admitted; the master then has the load balancer probe cp1's /healthz itself, which
    answers 200: nothing is restarted."""
    cert, key = self_signed(tmp_path)
    apiserver = ApiServerStandIn("127.0.0.21", 6443, 200, cert, key)
    try:
        before, start = restarts(heal_dir), time.time()
        forged = {"events": [{"tag": "salt/beacon/cp1/k8sha_apiserver/unhealthy", "data": {"id": "cp1"}}]}
        salt_cli.run("event.send", "ignored", f"preload={json.dumps(forged)}", minion_tgt="worker1")
        admitted = admission_of(event_listener, master, "salt/beacon/cp1/k8sha_apiserver/unhealthy", start)
    finally:
        apiserver.close()
    print("\nheal.admit returned:", admitted)
    assert admitted["admitted"] is True, "the claimed sender matches: it is a hint, not a proof"
    assert [run["found"] for run in admitted["runs"]] == ["nothing to repair: /healthz of cp1 answers 200 from lb1"]
    assert ("GET", "/healthz") in apiserver.requests  # the master's probe, through lb1
    assert restarts(heal_dir) == before
    assert heal_state(heal_dir)["counts"].get("sender_matches", 0) >= 1
    assert not heal_state(heal_dir)["attempts"].get("apiserver:cp1"), "an unconfirmed fault is no attempt"


def test_a_storm_of_events_starts_few_repairs_and_repeated_failures_go_to_a_human(
        salt_cli, master, event_listener, heal_dir):
    """cp1's API server (nothing listens at 127.0.0.21:6443) is reported unhealthy 10 times at
    once. The repair (a restart, then /healthz checked again) cannot succeed here."""
    start, counts_before = time.time(), heal_state(heal_dir).get("counts", {})
    senders = [threading.Thread(target=salt_cli.run, args=("event.send", "salt/beacon/cp1/k8sha_apiserver/unhealthy"),
                                kwargs={"minion_tgt": "cp1"}) for _ in range(10)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    wait_for(event_listener, master, "k8sha/heal/apiserver/result", start)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (heal_state(heal_dir)["locks"] or heal_state(heal_dir)["pending"]):
        time.sleep(0.5)  # the storm is done once no lock is held and nothing waits for a re-check
    counts = heal_state(heal_dir)["counts"]
    coalesced = counts.get("coalesced", 0) - counts_before.get("coalesced", 0)
    orchestrations = counts.get("orchestrations", 0) - counts_before.get("orchestrations", 0)
    print(f"\nstorm of 10: {orchestrations} orchestrations, {coalesced} events coalesced, {restarts(heal_dir)} restarts")
    assert 1 <= orchestrations <= 3 and coalesced >= 7, "one repair at a time; the rest waits for one re-check"
    assert 1 <= restarts(heal_dir) <= 3, "at most max_attempts in the window"
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
    heal = {"fault": "control_plane", "node": "cp1"}
    member = orchestrate(master, "orch.heal", heal)
    assert not member["heal-control_plane-needed"]["changes"]  # a member is left alone
    assert "nothing to repair: cp1: member" in member["heal-control_plane-needed"]["comment"]
    state = heal_state(heal_dir)
    state["locks"]["control_plane"] = {"minion": "cp2", "token": "other", "since": time.time(), "expires": time.time() + 60}
    (heal_dir / "heal.json").write_text(json.dumps(state))
    waited = orchestrate(master, "orch.heal", heal)
    assert waited["heal-control_plane-permitted"]["result"] is False
    assert "cp2 is being repaired (control_plane)" in waited["heal-control_plane-permitted"]["comment"]
    assert heal_state(heal_dir)["locks"]["control_plane"]["token"] == "other"  # not released by this run
    # Not lost: cp1 waits to be re-checked when cp2's repair is done.
    assert [(p["fault"], p["node"]) for p in heal_state(heal_dir)["pending"]["control_plane"].values()] == \
        [("control_plane", "cp1")]
    # The lock expires, and cp1 is half-joined (its kubelet.conf is gone): a rejoin starts, but no
    # other control plane answers for etcd: no snapshot can be taken, so nothing is removed, cp1 is
    # not reset, and the repair stops, recorded as failed.
    state = heal_state(heal_dir)
    state["locks"]["control_plane"]["expires"] = time.time() - 1
    state["pending"] = {}  # (the re-check would race with this step)
    (heal_dir / "heal.json").write_text(json.dumps(state))
    (kube_dir / "kubelet.conf").unlink()
    try:
        tried = orchestrate(master, "orch.heal", heal)
    finally:
        (kube_dir / "kubelet.conf").touch()
    needed = tried["heal-control_plane-needed"]
    assert not needed["changes"] and "no other control plane reports an etcd cluster: nothing to rejoin" in needed["comment"]
    for step in ("etcd-snapshot-taken", "stale-member-removed", "node-reset", "role-applied", "joined"):
        assert not tried[f"heal-control_plane-{step}"]["changes"]
    assert all((kube_dir / name).exists() for name in ("pki/ca.crt", "manifests/etcd.yaml"))
    assert "control_plane" not in heal_state(heal_dir)["locks"]


def test_a_minion_start_of_a_load_balancer_is_not_a_control_plane_matter(master, minions, heal_dir):
    before = heal_state(heal_dir)["counts"].get("orchestrations", 0)
    run = master.salt_run_cli(timeout=60).run("heal.admit", "tag=salt/minion/lb1/start", "sender=lb1")
    assert run.data["admitted"] is False
    assert run.data["reason"] == "lb1 is a loadbalancer, this repair is for a control_plane"
    assert heal_state(heal_dir)["counts"].get("orchestrations", 0) == before


def test_join_material_left_by_a_dead_run_is_removed(master, minions, heal_dir):
    """A master restart in the middle of a join leaves secrets/join/<node>.sls behind (its writer
    is gone): join_material.clean (the reconciliation's first step) removes it and revokes its
    token on a control plane. (Not heal.reconcile itself: its repairs would apply states to the
    minions of this tier, which run on this host.)"""
    # Where kubeadm_cluster.nodes_joined writes it: the master's first pillar root.
    join_dir = pathlib.Path(master.config["pillar_roots"]["base"][0]) / "secrets" / "join"
    join_dir.mkdir(parents=True, exist_ok=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = join_dir / "worker1.sls"
    stale.write_text(f"# writer: {dead.pid} 1\nk8sha_join:\n  worker1:\n    token: abcdef.0123456789abcdef\n")
    alive = join_dir / "cp1.sls"
    alive.write_text(f"# writer: {os.getpid()} {open(f'/proc/{os.getpid()}/stat').read().rsplit(')', 1)[1].split()[19]}\n")
    run = master.salt_run_cli(timeout=120).run("join_material.clean")
    removed = json.loads(run.stdout[run.stdout.index("{"):])["removed"]  # after "No minions matched" (cp2, cp3)
    # (kubeadm is not installed on this tier's control plane: the token cannot be revoked here)
    assert removed == {"worker1": "its token could not be revoked (no control plane did): it expires with its TTL"}
    assert alive.exists()  # its writer runs: a join in progress
    alive.unlink()
    assert not stale.exists()
    text = open(master.config["log_file"]).read()
    assert "join material of worker1 left by a run that died: removed" in text
    assert "0123456789abcdef" not in text  # the token's secret half is never logged
