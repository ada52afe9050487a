"""
Day-2 operations in the lab built by orch.cluster (make bench-day2 starts it): for each
operation, its duration and the client requests through the VIP that failed meanwhile (a new
TLS connection + GET /healthz every 100 ms, bench/probe.py, from the master's namespace).
Medians of --runs runs, printed and stored in bench/results/day2.json.

  etcd_snapshot   salt-run state.orch orch.etcd_snapshot: taken, checked, copied, kept
"""

import argparse
import json
import pathlib
import signal
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lab"))
from lablib import config, master  # noqa: E402

RESULTS = REPO / "bench" / "results"
OPERATIONS = {"etcd_snapshot": ("orch.etcd_snapshot",)}


def one_run(operation):
    api = config.description()["api"]
    probe = subprocess.Popen(["nsenter", f"--net=/run/netns/{config.MASTER_NS}", "--", sys.executable,
                              str(REPO / "bench" / "probe.py"), "--host", api["vip"], "--port", str(api["port"]),
                              "--duration", "600"], stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    started = time.monotonic()
    _, code = master.salt_json("salt-run", "state.orch", *OPERATIONS[operation], timeout=600)
    duration = time.monotonic() - started
    time.sleep(1)
    probe.send_signal(signal.SIGTERM)
    samples = json.loads(probe.communicate(timeout=30)[0])
    if code != 0:
        raise RuntimeError(f"{operation} failed (exit {code})")
    return {"seconds": round(duration, 2), "requests": len(samples), "failed": sum(1 for s in samples if not s[1])}


def summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--operations", nargs="*", default=list(OPERATIONS))
    args = parser.parse_args()
    results = {}
    for operation in args.operations:
        runs = [one_run(operation) for _ in range(args.runs)]
        results[operation] = {"runs": runs, "seconds": summary([r["seconds"] for r in runs]),
                              "failed": summary([r["failed"] for r in runs]),
                              "requests": sum(r["requests"] for r in runs)}
        s, f = results[operation]["seconds"], results[operation]["failed"]
        print(f"{operation}: {s['median']} s ({s['min']}-{s['max']}), failed requests through the VIP "
              f"{f['median']} ({f['min']}-{f['max']}) of {results[operation]['requests']}, {args.runs} runs")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "day2.json").write_text(json.dumps({"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                                   "client": "GET /healthz through the VIP every 100 ms",
                                                   "results": results}, indent=1))


if __name__ == "__main__":
    main()
