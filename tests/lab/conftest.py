"""
The lab tier: the real system in systemd-nspawn machines on this host (lab/). Root only.
A session starts the lab from nothing (lab down; lab up), applies the load-balancer role
with Salt, runs the scenarios, and always ends with lab down.
"""

import json
import os
import subprocess
import time

import pytest

from lab_session import LAB_CLI, LOAD_BALANCERS, Lab, lab_unavailable

LAST = "test_lab_down_leaves_nothing_behind"


def pytest_collection_modifyitems(config, items):
    reason = lab_unavailable()
    if reason:
        for item in items:
            if "tests/lab/" in str(item.fspath):
                item.add_marker(pytest.mark.skip(reason=reason))
    # lab down runs after every scenario.
    items.sort(key=lambda item: item.name == LAST)


@pytest.fixture(scope="session")
def lab():
    lab = Lab()
    started = time.monotonic()
    # K8SHA_LAB_REUSE=1 (development only): keep a lab that is already up, and leave it up.
    reuse = os.environ.get("K8SHA_LAB_REUSE") == "1" and lab.all_up()
    if not reuse:
        subprocess.run([LAB_CLI, "down"], check=False)
        subprocess.run([LAB_CLI, "up"], check=True)
    results = lab.salt("-L", ",".join(LOAD_BALANCERS), "state.apply", timeout=600)
    failed = {
        minion: [s["__id__"] + ": " + s["comment"] for s in states.values() if not s["result"]]
        for minion, states in results.items()
        if not isinstance(states, dict) or any(not s["result"] for s in states.values())
    }
    assert set(results) == set(LOAD_BALANCERS) and not any(failed.values()), json.dumps(failed, indent=1)
    lab.started = started
    print(f"\nlab tier: lab up + load-balancer role applied in {time.monotonic() - started:.1f} s")
    yield lab
    if not reuse:
        subprocess.run([LAB_CLI, "down"], check=False)
    print(f"\nlab tier: {time.monotonic() - started:.1f} s in all")
