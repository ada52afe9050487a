"""
Time from a fault to healthy again, per scenario, in the lab built by orch.cluster
(make bench-heal starts it). Medians of --runs runs, printed and stored in
bench/results/heal.json.

  haproxy_killed       kill -9 HAProxy on the VIP holder: systemd restarts it (first layer)
  haproxy_stopped      systemctl stop haproxy on the holder: Salt starts it (beacon -> reactor -> orch)
  keepalived_stopped   systemctl stop keepalived on a load balancer: Salt starts it
  config_edited        a line appended to haproxy.cfg by hand: Salt puts the file back
  control_plane_replaced  cp3 destroyed and re-created by salt-cloud: from the new machine's
                       creation until etcd has 3 healthy members again (Salt rejoins it)
  master_lost_mid_rejoin  two masters (the second is started if needed); cp3 re-created; the master
                       holding its rejoin's lock in etcd is killed once cp3's stale member is gone:
                       from that kill until the other master has completed the rejoin (3 healthy
                       members); the killed master is started again after each run
  repair_lost_with_node  HAProxy stopped on a load balancer (lb1, lb2 in turn: each failed repair counts
                       toward heal:max_attempts); its minion frozen (SIGSTOP, as a hung or powered-off
                       node) the moment orch.heal sends the repair's state run: from the freeze until
                       the repair has ended and freed its lock (heal:state_run_timeout + find_job);
                       the minion is thawed and HAProxy awaited after each run

"Healthy again" for the load-balancer faults: the daemon active on both load balancers and
/healthz answering through the VIP.
"""

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import time

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lab"))
from lablib import config, machine, master  # noqa: E402

LAB = str(REPO / "lab" / "lab")
RESULTS = REPO / "bench" / "results"
API = config.description(master.served_pillar_dir("a"))["api"]  # what the lab's master serves (make bench-heal: pillar/)
VIP, API_PORT = API["vip"], API["port"]
LBS = ("lb1", "lb2")


def box(name):
    return machine.Machine(name)


def active(name, unit):
    return box(name).exec("systemctl", "is-active", unit, check=False).stdout.strip() == "active"


def vip_holder():
    for name in LBS:
        if f" {VIP}/" in box(name).exec("ip", "-o", "-4", "addr", "show", "dev", "eth0", check=False).stdout:
            return name
    return None


def serving():
    result = master.in_master_ns("curl", "-sk", "--max-time", "2", f"https://{VIP}:{API_PORT}/healthz", check=False)
    return result.stdout == "ok"


def wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise SystemExit(f"timed out after {timeout} s waiting for {what}")


def lbs_healthy(unit):
    return lambda: all(active(lb, unit) for lb in LBS) and serving()


def etcd_healthy_members(which=None):
    data, _ = master.salt_json("salt", "cp1", "etcd_cluster.health", "--timeout=15", which=which)
    health = data.get("cp1")
    return sum(1 for h in health.values() if h["healthy"]) if isinstance(health, dict) else 0


# Two repairs of one fault on one node start at least its damping apart (salt/k8sha/faults.yaml):
# a run begins after the longest damping of the load balancers' faults, so that it measures the repair.
FAULTS = yaml.safe_load((REPO / "salt" / "k8sha" / "faults.yaml").read_text())
SETTLE = max(FAULTS[f]["damping"] for f in ("haproxy", "keepalived", "config")) + 1


def settle():
    wait(lambda: vip_holder() is not None and lbs_healthy("haproxy")() and lbs_healthy("keepalived")(), 60, "a settled lab")
    time.sleep(SETTLE)  # beacons see the healthy state; the last repair's damping is over


def run_once(scenario):
    settle()
    holder = vip_holder()
    other = next(lb for lb in LBS if lb != holder)
    started = time.monotonic()
    if scenario == "haproxy_killed":
        box(holder).exec("systemctl", "kill", "--signal=KILL", "haproxy")
        wait(lbs_healthy("haproxy"), 60, "HAProxy back")
    elif scenario == "haproxy_stopped":
        box(holder).exec("systemctl", "stop", "haproxy")
        wait(lbs_healthy("haproxy"), 120, "HAProxy started by Salt")
    elif scenario == "keepalived_stopped":
        box(other).exec("systemctl", "stop", "keepalived")
        wait(lbs_healthy("keepalived"), 120, "keepalived started by Salt")
    elif scenario == "config_edited":
        original = box(other).exec("cat", "/etc/haproxy/haproxy.cfg").stdout
        box(other).exec("sh", "-c", "echo '# edited by hand' >> /etc/haproxy/haproxy.cfg")
        wait(lambda: box(other).exec("cat", "/etc/haproxy/haproxy.cfg").stdout == original, 120, "haproxy.cfg put back")
    elif scenario == "control_plane_replaced":
        subprocess.run([LAB, "salt-cloud", "-y", "-d", "cp3"], check=True, capture_output=True)
        subprocess.run([LAB, "salt-cloud", "-p", "lab-control-plane", "cp3"], check=True, capture_output=True)
        started = time.monotonic()
        wait(lambda: etcd_healthy_members() == 3, 600, "3 healthy etcd members")
    elif scenario == "master_lost_mid_rejoin":
        return master_lost_mid_rejoin()
    elif scenario == "repair_lost_with_node":
        return repair_lost_with_node()
    else:
        raise ValueError(scenario)
    return round(time.monotonic() - started, 2)


def all_answer(which):
    try:
        data, _ = master.salt_json("salt", "*", "test.ping", "--timeout=10", which=which)
    except (master.LabError, ValueError):
        return False
    return len(data) == 6 and all(v is True for v in data.values())


def second_master_ready():
    """Master b up, every minion answering it, and its etcd client certificate made (orch.cluster)."""
    master.start(pillar_dir=master.served_pillar_dir("a"), which="b")
    wait(lambda: all_answer("b"), 180, "every minion to answer the second master")
    if not (config.SECOND_MASTER_DIR / "cache" / "k8sha-etcd-client" / "client.crt").exists():
        _, code = master.salt_json("salt-run", "state.orch", "orch.cluster", timeout=1200, which="b")
        if code != 0:
            raise SystemExit("orch.cluster on the second master failed")


def rejoin_holder():
    """The master ("a" or "b") holding the control-plane lock once cp3's stale member is gone."""
    records, _ = master.salt_json("salt-run", "heal.etcd_locks", which="a")
    held = records.get("control_plane") if isinstance(records, dict) else None
    data, _ = master.salt_json("salt", "cp1", "etcd_cluster.members", "--timeout=15", which="a")
    members = data.get("cp1")
    if not held or not isinstance(members, list) or "cp3" in [m["name"] for m in members]:
        return None
    return "a" if held["holder"].startswith(config.MASTERS["a"].minion_id + "/") else "b"


def master_lost_mid_rejoin():
    second_master_ready()
    subprocess.run([LAB, "salt-cloud", "-y", "-d", "cp3"], check=True, capture_output=True)
    subprocess.run([LAB, "salt-cloud", "-p", "lab-control-plane", "cp3"], check=True, capture_output=True)
    holder = {}

    def half_way():
        holder["which"] = rejoin_holder()
        return holder["which"]
    wait(half_way, 300, "the rejoin half-way")
    killed = holder["which"]
    survivor = "b" if killed == "a" else "a"
    master.kill(killed)
    lost = time.monotonic()
    wait(lambda: etcd_healthy_members(survivor) == 3, 600, f"master {survivor} to complete the rejoin")
    took = round(time.monotonic() - lost, 2)
    master.start(pillar_dir=master.served_pillar_dir(survivor), which=killed)
    wait(lambda: all_answer(killed), 300, f"every minion to answer master {killed} again")
    print(f"  master {killed} held the rejoin and was killed; master {survivor} completed it", flush=True)
    return took


def log_since(offset):
    with open(config.MASTER_DIR / "log" / "master", "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def lock_free(key):
    data, _ = master.salt_json("salt-run", "heal.status")
    data = data.get("data", data)
    return key not in data.get("locks", {}) and key not in (data.get("etcd_locks") or {})


LOST_RUNS = []


def repair_lost_with_node():
    lb = LBS[len(LOST_RUNS) % 2]
    LOST_RUNS.append(lb)
    offset = (config.MASTER_DIR / "log" / "master").stat().st_size
    box(lb).exec("systemctl", "stop", "haproxy")
    wait(lambda: "Executing state salt.state for [heal-haproxy-repaired]" in log_since(offset), 60,
         "the repair's state run to be sent")
    box(lb).exec("systemctl", "kill", "--signal=STOP", "salt-minion")
    frozen = time.monotonic()
    try:
        wait(lambda: f"heal: haproxy of {lb}:" in log_since(offset), 700, "the repair to end")
        took = round(time.monotonic() - frozen, 2)
        wait(lambda: lock_free(f"haproxy:{lb}"), 30, "the repair's lock to be freed")
        if "(orch.heal failed)" not in log_since(offset):
            raise SystemExit(f"the state run on {lb} returned before its minion froze: not a lost run")
    finally:
        box(lb).exec("systemctl", "kill", "--signal=CONT", "salt-minion")
    wait(lbs_healthy("haproxy"), 180, f"HAProxy on {lb} once its minion answers")
    return took


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--control-plane-runs", type=int, default=3)
    parser.add_argument("--scenarios", nargs="+", default=["haproxy_killed", "haproxy_stopped", "keepalived_stopped",
                                                          "config_edited", "control_plane_replaced",
                                                          "master_lost_mid_rejoin", "repair_lost_with_node"])
    args = parser.parse_args()
    if master.pid() is None or not box("cp3").running:
        raise SystemExit("the lab is not built: make lab-build (lab up, then orch.cluster)")
    results = {}
    for scenario in args.scenarios:
        runs = args.control_plane_runs if scenario in ("control_plane_replaced", "master_lost_mid_rejoin",
                                                       "repair_lost_with_node") else args.runs
        times = []
        for number in range(runs):
            times.append(run_once(scenario))
            ended = "the repair ended" if scenario == "repair_lost_with_node" else "healthy again"
            print(f"{scenario} run {number + 1}: {ended} after {times[-1]} s", flush=True)
        results[scenario] = {"median": statistics.median(times), "min": min(times), "max": max(times), "runs": times,
                             "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    master.stop(which="b")
    # Merged per scenario: a run of some scenarios keeps the others' last figures.
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "heal.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    kept = stored.get("results", {})
    for row in kept.values():
        row.setdefault("measured", stored.get("measured"))
    path.write_text(json.dumps({"results": {**kept, **results}}, indent=1) + "\n")
    print(f"\n{'scenario':24} {'median':>8} {'min-max':>16}")
    for scenario, row in results.items():
        print(f"{scenario:24} {row['median']:>7.1f}s {row['min']:>7.1f}-{row['max']:<7.1f}")


if __name__ == "__main__":
    main()
