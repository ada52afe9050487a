"""
Healing in the lab, both layers: systemd restarts what crashes; beacons -> reactor ->
heal.admit -> orch.heal repair what systemd cannot (a stopped daemon, a hand-edited config, a
control-plane machine destroyed and re-created by salt-cloud, even across a master restart),
and forged events change nothing.
Times are measured in bench/heal.py; the timeouts here only bound a broken system.
"""

import json
import subprocess
import threading
import time

from helpers.lab_session import API_PORT, LAB_CLI, LOAD_BALANCERS, REPO, VIP, config, master

CONTROL_PLANES = ("cp1", "cp2", "cp3")


class EventLog:
    """Events with tags matching a pattern on the master's bus, while the block runs. The block
    starts once the listener has seen a marker event: salt-run takes seconds to subscribe."""

    MARKER = "listener-ready"

    def __init__(self, tagmatch):
        self.tagmatch, self.lines, self._chunks = tagmatch, "", []

    def __enter__(self):
        self.proc = subprocess.Popen(
            master.salt_command("salt-run", "state.event", f"tagmatch={self.tagmatch}", "count=-1", "--out=json"),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        reader = threading.Thread(target=lambda: self._chunks.extend(iter(self.proc.stdout.readline, "")), daemon=True)
        reader.start()
        marker = self.tagmatch.replace("*", self.MARKER)
        deadline = time.monotonic() + 60
        while not any(marker in chunk for chunk in self._chunks):
            assert time.monotonic() < deadline, f"salt-run state.event did not see {marker} within 60 s"
            master.salt_json("salt-run", "event.send", marker, timeout=60)
            time.sleep(1)
        self._reader = reader
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        self.lines = "".join(self._chunks)


def active(box, unit):
    return box.exec("systemctl", "is-active", unit, check=False).stdout.strip() == "active"


def test_systemd_restarts_a_crashed_keepalived_without_salt(lab):
    box = lab.machine(lab.other(lab.one_holder()))
    before = int(box.exec("systemctl", "show", "-p", "NRestarts", "--value", "keepalived").stdout)
    box.exec("systemctl", "kill", "--signal=KILL", "keepalived")
    lab.wait_for(lambda: active(box, "keepalived") and
                 int(box.exec("systemctl", "show", "-p", "NRestarts", "--value", "keepalived").stdout) == before + 1,
                 10, "systemd to restart keepalived")


def test_a_stopped_haproxy_is_started_again_by_salt(lab):
    holder = lab.one_holder()
    box = lab.machine(holder)
    with EventLog("k8sha/heal/*") as events:
        box.exec("systemctl", "stop", "haproxy")  # a stop: systemd does not restart it
        lab.wait_for(lambda: lab.vip_holders() == [lab.other(holder)], 10, f"the VIP to leave {holder}")
        lab.wait_for(lambda: active(box, "haproxy"), 60, f"Salt to start HAProxy on {holder} again", interval=1)
        lab.wait_for(lambda: all(active(lab.machine(lb), "haproxy") for lb in LOAD_BALANCERS), 10, "HAProxy on both")
        time.sleep(3)
    assert lab.through_vip() == "ok"
    assert "k8sha/heal/haproxy/result" in events.lines and '"ok": true' in events.lines, events.lines


def test_a_hand_edited_haproxy_config_is_put_back(lab):
    box = lab.machine("lb2")
    original = box.exec("cat", "/etc/haproxy/haproxy.cfg").stdout
    box.exec("sh", "-c", "echo '# edited by hand' >> /etc/haproxy/haproxy.cfg")
    lab.wait_for(lambda: box.exec("cat", "/etc/haproxy/haproxy.cfg").stdout == original, 60,
                 "Salt to put haproxy.cfg back", interval=1)


def test_a_repair_whose_node_stops_answering_mid_run_ends_and_frees_its_lock(lab):
    """The node's minion is frozen (as a hung or powered-off machine) just as the repair's state
    run is sent: the repair ends as failed once Salt's find_job gets no answer
    (heal:state_run_timeout + gather_job_timeout, about 70 s), not after heal:node_jobs_timeout,
    and frees its lock; HAProxy runs again once the minion answers."""
    box = lab.machine("lb2")
    offset = master_log_size()
    sent = "Executing state salt.state for [heal-haproxy-repaired]"
    box.exec("systemctl", "stop", "haproxy")
    lab.wait_for(lambda: sent in master_log_since(offset), 60, "the repair's state run to be sent", interval=0.05)
    box.exec("systemctl", "kill", "--signal=STOP", "salt-minion")
    frozen = time.monotonic()
    try:
        def outcome():
            return next((line for line in master_log_since(offset).splitlines() if "heal: haproxy of lb2:" in line), None)
        ended = lab.wait_for(outcome, 300, "the repair of HAProxy on lb2 to end")
        print(f"\nthe repair ended {time.monotonic() - frozen:.0f} s after lb2's minion froze: {ended.split('heal: ')[-1]}")
        assert ended.endswith("(orch.heal failed)"), "the state run returned before the minion froze: " + ended
        data, _ = master.salt_json("salt-run", "heal.status")
        status = data.get("data", data)
        assert "haproxy:lb2" not in status["locks"] and "haproxy:lb2" not in status["etcd_locks"], status
    finally:
        box.exec("systemctl", "kill", "--signal=CONT", "salt-minion")
    lab.wait_for(lambda: active(box, "haproxy"), 120, "HAProxy on lb2 once its minion answers", interval=1)


def test_a_stopped_keepalived_is_started_again_by_salt(lab):
    box = lab.machine(lab.other(lab.one_holder()))
    box.exec("systemctl", "stop", "keepalived")
    lab.wait_for(lambda: active(box, "keepalived"), 60, "Salt to start keepalived again", interval=1)
    assert len(lab.vip_holders()) == 1


def etcd_health(lab, asked="cp1"):
    answer = lab.salt(asked, "etcd_cluster.health").get(asked)
    return answer if isinstance(answer, dict) else {}


def master_log_since(offset):
    """The master's log from byte ``offset`` (master_log_size) on, without reading what is before it."""
    with open(config.MASTER_DIR / "log" / "master", "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def master_log_size():
    path = config.MASTER_DIR / "log" / "master"
    return path.stat().st_size if path.exists() else 0


def test_forged_events_change_nothing(lab):
    """Plain events carry the sender the master authenticated; batched events (the form beacons
    use) carry whatever the minion wrote, id included. Either way the master acts only on what it
    checks itself."""
    members = sorted(m["name"] for m in lab.salt("cp1", "etcd_cluster.members")["cp1"])
    apiserver_started = lab.machine("cp1").exec("systemctl", "show", "-p", "ActiveEnterTimestampMonotonic",
                                                "k8sha-standin-apiserver").stdout
    offset = master_log_size()
    with EventLog("k8sha/heal/*") as events:
        # A worker claims that cp2 was replaced, and that its own API server is unhealthy.
        lab.salt("worker1", "event.send", "salt/minion/cp2/start")
        lab.salt("worker1", "event.send", "salt/beacon/worker1/k8sha_apiserver/unhealthy")
        # ... and, batched and in cp1's name, that cp1's API server is unhealthy.
        forged = {"events": [{"tag": "salt/beacon/cp1/k8sha_apiserver/unhealthy", "data": {"id": "cp1"}}]}
        lab.salt("worker1", "event.send", "ignored", f"preload={json.dumps(forged)}")
        lab.wait_for(lambda: "heal: apiserver of cp1:" in master_log_since(offset), 90,
                     "the master to check cp1 itself", interval=1)
        time.sleep(3)
    logged = [line.split("]", 1)[-1].strip() for line in master_log_since(offset).splitlines()
              if "heal:" in line]
    print("\nthe master's log:", *logged, sep="\n  ")
    assert "the event is about cp2 but was sent by worker1" in events.lines, events.lines
    assert "worker1 is a worker, this repair is for a control_plane" in events.lines, events.lines
    assert any("apiserver repair of cp1 admitted" in line for line in logged), logged
    assert any("apiserver of cp1: nothing to repair: /healthz of cp1 answers 200 from lb1, lb2" in line
               for line in logged), logged
    assert "k8sha/heal/apiserver/result" not in events.lines, events.lines  # no repair was made
    assert sorted(m["name"] for m in lab.salt("cp1", "etcd_cluster.members")["cp1"]) == members
    assert lab.salt("cp2", "kubeadm_member.status")["cp2"]["state"] == "member"
    assert lab.machine("cp1").exec("systemctl", "show", "-p", "ActiveEnterTimestampMonotonic",
                                   "k8sha-standin-apiserver").stdout == apiserver_started


def test_a_destroyed_control_plane_is_recreated_by_salt_cloud_and_rejoins(lab):
    """cp3 is destroyed and made again under the same name: its start event starts the
    rejoin (stale etcd member removed, role applied, join with fresh material), with no
    human step; the API answers through the VIP throughout."""
    prober = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{config.MASTER_NS}", "--", str(REPO / ".venv/bin/python"),
         str(REPO / "bench/probe.py"), "--host", VIP, "--port", str(API_PORT), "--duration", "300",
         "--interval", "0.2"],
        stdout=subprocess.PIPE, text=True)
    snapshots = config.MASTER_DIR / "cache" / "k8sha-etcd-snapshots"
    before = set(snapshots.glob("*.db"))
    subprocess.run([LAB_CLI, "salt-cloud", "-y", "-d", "cp3"], check=True, capture_output=True)
    assert not lab.machine("cp3").running
    subprocess.run([LAB_CLI, "salt-cloud", "-p", "lab-control-plane", "cp3"], check=True, capture_output=True)
    recreated = time.monotonic()

    def rejoined():
        health = etcd_health(lab)
        members = lab.salt("cp1", "etcd_cluster.members").get("cp1") or []
        return (len(health) == 3 and all(h["healthy"] for h in health.values())
                and sorted(m["name"] for m in members) == list(CONTROL_PLANES))
    lab.wait_for(rejoined, 240, "cp3 rejoined with 3 healthy etcd members", interval=3)
    print(f"\ncp3 rejoined {time.monotonic() - recreated:.0f} s after it was re-created")
    assert lab.salt("cp3", "kubeadm_member.status")["cp3"]["state"] == "member"
    # Before the stale member was removed, a snapshot of etcd was taken on a healthy member and kept
    # on the master (0600); it is a valid etcd snapshot.
    taken = sorted(set(snapshots.glob("*.db")) - before)
    print(f"snapshot before the membership change: {taken}")
    assert taken and not taken[0].name.endswith("-cp3.db") and taken[0].stat().st_mode & 0o077 == 0
    status = subprocess.run(["etcdctl", "snapshot", "status", str(taken[0]), "-w", "json"], capture_output=True,
                            text=True, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
    assert status.returncode == 0 and json.loads(status.stdout)["totalKey"] > 0, status.stderr
    prober.terminate()
    results = json.loads(prober.communicate(timeout=30)[0])
    failed = [r for r in results if not r[1]]
    assert len(failed) <= 3, failed  # the API answered through the VIP throughout
    lab.wait_for(lambda: master.salt_json("salt-run", "state.orch", "orch.verify")[1] == 0, 120,
                 "orch.verify to pass", interval=5)



def test_a_rejoin_cut_by_a_master_restart_completes_after_it_without_help(lab):
    """cp2 is re-created; its rejoin starts from its start event. Once its stale etcd member is
    removed (the rejoin is half-way), the salt-master is restarted: the run dies with it, and with
    it its lock. cp2 is found no member again (its start event on reconnecting, or the master's
    reconciliation), and the rejoin completes."""
    subprocess.run([LAB_CLI, "salt-cloud", "-y", "-d", "cp2"], check=True, capture_output=True)
    subprocess.run([LAB_CLI, "salt-cloud", "-p", "lab-control-plane", "cp2"], check=True, capture_output=True)

    def member_names():
        return sorted(m["name"] for m in lab.salt("cp1", "etcd_cluster.members").get("cp1") or [])
    lab.wait_for(lambda: "cp2" not in member_names(), 180, "the rejoin to remove cp2's stale etcd member", interval=1)
    offset = master_log_size()
    master.stop()
    master.start(pillar_dir=lab.pillar_dir)
    restarted = time.monotonic()

    def rejoined():
        health = etcd_health(lab)
        return (len(health) == 3 and all(h["healthy"] for h in health.values())
                and member_names() == list(CONTROL_PLANES))
    lab.wait_for(rejoined, 400, "cp2 rejoined after the master restart", interval=3)
    print(f"\ncp2 rejoined {time.monotonic() - restarted:.0f} s after the master restart")

    def healing_lines():
        return [line.split("]", 1)[-1].strip() for line in master_log_since(offset).splitlines() if "heal:" in line]

    # Found again after the restart, by cp2's start event (a minion announces itself when it
    # reconnects to a restarted master) or by the reconciliation, and repaired by a new run. How far
    # the cut run got decides what is found: no member, or the member its join had added, not healthy.
    # The run logs its outcome after its verification, a moment after etcd has its 3 members.
    def repaired_by_a_new_run():
        return any(("control_plane of cp2: cp2: no etcd member" in line
                    or "control_plane of cp2: cp2: etcd member not healthy" in line) and "(orch.heal succeeded)" in line
                   for line in healing_lines())
    try:
        lab.wait_for(repaired_by_a_new_run, 120, "the repair's outcome in the master's log", interval=2)
    finally:
        print("the master's log after the restart:", *healing_lines()[:14], sep="\n  ")
    assert lab.salt("cp2", "kubeadm_member.status")["cp2"]["state"] == "member"
    assert not list(lab.join_material_dir.glob("*.sls")), "no join material outlives its join"
    lab.wait_for(lambda: master.salt_json("salt-run", "state.orch", "orch.verify")[1] == 0, 120,
                 "orch.verify to pass", interval=5)


UNITS = {"loadbalancer": ("haproxy", "keepalived", "firewalld"),
         "control_plane": ("k8sha-standin-apiserver", "k8sha-standin-etcd", "kubelet", "containerd", "firewalld"),
         "worker": ("kubelet", "containerd", "firewalld")}
ROLES = {"lb1": "loadbalancer", "lb2": "loadbalancer", "cp1": "control_plane", "cp2": "control_plane",
         "cp3": "control_plane", "worker1": "worker"}


def machines_state(lab, since):
    """What a dry run must not touch: etcd's members, when every daemon last started, the files
    under /etc and the project's helpers changed since ``since``, the master's repair records."""
    members = sorted(m["id"] for m in lab.salt("cp1", "etcd_cluster.members")["cp1"])
    units, changed = {}, {}
    for name, role in ROLES.items():
        box = lab.machine(name)
        units[name] = box.exec("systemctl", "show", "-p", "ActiveEnterTimestampMonotonic", "-p", "NRestarts",
                               *UNITS[role]).stdout
        changed[name] = box.exec("find", "/etc", "/usr/local/libexec/k8sha", "-type", "f", "-newermt", f"@{since}",
                                 check=False).stdout.split()
    records = sorted((config.MASTER_DIR / "cache" / "k8sha-heal").glob("*.json"))
    return {"members": members, "units": units, "changed": changed, "records": [p.read_text() for p in records]}


def dry_run(mods, pillar=None):
    args = [f"pillar={json.dumps(pillar)}"] if pillar else []
    data, _ = master.salt_json("salt-run", "state.orch", mods, "test=True", *args, timeout=600)
    states = next(iter(data.get("data", {}).values()), {}) if isinstance(data, dict) else {}
    return {v.get("__id__"): v for v in states.values()} if isinstance(states, dict) else {}


def repairs_idle():
    """No live repair lock and no coalesced event waiting (heal.status)."""
    data, _ = master.salt_json("salt-run", "heal.status")
    status = data.get("data", data) if isinstance(data, dict) else {}
    return isinstance(status, dict) and not status.get("locks") and not status.get("pending")


def test_dry_runs_of_the_build_and_of_every_repair_change_nothing_anywhere(lab):
    """orch.cluster and the heal orchestration for every fault of the catalogue with test=True, on
    the built cluster, one of them facing a real fault (a hand-edited haproxy.cfg on a load balancer
    whose beacons are off, so that only the dry run sees it): no etcd membership change, no daemon
    restarted, no file changed."""
    lab.wait_for(repairs_idle, 300, "the repairs in progress to finish", interval=2)
    # Right after a reconciliation: the next one (every 5 min) would repair the drift made below
    # before the dry runs look at it.
    offset = master_log_size()
    lab.wait_for(lambda: "fault(s) found" in master_log_since(offset), 330, "a reconciliation to end", interval=2)
    lb = lab.other(lab.one_holder())
    config_path = "/etc/haproxy/haproxy.cfg"
    lab.salt(lb, "beacons.disable")
    box = lab.machine(lb)
    box.exec("sh", "-c", f"echo '# drift by the dry-run test' >> {config_path}")
    try:
        since = int(time.time()) + 1
        time.sleep(2)
        before = machines_state(lab, since)
        runs = {"orch.cluster": dry_run("orch.cluster"),
                "haproxy": dry_run("orch.heal", {"heal": {"fault": "haproxy", "node": lb}}),
                "keepalived": dry_run("orch.heal", {"heal": {"fault": "keepalived", "node": lb, "detail": "keepalived"}}),
                "config": dry_run("orch.heal", {"heal": {"fault": "config", "node": lb, "detail": config_path}}),
                "apiserver": dry_run("orch.heal", {"heal": {"fault": "apiserver", "node": "cp2"}}),
                "control_plane": dry_run("orch.heal", {"heal": {"fault": "control_plane", "node": "cp3"}}),
                "orch.heal_node_lost": dry_run("orch.heal_node_lost", {"heal": {"lost": ["worker1"]}})}
        after = machines_state(lab, since)
        for mods, states in runs.items():
            assert states, f"{mods} returned nothing"
            print(f"\n{mods} (test=True): " + "; ".join(f"{k}: {v.get('result')}" for k, v in states.items()))
        would = runs["config"]["heal-config-needed"]
        assert would["result"] is None and "would repair" in would["comment"], would
        assert after == before
        assert "# drift by the dry-run test" in box.exec("cat", config_path).stdout  # not repaired by a dry run
    finally:
        lab.salt(lb, "state.apply", "haproxy")
        lab.salt(lb, "beacons.enable")
    assert "# drift by the dry-run test" not in box.exec("cat", config_path).stdout


def test_a_healthy_member_with_kubeadms_files_moved_away_is_left_alone(lab):
    """A maintenance step (the API server's static-pod manifest moved away: the kubelet stops it,
    etcd runs on) makes kubeadm's files look half-joined; etcd, asked by the master through another
    control plane, says the member is healthy: the rejoin removes no member and resets nothing."""
    box = lab.machine("cp2")
    manifest = "/etc/kubernetes/manifests/kube-apiserver.yaml"
    box.exec("mv", manifest, "/root/kube-apiserver.yaml.moved")
    try:
        assert lab.salt("cp2", "kubeadm_member.status")["cp2"]["state"] == "half-joined"
        data, _ = master.salt_json("salt-run", "state.orch", "orch.heal",
                                   'pillar={"heal": {"fault": "control_plane", "node": "cp2"}}', timeout=600)
        states = {v["__id__"]: v for v in next(iter(data["data"].values())).values()}
        needed = states["heal-control_plane-needed"]
        print(f"\nrejoin of a healthy member: {needed['comment']}")
        assert not needed["changes"] and "etcd member cp2 is healthy" in needed["comment"], needed
        assert "put kubeadm's files back" in needed["comment"], needed
        assert not any(s.get("changes") for s in states.values())
        members = lab.salt("cp1", "etcd_cluster.membership")["cp1"]
        assert sorted(m["name"] for m in members["members"] if m["healthy"]) == list(CONTROL_PLANES)
    finally:
        box.exec("mv", "/root/kube-apiserver.yaml.moved", manifest)
    assert lab.salt("cp2", "kubeadm_member.status")["cp2"]["state"] == "member"
