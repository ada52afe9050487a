"""
The lab tier: the real system in systemd-nspawn machines on this host (lab/). Root only.
A session starts from nothing (lab down; lab up: the bridge and the master) and builds the cluster the
way a user does, with `salt-run state.orch orch.cluster`: first with a bad description
(it must stop before any machine exists), then for real, then once more (no changes).
The records of these runs are what tests/lab/test_cluster.py checks; the scenarios then
run on the cluster, and the session always ends with lab down.
"""

import os
import re
import shutil
import subprocess
import threading
import time

import pytest
from helpers.lab_session import LAB_CLI, Lab, lab_unavailable, machine, master, pillar_with_api_port

LAST = "test_lab_down_leaves_nothing_behind"
PILLAR_DIR = "/run/k8sha-lab-test-pillar"  # the tier's description (API port 16443); on tmpfs, gone at reboot
# A VIP equal to a control plane's address: the description is invalid.
BAD_PILLAR = '{"cluster": {"api": {"vip": "198.51.100.21"}}}'


def pytest_collection_modifyitems(config, items):
    reason = lab_unavailable()
    if reason:
        for item in items:
            if "tests/lab/" in str(item.fspath):
                item.add_marker(pytest.mark.skip(reason=reason))
    # lab down runs after every scenario.
    items.sort(key=lambda item: item.name == LAST)


def orch(*args, timeout=1200):
    """salt-run state.orch orch.cluster: (seconds, exit code, {state id: result})."""
    started = time.monotonic()
    data, code = master.salt_json("salt-run", "state.orch", "orch.cluster", *args, timeout=timeout)
    states = data.get("data", {}).get(next(iter(data.get("data", {})), ""), {}) if isinstance(data, dict) else {}
    results = {v.get("__id__", k): v for k, v in states.items()} if isinstance(states, dict) else {}
    return {"seconds": time.monotonic() - started, "code": code, "states": results, "raw": data}


class JoinMaterialWatcher(threading.Thread):
    """Reads the join material orch.cluster writes to pillar during a join (for a few
    seconds each), so that tests can look for these exact values in logs and job caches."""

    def __init__(self, directory):
        super().__init__(daemon=True)
        self.directory, self.values, self.stop = directory, set(), threading.Event()

    def run(self):
        while not self.stop.is_set():
            for path in self.directory.glob("*.sls") if self.directory.exists() else []:
                try:
                    text = path.read_text()
                except OSError:
                    continue
                self.values.update(re.findall(r"token: ([a-z0-9]{6}\.[a-z0-9]{16})", text))
                self.values.update(re.findall(r"certificate_key: ([0-9a-f]{64})", text))
            time.sleep(0.02)


@pytest.fixture(scope="session")
def lab():
    lab = Lab()
    started = time.monotonic()
    lab.pillar_dir = pillar_with_api_port(PILLAR_DIR)
    # K8SHA_LAB_REUSE=1 (development only): keep a lab that is already up, and leave it up.
    reuse = os.environ.get("K8SHA_LAB_REUSE") == "1" and lab.all_up()
    if not reuse:
        subprocess.run([LAB_CLI, "down"], check=False)
        subprocess.run([LAB_CLI, "up", "--pillar-dir", str(lab.pillar_dir)], check=True)
        lab.bad_pillar_run = orch(f"pillar={BAD_PILLAR}", timeout=300)
        lab.machines_after_bad_run = [m.name for m in machine.all_machines()]
    watcher = JoinMaterialWatcher(lab.join_material_dir)
    watcher.start()
    lab.first_run = orch()
    watcher.stop.set()
    lab.join_material = watcher.values
    assert lab.first_run["code"] == 0, lab.failed_states(lab.first_run)
    lab.second_run = orch()
    lab.started = started
    print(f"\nlab tier: lab up + orch.cluster {lab.first_run['seconds']:.1f} s, "
          f"re-run {lab.second_run['seconds']:.1f} s; {time.monotonic() - started:.1f} s in all")
    yield lab
    if not reuse:
        subprocess.run([LAB_CLI, "down"], check=False)
        shutil.rmtree(PILLAR_DIR, ignore_errors=True)
    print(f"\nlab tier: {time.monotonic() - started:.1f} s in all")
