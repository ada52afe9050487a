"""
Failover benchmark (make bench-failover): in the lab, for each fault, the time until the
VIP serves again and the client requests that failed (10 requests/s, a new TLS connection
each, 1 s timeout), with the blog post's settings and with ours, side by side.
Medians and spread of RUNS runs; JSON + a PNG timeline in bench/results/. Not a test.
"""

import argparse
import json
import pathlib
import random
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "lab"))

from lablib import config, machine, master  # noqa: E402

VIP = config.description()["api"]["vip"]
LBS = ("lb1", "lb2")
TARGET_CP = "cp1"
FAULTS = {
    # name: (what, window after the fault in s for ours, for the seed)
    "haproxy_killed": ("HAProxy SIGKILL on the VIP holder (systemd restarts it)", 6, 8),
    "haproxy_stopped": ("HAProxy stopped on the VIP holder (stays down)", 6, 40),
    "keepalived_stopped": ("keepalived stopped on the VIP holder", 6, 8),
    "lb_lost": ("VIP holder machine lost (SIGKILL of its PID 1)", 6, 10),
    "api_server_killed": ("API server SIGKILL on cp1 (restarted after 1 s)", 6, 8),
    "api_server_500": ("API server on cp1 answers 500", 6, 10),
}
STATS_QUERY = (
    "import socket,sys;s=socket.socket(socket.AF_UNIX);s.connect('/run/haproxy/admin.sock');"
    "s.sendall(b'show stat\\n');d=b''\n"
    "while True:\n c=s.recv(65536)\n if not c: break\n d+=c\n"
    "print([l.split(',')[17] for l in d.decode().splitlines() if l.startswith('kube_apiserver_nodes,%s,')][0])"
)


def salt(*args, timeout=600):
    data, _ = master.salt_json("salt", *args, f"--timeout={min(timeout, 300)}", timeout=timeout + 30)
    return data


def box(name):
    return machine.Machine(name)


def holders():
    found = []
    for name in LBS:
        b = box(name)
        if b.running and f" {VIP}/" in b.exec("ip", "-o", "-4", "addr", "show", "dev", "eth0", check=False).stdout:
            found.append(name)
    return found


def wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise RuntimeError(f"bench: timed out waiting for {what}")


def backend_status(lb, server):
    return box(lb).exec("python3", "-c", STATS_QUERY % server, check=False).stdout.strip()


def settle():
    """Exactly one VIP holder for 2 s, HAProxy and keepalived active on both, every backend UP."""
    for name in LBS:
        wait(lambda name=name: box(name).running and box(name).exec(
                 "systemctl", "is-active", "haproxy", "keepalived", check=False).stdout.split() == ["active", "active"],
             60, f"haproxy and keepalived on {name}")
    for name in LBS:
        for cp in ("cp1", "cp2", "cp3"):
            wait(lambda name=name, cp=cp: backend_status(name, cp) == "UP", 30, f"{cp} UP on {name}")

    def stable():
        first = holders()
        if len(first) != 1:
            return None
        for _ in range(10):
            time.sleep(0.2)
            if holders() != first:
                return None
        return first[0]
    return wait(stable, 60, "one stable VIP holder")


def apply_ours():
    results = salt("-L", ",".join(LBS), "state.apply")
    bad = [s["__id__"] for states in results.values() for s in states.values() if not s["result"]]
    if bad:
        raise RuntimeError(f"bench: state.apply failed: {bad}")
    for name in LBS:  # leave the seed's keepalived config behind completely
        box(name).exec("systemctl", "restart", "keepalived")


def apply_seed():
    import jinja2

    template = jinja2.Template((HERE / "seed" / "keepalived.conf.jinja").read_text())
    check = (HERE / "seed" / "check-haproxy").read_text()
    for name, priority in (("lb1", 101), ("lb2", 100)):
        b = box(name)
        b.exec("mkdir", "-p", "/usr/local/libexec/k8sha-bench")
        script = "/usr/local/libexec/k8sha-bench/seed-check-haproxy"
        b.exec("sh", "-c", f"cat > {script} && chmod 755 {script}", input=check)
        conf = template.render(name=name, priority=priority, vip=VIP, auth_pass="b3nchPw")
        b.exec("sh", "-c", "cat > /etc/keepalived/keepalived.conf", input=conf)
        # HAProxy as the blog: retries 1 + redispatch, default check timing (inter 2s fall 3 rise 2);
        # its check is kept a working TLS GET /healthz (the blog's marks every server DOWN or none).
        b.exec("sed", "-i", "s/default-server inter 1s fall 2 rise 2/default-server inter 2s fall 3 rise 2/",
               "/etc/haproxy/haproxy.cfg")
        b.exec("systemctl", "reload", "haproxy")
        b.exec("systemctl", "restart", "keepalived")


def inject(fault, holder):
    """Cause the fault; return a function that undoes it."""
    b, cp = box(holder), box(TARGET_CP)
    if fault == "haproxy_killed":
        b.exec("systemctl", "kill", "--signal=KILL", "haproxy")
        return lambda: None
    if fault == "haproxy_stopped":
        b.exec("systemctl", "stop", "haproxy")
        return lambda: b.exec("systemctl", "start", "haproxy")
    if fault == "keepalived_stopped":
        b.exec("systemctl", "stop", "keepalived")
        return lambda: b.exec("systemctl", "start", "keepalived")
    if fault == "lb_lost":
        b.kill()
        return lambda: (b.stop(), b.boot())
    if fault == "api_server_killed":
        cp.exec("systemctl", "kill", "--signal=KILL", "k8sha-standin-apiserver")
        return lambda: None
    if fault == "api_server_500":
        cp.exec("sh", "-c", "mkdir -p /run/k8sha-lab && echo 500 > /run/k8sha-lab/healthz-status")
        return lambda: cp.exec("rm", "-f", "/run/k8sha-lab/healthz-status")
    raise ValueError(fault)


def out_of_pool_after(holder, fault_at, limit):
    """Seconds from the fault until the holder's HAProxy marks cp1 DOWN (api_server_500)."""
    while time.time() - fault_at < limit:
        if backend_status(holder, TARGET_CP).startswith("DOWN"):
            return round(time.time() - fault_at, 2)
        time.sleep(0.05)
    return None


def one_run(fault, window):
    holder = settle()
    lead = 2 + random.uniform(0, 1)  # faults at spread timer phases
    probe = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{config.MASTER_NS}", "--", sys.executable, str(HERE / "probe.py"),
         "--host", VIP, "--duration", str(lead + window)],
        stdout=subprocess.PIPE, text=True,
    )
    time.sleep(lead)
    fault_at = time.time()
    undo = inject(fault, holder)
    pool = out_of_pool_after(holder, fault_at, window) if fault == "api_server_500" else None
    samples = json.loads(probe.communicate(timeout=window + 30)[0])
    undo()
    after = [s for s in samples if s[0] >= fault_at - 1.0]  # a request in flight at the fault counts
    failures = [s for s in after if not s[1]]
    if failures:
        last_failure = max(s[0] for s in failures)
        first_ok = min((s[0] for s in after if s[1] and s[0] > last_failure), default=None)
        recovery = round(first_ok - fault_at, 3) if first_ok else None
    else:
        recovery = 0.0
    return {"holder": holder, "fault_at": fault_at, "recovery_s": recovery, "failed": len(failures),
            "requests": len(after), "out_of_pool_s": pool,
            "timeline": [[round(s[0] - fault_at, 3), s[1]] for s in samples]}


def summarise(runs, key):
    values = [r[key] for r in runs if r[key] is not None]
    if not values:
        return None
    return {"median": round(statistics.median(values), 3), "min": min(values), "max": max(values), "n": len(values)}


# One name for each set of settings, in the chart, the table and docs/benchmarks.md.
SETTINGS_NAMES = {"seed": "blog post", "ours": "k8sha"}


def plot(results, path):
    """Every run of every case on its own line, over its whole timeline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f, s) for f in FAULTS for s in ("seed", "ours") if results.get(s, {}).get(f)]
    runs = max(len(results[s][f]["runs"]) for f, s in rows)
    fig, ax = plt.subplots(figsize=(13, 0.18 * runs * len(rows) + 1.8))
    times = []
    for y, (fault, settings) in enumerate(rows):
        for n, run in enumerate(results[settings][fault]["runs"]):
            line = y + n / (runs + 1)
            ok = [t for t, good in run["timeline"] if good]
            bad = [t for t, good in run["timeline"] if not good]
            ax.scatter(ok, [line] * len(ok), s=4, c="tab:green", marker="|")
            ax.scatter(bad, [line] * len(bad), s=12, c="tab:red", marker="x")
            times += [t for t, _ in run["timeline"]]
        ax.axhline(y - 1 / (runs + 1), color="lightgrey", linewidth=0.5)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks([y + 0.4 for y in range(len(rows))],
                  [f"{FAULTS[f][0]} ({SETTINGS_NAMES[s]})" for f, s in rows], fontsize=7)
    ax.set_xlabel(f"seconds since the fault ({runs} runs per case, one line each; green: answered, red x: failed)")
    ax.set_title("k8sha failover: client requests through the VIP, 10/s, blog post's settings against k8sha's")
    ax.set_xlim(min(times) - 0.5, max(times) + 0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(results):
    lines = ["| Fault | Settings | Serving again, median (min-max) | Failed requests, median (min-max) | Out of pool |",
             "|---|---|---|---|---|"]
    for fault, (what, _, _) in FAULTS.items():
        for settings in ("seed", "ours"):
            entry = results.get(settings, {}).get(fault)
            if not entry:
                continue
            rec, fail, pool = entry["recovery_s"], entry["failed"], entry["out_of_pool_s"]
            fmt = lambda s, unit="": "n/a" if not s else f"{s['median']}{unit} ({s['min']}-{s['max']})"
            lines.append(f"| {what} | {SETTINGS_NAMES[settings]} | {fmt(rec, ' s')} | {fmt(fail)} | "
                         f"{fmt(pool, ' s') if pool else '-'} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--faults", nargs="*", default=list(FAULTS))
    parser.add_argument("--settings", nargs="*", default=["seed", "ours"])
    parser.add_argument("--out", default=str(HERE / "results" / "failover.json"))
    parser.add_argument("--replot", action="store_true", help="only redraw the chart and table from --out")
    args = parser.parse_args()
    if args.replot:
        stored = pathlib.Path(args.out)
        results = json.loads(stored.read_text())["results"]
        plot(results, stored.with_suffix(".png"))
        print(table(results))
        return
    results = {}
    started = time.monotonic()
    for settings in args.settings:
        (apply_seed if settings == "seed" else apply_ours)()
        results[settings] = {}
        for fault in args.faults:
            window = FAULTS[fault][1] if settings == "ours" else FAULTS[fault][2]
            runs = []
            for n in range(args.runs):
                run = one_run(fault, window)
                runs.append(run)
                print(f"{settings:5} {fault:20} run {n + 1}: serving again {run['recovery_s']} s, "
                      f"{run['failed']} failed of {run['requests']}"
                      + (f", out of pool {run['out_of_pool_s']} s" if run["out_of_pool_s"] else ""), flush=True)
            results[settings][fault] = {
                "what": FAULTS[fault][0], "runs": runs,
                "recovery_s": summarise(runs, "recovery_s"), "failed": summarise(runs, "failed"),
                "out_of_pool_s": summarise(runs, "out_of_pool_s"),
            }
    if "ours" not in args.settings:
        apply_ours()  # never leave the lab on the seed's settings
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():  # keep the figures of settings not measured in this run
        previous = json.loads(out.read_text())["results"]
        results = {**{k: v for k, v in previous.items() if k not in results}, **results}
    out.write_text(json.dumps({"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "runs_per_case": args.runs, "client": "10 req/s, new TLS connection each, 1 s timeout",
                               "results": results}, indent=1))
    plot(results, out.with_suffix(".png"))
    print(table(results))
    print(f"bench: {time.monotonic() - started:.0f} s; results in {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
