"""
VRRP stability under full CPU load (make bench-soak): both host cores busy for DURATION
seconds while the lab's load balancers run VRRP at the configured advert interval. Counts
VRRP state changes and samples in which not exactly one LB held the VIP. Not a test.
Optionally --advert applies the load-balancer role with that advert interval first (pillar
override on the command line: nothing in the tree changes).
"""

import argparse
import json
import multiprocessing
import os
import pathlib
import time

import failover as fo


def burn(until):
    while time.time() < until:
        pass


def transitions(since):
    counts = {}
    for lb in fo.LBS:
        log = fo.box(lb).exec("journalctl", "--no-pager", "-o", "cat", "--since", since,
                              "-t", "Keepalived_vrrp", check=False).stdout
        counts[lb] = sum(1 for line in log.splitlines() if "Entering" in line and "STATE" in line)
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=120)
    parser.add_argument("--advert", type=float, help="advert interval to apply first (seconds)")
    parser.add_argument("--out", default=str(fo.HERE / "results" / "vrrp_soak.json"))
    args = parser.parse_args()
    if args.advert:
        override = json.dumps({"cluster": {"vrrp": {"advert_interval": args.advert}}})
        fo.salt("-L", ",".join(fo.LBS), "state.apply", f"pillar={override}")
    conf = fo.box("lb1").exec("grep", "advert_int", "/etc/keepalived/keepalived.conf").stdout.split()[-1]
    fo.settle()
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    time.sleep(1.1)
    until = time.time() + args.duration
    workers = [multiprocessing.Process(target=burn, args=(until,)) for _ in range(os.cpu_count() or 2)]
    for worker in workers:
        worker.start()
    samples, bad, load = 0, 0, []
    while time.time() < until:
        held = fo.holders()
        samples += 1
        bad += len(held) != 1
        load.append(os.getloadavg()[0])
        time.sleep(0.5)
    for worker in workers:
        worker.join()
    result = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "advert_int": float(conf), "duration_s": args.duration, "busy_processes": len(workers),
        "state_changes": transitions(since), "samples": samples, "samples_without_exactly_one_holder": bad,
        "max_load_average": max(load) if load else None,
    }
    out = pathlib.Path(args.out)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
