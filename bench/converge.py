"""
How long `salt-run state.orch orch.cluster` takes in the lab: the first run from nothing
(machines created by salt-cloud, load balancers, kubeadm init and joins, verify), the
re-run on the healthy cluster (it must change nothing), and how both grow with 1, 3 and 6
workers. Each run starts from `lab down`. Medians of --runs runs, printed and stored in
bench/results/converge.json (+ .png); per-step durations are kept for analysis.

usage: .venv/bin/python bench/converge.py [--runs 3] [--workers 1 3 6]
"""

import argparse
import json
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lab"))
from lablib import master  # noqa: E402

LAB = str(REPO / "lab" / "lab")
RESULTS = REPO / "bench" / "results"


def pillar_with_workers(directory, workers):
    """A copy of pillar/ whose description has `workers` workers (worker1..N, .31 up)."""
    shutil.copytree(REPO / "pillar", directory, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("join"))
    path = pathlib.Path(directory) / "cluster.sls"
    description = yaml.safe_load(path.read_text())
    nodes = [n for n in description["cluster"]["nodes"] if n["role"] != "worker"]
    nodes += [{"name": f"worker{i}", "role": "worker", "address": f"198.51.100.{30 + i}"} for i in range(1, workers + 1)]
    description["cluster"]["nodes"] = nodes
    path.write_text(yaml.safe_dump(description, sort_keys=False))


def orch():
    started = time.monotonic()
    data, code = master.salt_json("salt-run", "state.orch", "orch.cluster", timeout=3600)
    seconds = time.monotonic() - started
    states = next(iter(data.get("data", {}).values()), {}) if isinstance(data, dict) else {}
    if code != 0:
        failed = {v.get("__id__"): v.get("comment") for v in states.values() if v.get("result") is not True}
        raise SystemExit(f"orch.cluster failed: {json.dumps(failed or data, indent=1)[:3000]}")
    steps = {v["__id__"]: round(v.get("duration", 0) / 1000, 2) for v in states.values()}
    changed = sorted(v["__id__"] for v in states.values() if v.get("changes"))
    return round(seconds, 1), steps, changed


def one_run(pillar_dir):
    subprocess.run([LAB, "down"], check=True, capture_output=True)
    subprocess.run([LAB, "up", "--pillar-dir", pillar_dir], check=True, capture_output=True)
    first, first_steps, _ = orch()
    rerun, rerun_steps, changed = orch()
    if changed:
        raise SystemExit(f"the re-run changed {changed}: not idempotent")
    return {"first": first, "rerun": rerun, "first_steps": first_steps, "rerun_steps": rerun_steps}


def plot(summary, path):
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    except ImportError:
        return
    workers = sorted(int(w) for w in summary)
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("first", "first run (from nothing)"), ("rerun", "re-run (no changes)")):
        ax.plot(workers, [summary[str(w)][f"{key}_median"] for w in workers], marker="o", label=label)
    ax.set_xlabel("workers (plus 2 load balancers, 3 control planes)")
    ax.set_ylabel("seconds (median)")
    ax.set_title("salt-run state.orch orch.cluster in the lab")
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 3, 6])
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary, raw = {}, {}
    try:
        for workers in args.workers:
            with tempfile.TemporaryDirectory(prefix=f"k8sha-bench-{workers}w-") as pillar_dir:
                pillar_with_workers(pillar_dir, workers)
                runs = []
                for number in range(args.runs):
                    runs.append(one_run(pillar_dir))
                    print(f"{workers} workers, run {number + 1}: first {runs[-1]['first']} s, "
                          f"re-run {runs[-1]['rerun']} s", flush=True)
            raw[str(workers)] = runs
            summary[str(workers)] = {
                "first_median": statistics.median(r["first"] for r in runs),
                "rerun_median": statistics.median(r["rerun"] for r in runs),
                "runs": len(runs),
            }
    finally:
        subprocess.run([LAB, "down"], check=False, capture_output=True)
    result = {"measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "summary": summary, "runs": raw}
    (RESULTS / "converge.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(summary, RESULTS / "converge.png")
    print(f"\n{'workers':>8} {'first run (median)':>20} {'re-run (median)':>17}")
    for workers, row in summary.items():
        print(f"{workers:>8} {row['first_median']:>18.1f} s {row['rerun_median']:>15.1f} s")


if __name__ == "__main__":
    main()
