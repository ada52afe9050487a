"""
Day-2 operations in the lab built by orch.cluster (make bench-day2 starts it): for each
operation, its duration and the client requests through the VIP that failed meanwhile (a new
TLS connection + GET /healthz every 100 ms, bench/probe.py, from the master's namespace).
Medians of --runs runs, printed and stored in bench/results/day2.json.

  etcd_snapshot         salt-run state.orch orch.etcd_snapshot: taken, checked, copied, kept
  remove_control_plane  orch.remove_node of cp3 (confirm_even): drained, etcd member removed, reset,
                        Node deleted, machine destroyed
  add_control_plane     cp3 built again by orch.cluster on the running cluster (after cluster.unretire)
  etcd_restore          orch.etcd_restore after cp2 and cp3 are destroyed (a snapshot taken just
                        before): restore onto cp1, API back through the VIP, cp2 and cp3 made and
                        joined again; also how long until the API answered again ("api_back")
  renew_certs           orch.renew_certs with a 400-day threshold: every control plane's certificates
                        renewed, one at a time, out of HAProxy's pool
  upgrade               orch.upgrade from Kubernetes 1.31 to 1.32 (the lab's two stand-in versions) on a
                        cluster built fresh for each run (an upgrade goes one way): every node in kubeadm's
                        order; also its per-step timeline (node, step, start, duration, failed requests)

Operations run in the order given, each --runs times; remove and add alternate so that the
cluster is whole again after each pair (give both, remove first). The upgrade rebuilds the lab
(with /run/k8sha-bench-upgrade-pillar), so give it last.
"""

import argparse
import json
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import time

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lab"))
from lablib import config, master  # noqa: E402

RESULTS = REPO / "bench" / "results"
UPGRADE_PILLAR = pathlib.Path("/run/k8sha-bench-upgrade-pillar")  # the description the upgrade runs edit
LAB = str(REPO / "lab" / "lab")


def unretire_cp3():
    master.salt_json("salt-run", "cluster.unretire", "cp3", timeout=120)


def lose_quorum():
    """A snapshot, then two of three control planes destroyed; wait until etcd has no quorum."""
    master.salt_json("salt-run", "etcd_snapshot.take", timeout=300)
    subprocess.run([str(REPO / "lab" / "lab"), "salt-cloud", "-y", "-d", "cp2", "cp3"], check=True, capture_output=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        health, _ = master.salt_json("salt", "cp1", "etcd_cluster.health", timeout=60)
        if not any(h.get("healthy") for h in (health.get("cp1") or {}).values()):
            return
        time.sleep(2)
    raise RuntimeError("etcd kept its quorum")


def fresh_cluster_to_upgrade():
    """The lab rebuilt from nothing at the description's version (1.31), with its own copy of
    pillar/, whose version is then set to 1.32 as an operator would."""
    subprocess.run([LAB, "down"], check=True, capture_output=True)
    shutil.rmtree(UPGRADE_PILLAR, ignore_errors=True)
    shutil.copytree(REPO / "pillar", UPGRADE_PILLAR, ignore=shutil.ignore_patterns("join", "etcd_restore"))
    subprocess.run([LAB, "up", "--pillar-dir", str(UPGRADE_PILLAR)], check=True, capture_output=True)
    _, code = master.salt_json("salt-run", "state.orch", "orch.cluster", timeout=1800)
    if code != 0:
        raise RuntimeError("orch.cluster failed: no cluster to upgrade")
    path = UPGRADE_PILLAR / "cluster.sls"
    description = yaml.safe_load(path.read_text())
    description["cluster"]["kubernetes"] = {"version": "1.32"}
    path.write_text(yaml.safe_dump(description, sort_keys=False))


def timeline(data, started_at, samples):
    """Each node's steps of orch.upgrade: start (s after the run began), duration, failed requests."""
    states = data.get("data", {}).get(next(iter(data.get("data", {})), ""), {}) if isinstance(data, dict) else {}
    steps = []
    for state in sorted(states.values(), key=lambda s: s.get("__run_num__", 0)):
        for step in (state.get("changes") or {}).get("timeline", []):
            end = step["began"] + step["seconds"]
            steps.append({"node": state.get("name"), "step": step["step"], "at": round(step["began"] - started_at, 2),
                          "seconds": step["seconds"],
                          "failed": sum(1 for s in samples if step["began"] <= s[0] < end and not s[1])})
    return steps


# operation: (what is measured, what runs unmeasured before it)
OPERATIONS = {
    "etcd_snapshot": (("state.orch", "orch.etcd_snapshot"), None),
    "remove_control_plane": (("state.orch", "orch.remove_node", "pillar={node: cp3, confirm_even: true}"), None),
    "add_control_plane": (("state.orch", "orch.cluster"), unretire_cp3),
    "etcd_restore": (("state.orch", "orch.etcd_restore"), lose_quorum),
    "renew_certs": (("state.orch", "orch.renew_certs", "pillar={threshold_days: 400}"), None),
    "upgrade": (("state.orch", "orch.upgrade"), fresh_cluster_to_upgrade),
}
PAIRED = ("remove_control_plane", "add_control_plane")


def one_run(operation):
    measured, before = OPERATIONS[operation]
    if before:
        before()
    api = config.description()["api"]
    probe = subprocess.Popen(["nsenter", f"--net=/run/netns/{config.MASTER_NS}", "--", sys.executable,
                              str(REPO / "bench" / "probe.py"), "--host", api["vip"], "--port", str(api["port"]),
                              "--duration", "600"], stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    started, started_at = time.monotonic(), time.time()
    data, code = master.salt_json("salt-run", *measured, timeout=1800)
    duration = time.monotonic() - started
    time.sleep(1)
    probe.send_signal(signal.SIGTERM)
    samples = [s for s in json.loads(probe.communicate(timeout=30)[0]) if s[0] >= started_at]
    if code != 0:
        raise RuntimeError(f"{operation} failed (exit {code})")
    run = {"seconds": round(duration, 2), "requests": len(samples), "failed": sum(1 for s in samples if not s[1])}
    if operation == "upgrade":
        run["timeline"] = timeline(data, started_at, samples)
        for step in run["timeline"]:
            print(f"  {step['node']:<8} {step['step']:<30} +{step['at']:7.1f} s  {step['seconds']:6.1f} s  "
                  f"{step['failed']} failed")
    if samples and not samples[0][1]:  # the API was down when the operation started: when it answered again
        back = next((s[0] for s in samples if s[1]), None)
        run["api_back"] = round(back - started_at, 2) if back else None
    return run


def summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--operations", nargs="*", default=list(OPERATIONS))
    args = parser.parse_args()
    stored = RESULTS / "day2.json"
    results = json.loads(stored.read_text())["results"] if stored.exists() else {}
    runs_of = {op: [] for op in args.operations}
    for _ in range(args.runs):
        for operation in [op for op in args.operations if op in PAIRED]:
            runs_of[operation].append(one_run(operation))
    for operation in args.operations:
        runs = runs_of[operation] or [one_run(operation) for _ in range(args.runs)]
        results[operation] = {"runs": runs, "seconds": summary([r["seconds"] for r in runs]),
                              "failed": summary([r["failed"] for r in runs]),
                              "requests": sum(r["requests"] for r in runs)}
        if any(r.get("api_back") is not None for r in runs):
            results[operation]["api_back"] = summary([r["api_back"] for r in runs if r.get("api_back") is not None])
        s, f = results[operation]["seconds"], results[operation]["failed"]
        print(f"{operation}: {s['median']} s ({s['min']}-{s['max']}), failed requests through the VIP "
              f"{f['median']} ({f['min']}-{f['max']}) of {results[operation]['requests']}, {args.runs} runs")
    RESULTS.mkdir(exist_ok=True)
    stored.write_text(json.dumps({"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                                   "client": "GET /healthz through the VIP every 100 ms",
                                                   "results": results}, indent=1))


if __name__ == "__main__":
    main()
