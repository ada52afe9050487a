"""
An event storm against the lab's master, with one real fault in the middle of it
(make bench-storm starts the lab and builds the cluster). Printed and stored in
bench/results/storm.json.

Five minions send --events events within --seconds, through their own Salt (salt.client.Caller,
the path a beacon's events take):

  lb1      plain, about itself       salt/beacon/lb1/service/keepalived
  lb2      plain, about itself       salt/beacon/lb2/k8sha_haproxy/down   (the real fault's own tag)
  cp1      batched, about itself     salt/beacon/cp1/k8sha_apiserver/unhealthy
  cp2      batched, forged as cp3    salt/beacon/cp3/k8sha_apiserver/unhealthy, data {"id": "cp3"}
  worker1  plain, forged             salt/beacon/cp2/k8sha_apiserver/unhealthy, salt/minion/cp1/start

A third of the way in, HAProxy is stopped on lb2 (a real fault, behind the storm's own events
about it). Reported: events admitted, refused and coalesced, checks, orchestrations started,
repairs made per fault and node, the master's CPU seconds, the time from the last event until
no repair is running or waiting, and the real fault's time to repair against its quiet-time
figure (median of --quiet-runs, measured here first; goal: at most twice that).
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from heal import RESULTS, active, box, master, serving, settle, wait  # noqa: E402  (bench/heal.py's lab helpers)

from lablib import config  # noqa: E402

SENDER = r"""
import json, resource, sys, time
import salt.client
kind, tags, claimed, count, seconds = sys.argv[1], sys.argv[2].split(","), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
caller = salt.client.Caller()
start, sent = time.monotonic(), 0
for i in range(count):
    tag = tags[i % len(tags)]
    if kind == "batched":  # the beacons' form: the minion writes the data, id included
        caller.cmd("event.send", "k8sha/bench/batch", preload={"events": [{"tag": tag, "data": {"id": claimed}}]})
    else:
        caller.cmd("event.send", tag)
    sent += 1
    delay = start + (i + 1) * seconds / count - time.monotonic()
    if delay > 0:
        time.sleep(delay)
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"sent": sent, "seconds": round(time.monotonic() - start, 1),
                  "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1)}))
"""

SENDERS = [  # minion, kind, tags, claimed id
    ("lb1", "plain", "salt/beacon/lb1/service/keepalived", "lb1"),
    ("lb2", "plain", "salt/beacon/lb2/k8sha_haproxy/down", "lb2"),
    ("cp1", "batched", "salt/beacon/cp1/k8sha_apiserver/unhealthy", "cp1"),
    ("cp2", "batched", "salt/beacon/cp3/k8sha_apiserver/unhealthy", "cp3"),
    ("worker1", "plain", "salt/beacon/cp2/k8sha_apiserver/unhealthy,salt/minion/cp1/start", "worker1"),
]


def heal_status():
    data, _ = master.salt_json("salt-run", "heal.status", timeout=120)
    return data.get("data", data) if isinstance(data, dict) else {}


def master_cpu_seconds():
    """CPU time of the salt-master and every process under it, finished children included."""
    pid, ticks = master.pid(), os.sysconf("SC_CLK_TCK")
    parents, cpu = {}, {}
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = sum(int(f) for f in fields[11:15])

    def under_master(p):
        while p > 1:
            if p == pid:
                return True
            p = parents.get(p, 0)
        return False
    return sum(c for p, c in cpu.items() if under_master(p)) / ticks


def host_cpu_seconds():
    """CPU time of the whole host (every core, every process: machines, senders, master)."""
    fields = pathlib.Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    busy = sum(int(f) for f in fields) - int(fields[3]) - int(fields[4])  # minus idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def haproxy_repair_time(node):
    box(node).exec("systemctl", "stop", "haproxy")
    started = time.monotonic()
    wait(lambda: active(node, "haproxy") and serving(), 180, f"HAProxy on {node} started by Salt")
    return round(time.monotonic() - started, 2)


def quiet(timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = heal_status()
        if not status.get("locks") and not status.get("pending"):
            return
        time.sleep(1)
    raise SystemExit(f"repairs still running or waiting after {timeout} s")


def storm(events, seconds):
    before, cpu_before, host_before = heal_status().get("counts", {}), master_cpu_seconds(), host_cpu_seconds()
    answers, threads = {}, []
    per_sender = events // len(SENDERS)

    def send(minion, kind, tags, claimed):
        result = box(minion).exec("/opt/saltstack/venv/bin/python", "-c", SENDER, kind, tags, claimed,
                                  str(per_sender), str(seconds), timeout=seconds + 300)
        answers[minion] = json.loads(result.stdout.strip().splitlines()[-1])
    began = time.monotonic()
    for sender in SENDERS:
        threads.append(threading.Thread(target=send, args=sender))
        threads[-1].start()
    time.sleep(seconds / 3)
    fault = {}
    faulted = threading.Thread(target=lambda: fault.update(seconds=haproxy_repair_time("lb2")))
    faulted.start()
    for thread in threads:
        thread.join()
    last_event = time.monotonic()
    faulted.join()
    quiet()
    quiet_after = round(time.monotonic() - last_event, 1)
    after, cpu_after, host_after = heal_status().get("counts", {}), master_cpu_seconds(), host_cpu_seconds()
    counts = {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(after) | set(before))}
    return {"events_sent": sum(a["sent"] for a in answers.values()), "sending_seconds": round(last_event - began, 1),
            "counts": counts, "master_cpu_seconds": round(cpu_after - cpu_before, 1),
            "senders_cpu_seconds": round(sum(a["cpu_seconds"] for a in answers.values()), 1),
            "host_cpu_seconds": round(host_after - host_before, 1),
            "host_cpu_available_seconds": round((time.monotonic() - began) * os.cpu_count(), 1),
            "quiet_after_last_event_s": quiet_after, "real_fault_repair_s": fault["seconds"]}


def repairs_per_fault_and_node(since):
    """Repairs (successful or not) started in the storm, per fault and node, from the master's records."""
    path = config.MASTER_DIR / "cache" / "k8sha-heal" / "heal.json"
    attempts = json.loads(path.read_text()).get("attempts", {}) if path.exists() else {}
    return {key: sum(1 for at, _ in runs if at >= since) for key, runs in attempts.items()
            if any(at >= since for at, _ in runs)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--quiet-runs", type=int, default=3)
    args = parser.parse_args()
    if master.pid() is None or not box("cp3").running:
        raise SystemExit("the lab is not built: make lab-build (lab up, then orch.cluster)")
    quiet_times = []
    for _ in range(args.quiet_runs):
        settle()
        quiet_times.append(haproxy_repair_time("lb2"))
        print(f"quiet: HAProxy stopped on lb2, repaired after {quiet_times[-1]} s", flush=True)
    settle()
    quiet()
    since = time.time()
    result = storm(args.events, args.seconds)
    result["repairs_per_fault_and_node"] = repairs_per_fault_and_node(since)
    result["quiet_repair_median_s"] = statistics.median(quiet_times)
    result["quiet_repair_runs_s"] = quiet_times
    result["real_fault_vs_quiet"] = round(result["real_fault_repair_s"] / result["quiet_repair_median_s"], 2)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "storm.json").write_text(json.dumps(
        {"measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "senders": [s[:3] for s in SENDERS],
         "result": result}, indent=1) + "\n")
    print(f"\n{'events sent':40} {result['events_sent']} in {result['sending_seconds']} s from {len(SENDERS)} minions")
    for key, value in result["counts"].items():
        print(f"  {key:38} {value}")
    print(f"{'repairs per fault and node':40} {result['repairs_per_fault_and_node']}")
    print(f"{'master CPU seconds':40} {result['master_cpu_seconds']}")
    print(f"{'senders CPU seconds (in the machines)':40} {result['senders_cpu_seconds']}")
    print(f"{'host CPU seconds used / available':40} {result['host_cpu_seconds']} / {result['host_cpu_available_seconds']}")
    print(f"{'quiet after the last event':40} {result['quiet_after_last_event_s']} s")
    print(f"{'real fault (HAProxy on lb2) repaired in':40} {result['real_fault_repair_s']} s "
          f"(quiet: {result['quiet_repair_median_s']} s; {result['real_fault_vs_quiet']}x, goal <= 2x)")


if __name__ == "__main__":
    main()
