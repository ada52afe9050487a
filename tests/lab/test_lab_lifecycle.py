"""lab status and lab down: the lab removes everything it created."""

import os
import subprocess

from helpers.lab_session import LAB_CLI, config, machine


def test_status_lists_every_machine_running(lab):
    out = subprocess.run([LAB_CLI, "status"], capture_output=True, text=True, check=True).stdout
    for name in ("lb1", "lb2", "cp1", "cp2", "cp3", "worker1"):
        line = next(row for row in out.splitlines() if row.startswith(name + " "))
        assert line.split()[2] in ("running", "degraded"), line
    assert "memory in all (resident)" in out


def test_lab_down_leaves_nothing_behind(lab):
    leaders = [m.leader for m in machine.all_machines()]
    assert len(leaders) == 6 and all(leaders)
    result = subprocess.run([LAB_CLI, "down"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "nothing left" in result.stdout
    for pid in leaders:
        assert not os.path.exists(f"/proc/{pid}"), f"guest PID 1 {pid} still running"
    assert not [p for p in os.listdir("/run/netns") if p.startswith(config.PREFIX)] if os.path.isdir("/run/netns") else True
    assert not config.MACHINES_DIR.exists()
