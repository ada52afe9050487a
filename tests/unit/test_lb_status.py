"""lb_status.vrrp: the VRRP state as keepalived's real notify script records it."""

import json
import subprocess

from helpers import salt_render


def notify(script, state, priority=150):
    subprocess.run([str(script), "INSTANCE", "VI_K8S_API", state, str(priority)], check=True)


def lb_with_state_file(minion, safe_dir, vip):
    desc = salt_render.description(
        api={"vip": vip, "prefix": 8},
        nodes=[
            {"name": "lb1", "role": "loadbalancer", "address": "127.0.0.11"},
            {"name": "lb2", "role": "loadbalancer", "address": "127.0.0.12"},
            {"name": "cp1", "role": "control_plane", "address": "127.0.0.21"},
        ],
    )
    state_file = safe_dir / "vrrp-state.json"
    lb = minion(
        desc,
        lookup={"keepalived": {"state_file": str(state_file)}, "salt_call": str(safe_dir / "no-salt-call"),
                "metrics": {"textfile_dir": str(safe_dir / "textfile")}},
    )
    _, args = lb.managed_files("keepalived")[str(minion.libexec / "keepalived-notify")]
    script = minion.libexec / "keepalived-notify"
    script.write_text(lb.render_file(args))
    script.chmod(0o755)
    return lb, script, state_file


def test_notify_script_records_transitions_and_status_reads_them(minion, safe_dir):
    # 127.0.0.1 is on this host's loopback: a VIP this node "holds".
    lb, script, state_file = lb_with_state_file(minion, safe_dir, vip="127.0.0.1")
    assert lb.call("lb_status.vrrp")["state"] == "UNKNOWN"
    notify(script, "BACKUP", 150)
    notify(script, "MASTER", 150)
    record = json.loads(state_file.read_text())
    assert (record["state"], record["previous"], record["priority"]) == ("MASTER", "BACKUP", 150)
    status = lb.call("lb_status.vrrp")
    assert status["state"] == "MASTER" and status["previous"] == "BACKUP"
    assert status["holds_vip"] is True and status["consistent"] is True
    assert 0 <= status["seconds_in_state"] < 60


def test_notify_script_writes_the_vrrp_state_for_node_exporters_textfile_collector(minion, safe_dir):
    _, script, _ = lb_with_state_file(minion, safe_dir, vip="127.0.0.100")
    notify(script, "BACKUP")
    notify(script, "MASTER")
    path = safe_dir / "textfile" / "k8sha_vrrp.prom"
    assert path.stat().st_mode & 0o777 == 0o644  # node-exporter runs as its own user
    text = path.read_text()
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert samples['k8sha_vrrp_state{state="MASTER"}'] == "1"
    assert samples['k8sha_vrrp_state{state="BACKUP"}'] == samples['k8sha_vrrp_state{state="FAULT"}'] == "0"
    assert samples["k8sha_vrrp_transitions_total"] == "2"
    assert "# TYPE k8sha_vrrp_transitions_total counter" in text
    promtool = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr


def test_status_flags_a_master_without_the_vip(minion, safe_dir):
    lb, script, _ = lb_with_state_file(minion, safe_dir, vip="127.0.0.100")
    notify(script, "MASTER")
    status = lb.call("lb_status.vrrp")
    assert status["holds_vip"] is False and status["consistent"] is False
    notify(script, "FAULT")
    status = lb.call("lb_status.vrrp")
    assert status["state"] == "FAULT" and status["previous"] == "MASTER" and status["consistent"] is True


def test_summary_answers_the_seed_authors_question(minion, safe_dir):
    lb, script, _ = lb_with_state_file(minion, safe_dir, vip="127.0.0.100")
    notify(script, "BACKUP", 100)
    summary = lb.call("lb_status.summary")
    assert summary["vrrp"]["state"] == "BACKUP"
    assert "haproxy" in summary and "servers" in summary["haproxy"]
