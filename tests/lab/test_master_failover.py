"""
Two salt-masters (issue 16): hot multi-master with shared keys and the same roots; every minion
connects to both and sends its events to both. Their repair locks live in the cluster's own etcd
on leases (_utils/k8sha_etcd_lock.py): a fault both masters see is repaired once, a rejoin whose
master dies mid-way is completed by the other once the dead master's lease runs out, and either
master alone can re-run orch.cluster. Times are measured in bench/heal.py (master_lost_mid_rejoin).
"""

import shutil
import subprocess
import time

import pytest
from helpers.lab_session import LAB_CLI, config, master

MINIONS = ("lb1", "lb2", "cp1", "cp2", "cp3", "worker1")
CONTROL_PLANES = ("cp1", "cp2", "cp3")
LEASE_TTL = 15  # k8sha:lookup:heal:etcd_lease_ttl


def salt_on(which, *args, timeout=120):
    data, _ = master.salt_json("salt", *args, f"--timeout={timeout}", timeout=timeout + 30, which=which)
    return data


def orch_cluster_on(which):
    """salt-run state.orch orch.cluster on master ``which``: (exit code, {state id: result})."""
    data, code = master.salt_json("salt-run", "state.orch", "orch.cluster", timeout=1200, which=which)
    states = next(iter(data.get("data", {}).values()), {}) if isinstance(data, dict) else {}
    return code, {v.get("__id__", k): v for k, v in states.items()} if isinstance(states, dict) else {}


def all_answer(which):
    try:
        answers = salt_on(which, "*", "test.ping", timeout=10)
    except (master.LabError, ValueError):
        return False
    return all(answers.get(m) is True for m in MINIONS)


def log_path(which):
    return config.MASTERS[which].dir / "log" / "master"


def log_offsets():
    return {w: len(log_path(w).read_text(errors="replace")) for w in config.MASTERS}


def heal_lines(offsets):
    """{master: the heal lines of its log since ``offsets``}."""
    return {w: [line.split("]", 1)[-1].strip() for line in log_path(w).read_text(errors="replace")[offsets[w]:]
                .splitlines() if "heal:" in line] for w in config.MASTERS}


def lock_records(which):
    """The lock records in etcd, as master ``which`` reads them (salt-run heal.etcd_locks)."""
    try:
        records, _ = master.salt_json("salt-run", "heal.etcd_locks", timeout=60, which=which)
    except (master.LabError, ValueError):
        return None
    return records if isinstance(records, dict) else None


def restore_master(lab, which):
    """Master ``which`` started again; minions reconnect to it on their own retry schedule."""
    master.start(pillar_dir=lab.pillar_dir, which=which)
    try:
        lab.wait_for(lambda: all_answer(which), 300, f"every minion to answer master {which} again", interval=3)
    except AssertionError:
        print(f"\nanswering master {which}:", salt_on(which, "*", "test.ping", timeout=10))
        raise


def etcd_members_healthy(which):
    health = salt_on(which, "cp1", "etcd_cluster.health").get("cp1")
    members = salt_on(which, "cp1", "etcd_cluster.members").get("cp1")
    return (isinstance(health, dict) and len(health) == 3 and all(h["healthy"] for h in health.values())
            and isinstance(members, list) and sorted(m["name"] for m in members) == list(CONTROL_PLANES))


def active(box, unit):
    return box.exec("systemctl", "is-active", unit, check=False).stdout.strip() == "active"


@pytest.fixture(scope="module")
def two_masters(lab):
    """The second master started on the built cluster, without etcd credentials (a new master);
    orch.cluster run from it once."""
    shutil.rmtree(config.SECOND_MASTER_DIR / "cache" / "k8sha-etcd-client", ignore_errors=True)
    master.start(pillar_dir=lab.pillar_dir, which="b")
    started = time.monotonic()
    lab.wait_for(lambda: all_answer("b"), 180, "every minion to answer the second master", interval=3)
    print(f"\nevery minion answered the second master {time.monotonic() - started:.0f} s after it started")
    yield orch_cluster_on("b")
    master.stop(which="b")


def test_orch_cluster_from_the_second_master_only_gives_it_etcd_credentials(two_masters):
    code, states = two_masters
    assert code == 0, {k: v.get("comment") for k, v in states.items() if v.get("result") is not True}
    changed = sorted(k for k, v in states.items() if v["changes"])
    assert changed == ["salt-master-etcd-client-ready"], changed
    key = config.SECOND_MASTER_DIR / "cache" / "k8sha-etcd-client" / "client.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert lock_records("b") is not None  # its certificate opens the cluster's etcd to it


def test_a_fault_both_masters_see_is_repaired_exactly_once(lab, two_masters):
    offsets = log_offsets()
    box = lab.machine("lb1")
    box.exec("systemctl", "stop", "haproxy")  # a stop: systemd does not restart it; both masters hear of it

    def both_ended():
        lines = heal_lines(offsets)
        return all(any("haproxy of lb1:" in line for line in lines[w]) for w in config.MASTERS)
    try:
        lab.wait_for(lambda: active(box, "haproxy"), 90, "Salt to start HAProxy on lb1 again", interval=1)
        lab.wait_for(both_ended, 120, "both masters to end a run for HAProxy on lb1", interval=2)
    except AssertionError:
        # What lb1 runs (its beacons are silent during a state run) and what its minion logged.
        print("\nlb1 runs:", salt_on("a", "lb1", "saltutil.running", timeout=15).get("lb1"))
        print("lb1's minion log:", *box.exec("tail", "-n", "40", "/var/log/salt/minion", check=False)
              .stdout.splitlines(), sep="\n  ")
        for which in config.MASTERS:  # who holds haproxy:lb1, in each heal file and in etcd
            status, _ = master.salt_json("salt-run", "heal.status", timeout=60, which=which)
            print(f"master {which}'s heal.status:", {k: status.get(k) for k in ("locks", "etcd_locks", "pending")}
                  if isinstance(status, dict) else status)
        if not active(box, "haproxy"):  # the later tests start from a working lb1
            box.exec("systemctl", "start", "haproxy", check=False)
        raise
    finally:
        for which, lines in heal_lines(offsets).items():
            print(f"\nmaster {which}:", *lines, sep="\n  ")
    outcomes = [(w, line) for w, lines in heal_lines(offsets).items() for line in lines if "haproxy of lb1:" in line]
    repairs = [(w, line) for w, line in outcomes if "(orch.heal " in line]
    assert len(repairs) == 1 and repairs[0][1].endswith("(orch.heal succeeded)"), outcomes
    other = next(w for w in config.MASTERS if w != repairs[0][0])
    assert any("nothing to repair" in line for w, line in outcomes if w == other), outcomes


def test_a_rejoin_whose_master_dies_midway_is_completed_by_the_other(lab, two_masters):
    """cp2 is re-created: both masters hear its start event; one takes the control-plane lock in
    etcd and rejoins it, the other waits on that lock. Once cp2's stale etcd member is removed
    (half-way), the holder is killed; its lease runs out and the other master completes the rejoin."""
    subprocess.run([LAB_CLI, "salt-cloud", "-y", "-d", "cp2"], check=True, capture_output=True)
    offsets = log_offsets()
    subprocess.run([LAB_CLI, "salt-cloud", "-p", "lab-control-plane", "cp2"], check=True, capture_output=True)
    seen = {}

    def holder_once_the_stale_member_is_gone():
        records = lock_records("a") or {}
        if "control_plane" in records:
            seen["during"] = records
        members = salt_on("a", "cp1", "etcd_cluster.members").get("cp1")
        gone = isinstance(members, list) and "cp2" not in [m["name"] for m in members]
        return gone and seen.get("during", {}).get("control_plane")
    held = lab.wait_for(holder_once_the_stale_member_is_gone, 240, "the rejoin to remove cp2's stale member",
                        interval=1)
    print("\nlock records in etcd during the rejoin:", seen["during"])
    killed = "a" if held["holder"].startswith(config.MASTERS["a"].minion_id + "/") else "b"
    survivor = "b" if killed == "a" else "a"
    master.kill(killed)
    lost = time.monotonic()
    try:
        survivor_id = config.MASTERS[survivor].minion_id

        def taken_over():
            record = (lock_records(survivor) or {}).get("control_plane")
            return record if record and record["holder"].startswith(survivor_id + "/") else None
        takeover = lab.wait_for(taken_over, 120, f"master {survivor} to take the lock over", interval=1)
        print(f"master {killed} killed; {time.monotonic() - lost:.0f} s later master {survivor} holds the lock:",
              takeover)
        assert 0 < takeover["ttl_left"] <= LEASE_TTL
        lab.wait_for(lambda: etcd_members_healthy(survivor), 700, "cp2 rejoined by the other master", interval=3)
        print(f"cp2 rejoined {time.monotonic() - lost:.0f} s after master {killed} was lost")

        def outcomes():
            return [line for line in heal_lines(offsets)[survivor] if "control_plane of cp2:" in line]
        try:
            lab.wait_for(outcomes, 120, f"the repair's outcome in master {survivor}'s log", interval=2)
        finally:
            print(f"master {survivor}'s log:", *heal_lines(offsets)[survivor][:16], sep="\n  ")
        # The run that took the lock over completed the rejoin itself (not a later reconciliation).
        assert outcomes()[0].endswith("(orch.heal succeeded)"), outcomes()
        assert any("taken in etcd after waiting" in line for line in heal_lines(offsets)[survivor])
        assert salt_on(survivor, "cp2", "kubeadm_member.status")["cp2"]["state"] == "member"
        assert not list(lab.join_material_dir.glob("*.sls")), "no join material outlives its join"
    finally:
        restore_master(lab, killed)


def test_with_one_master_down_orch_cluster_from_the_other_changes_nothing(lab, two_masters):
    master.kill("a")
    try:
        code, states = orch_cluster_on("b")
        assert code == 0, {k: v.get("comment") for k, v in states.items() if v.get("result") is not True}
        changed = sorted(k for k, v in states.items() if v["changes"])
        assert changed == [], {k: (states[k]["comment"], str(states[k]["changes"])[:3000]) for k in changed}
        assert len(states) == len(two_masters[1])
    finally:
        restore_master(lab, "a")
