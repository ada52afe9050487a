"""Helpers of the lab tier: the Lab handle the tests use, and when the tier cannot run."""

import os
import pathlib
import shutil
import time

import yaml

from helpers import salt_render

# config and net are used by the tests through this module.
from lablib import config, machine, master, monitoring, net, secgroups  # noqa: F401

REPO = salt_render.REPO
LAB_CLI = REPO / "lab" / "lab"

LOAD_BALANCERS = ("lb1", "lb2")
VIP = salt_render.description()["api"]["vip"]
# The lab tier builds its cluster on a non-default API port: every consumer of the port (HAProxy,
# kubeadm, firewalld, security groups, beacons, checks) must read it from the description.
API_PORT = 16443


def pillar_with_api_port(directory, port=API_PORT):
    """A copy of pillar/ (join material left out) whose description serves the API on ``port``."""
    shutil.copytree(REPO / "pillar", directory, dirs_exist_ok=True, ignore=shutil.ignore_patterns("join"))
    path = pathlib.Path(directory) / "cluster.sls"
    description = yaml.safe_load(path.read_text())
    description["cluster"]["api"]["port"] = port
    path.write_text(yaml.safe_dump(description, sort_keys=False))
    return pathlib.Path(directory)


def lab_unavailable():
    if os.geteuid() != 0:
        return "the lab tier needs root (namespaces, mounts, systemd-nspawn)"
    missing = [tool for tool in ("systemd-nspawn", "debootstrap", "nsenter") if not shutil.which(tool)]
    if missing:
        return f"the lab tier needs {', '.join(missing)} (make setup)"
    if not os.path.isdir("/sys/fs/cgroup/unified"):
        return "the lab tier needs a cgroup2 hierarchy at /sys/fs/cgroup/unified"
    return None


class Lab:
    started = None
    bad_pillar_run = machines_after_bad_run = None
    pillar_dir = None  # set by the session fixture

    @property
    def join_material_dir(self):
        return self.pillar_dir / "secrets" / "join"

    @staticmethod
    def failed_states(run):
        failed = {k: v.get("comment") for k, v in run["states"].items() if v.get("result") is not True}
        return failed or run["raw"]

    def all_up(self):
        names = ("lb1", "lb2", "cp1", "cp2", "cp3", "worker1")
        return master.pid() is not None and all(machine.Machine(n).running for n in names)

    def machine(self, name):
        return machine.Machine(name)

    def salt(self, *args, timeout=300):
        data, _ = master.salt_json("salt", *args, f"--timeout={min(timeout, 120)}", timeout=timeout + 30)
        return data

    def vip_holders(self):
        holders = []
        for name in LOAD_BALANCERS:
            box = self.machine(name)
            if not box.running:
                continue
            out = box.exec("ip", "-o", "-4", "addr", "show", "dev", "eth0", check=False).stdout
            if f" {VIP}/" in out:
                holders.append(name)
        return holders

    def wait_for(self, predicate, timeout, what, interval=0.2):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def one_holder(self, timeout=20):
        """The single VIP holder, once exactly one LB has held it for 2 s."""
        def settled():
            first = self.vip_holders()
            if len(first) != 1:
                return None
            for _ in range(10):
                time.sleep(0.2)
                if self.vip_holders() != first:
                    return None
            return first[0]
        return self.wait_for(settled, timeout, "exactly one load balancer holding the VIP")

    def other(self, name):
        return next(lb for lb in LOAD_BALANCERS if lb != name)

    def through_vip(self, path="/healthz"):
        """A client request from the master's namespace to the VIP."""
        result = master.in_master_ns("curl", "-sk", "--max-time", "2", f"https://{VIP}:{API_PORT}{path}", check=False)
        return result.stdout if result.returncode == 0 else None


