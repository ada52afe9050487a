"""
Healing in the lab, both layers: systemd restarts what crashes; beacons -> reactors ->
orchestrations repair what systemd cannot (a stopped daemon, a hand-edited config, a
control-plane machine destroyed and re-created by salt-cloud), and refuse forged events.
Times are measured in bench/heal.py; the timeouts here only bound a broken system.
"""

import json
import subprocess
import time

from lab_session import API_PORT, LAB_CLI, LOAD_BALANCERS, REPO, VIP, config, master

CONTROL_PLANES = ("cp1", "cp2", "cp3")


class EventLog:
    """Events with tags matching a pattern on the master's bus, while the block runs."""

    def __init__(self, tagmatch):
        self.tagmatch, self.lines = tagmatch, ""

    def __enter__(self):
        self.proc = subprocess.Popen(
            master.salt_command("salt-run", "state.event", f"tagmatch={self.tagmatch}", "count=-1", "--out=json"),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(1.5)
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.lines, _ = self.proc.communicate(timeout=10)


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


def test_a_stopped_keepalived_is_started_again_by_salt(lab):
    box = lab.machine(lab.other(lab.one_holder()))
    box.exec("systemctl", "stop", "keepalived")
    lab.wait_for(lambda: active(box, "keepalived"), 60, "Salt to start keepalived again", interval=1)
    assert len(lab.vip_holders()) == 1


def etcd_health(lab, asked="cp1"):
    answer = lab.salt(asked, "etcd_cluster.health").get(asked)
    return answer if isinstance(answer, dict) else {}


def test_a_forged_event_changes_nothing(lab):
    members = sorted(m["name"] for m in lab.salt("cp1", "etcd_cluster.members")["cp1"])
    with EventLog("k8sha/heal/refused") as events:
        # A worker claims that cp2 was replaced, and that its own API server is unhealthy.
        lab.salt("worker1", "event.send", "salt/minion/cp2/start")
        lab.salt("worker1", "event.send", "salt/beacon/worker1/k8sha_apiserver/unhealthy")
        time.sleep(15)
    assert "the event is about cp2 but was sent by worker1" in events.lines, events.lines
    assert "worker1 is a worker, this repair is for a control_plane" in events.lines, events.lines
    assert sorted(m["name"] for m in lab.salt("cp1", "etcd_cluster.members")["cp1"]) == members
    assert lab.salt("cp2", "kubeadm_member.status")["cp2"]["state"] == "member"


def test_a_destroyed_control_plane_is_recreated_by_salt_cloud_and_rejoins(lab):
    """cp3 is destroyed and made again under the same name: its start event starts the
    rejoin (stale etcd member removed, role applied, join with fresh material), with no
    human step; the API answers through the VIP throughout."""
    prober = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{config.MASTER_NS}", "--", str(REPO / ".venv/bin/python"),
         str(REPO / "bench/probe.py"), "--host", VIP, "--port", str(API_PORT), "--duration", "300",
         "--interval", "0.2"],
        stdout=subprocess.PIPE, text=True)
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
    prober.terminate()
    results = json.loads(prober.communicate(timeout=30)[0])
    failed = [r for r in results if not r[1]]
    assert len(failed) <= 3, failed  # the API answered through the VIP throughout
    lab.wait_for(lambda: master.salt_json("salt-run", "state.orch", "orch.verify")[1] == 0, 120,
                 "orch.verify to pass", interval=5)

