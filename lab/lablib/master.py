"""The lab's salt-master: a host process in its own network namespace on the bridge,
serving the project tree (file_roots, pillar_roots, module_dirs)."""

import importlib.util
import json
import os
import signal
import subprocess
import time

import yaml

from . import config, net
from .run import LabError, run

QUIET_LOGGERS = {"salt.runner": "error", "salt.minion": "error", "salt.utils.asynchronous": "error",
                 "salt.utils.event": "error"}


def master_config(pillar_dir=None):
    d = config.MASTER_DIR
    return {
        "id": f"{config.PREFIX}-master",
        "interface": "0.0.0.0",
        "user": "root",
        "root_dir": str(d),
        "pki_dir": str(d / "pki"),
        "cachedir": str(d / "cache"),
        "sock_dir": str(d / "run"),
        "pidfile": str(d / "run" / "salt-master.pid"),
        "log_file": str(d / "log" / "master"),
        "key_logfile": str(d / "log" / "key"),
        "log_level_logfile": "info",
        # Salt 3008.4's own CLI and its salt.state orchestration step leave objects to the garbage
        # collector, whose finalizers log "unclosed Runner/MasterMinion/SyncWrapper/MasterEvent ...
        # call destroy()" (and close them anyway): noise after every salt-run, not a fault here.
        "log_granular_levels": QUIET_LOGGERS,
        # The project tree: states (salt/), orchestrations, reactors and the modules minions
        # sync (srv/: links to them, so that the file server never walks the venv), pillar,
        # and the master's own Python modules (module_dirs: _runners, _states, _modules, _clouds).
        "file_roots": {"base": [str(config.REPO / "salt"), str(config.REPO / "srv")]},
        "pillar_roots": {"base": [str(pillar_dir or config.REPO / "pillar")]},
        "module_dirs": [str(config.REPO)],
        "file_ignore_regex": [r"/__pycache__(/|$)"],
        "presence_events": True,
        "loop_interval": 5,
        "worker_threads": 4,
        "timeout": 20,
        "gather_job_timeout": 20,
        "keep_jobs_seconds": 7200,
        "auto_accept": False,
        # New machines present a one-time value instead of carrying a key made here; the
        # project's engine accepts them (docs/openstack.md, enrolment).
        "engines": [{"k8sha_enrolment": {}}],
        "auth_events_autosign_grains": ["pend", "denied"],
        # etcd snapshots taken before membership changes are copied to the master (cp.push).
        "file_recv": True,
        # The lab has no DNS: no name lookups for grains (each would wait for a timeout).
        "enable_fqdns_grains": False,
        # pillar/top.sls adds pillar/lab.sls (stand-in package source, the host's kernel).
        "k8sha_lab": True,
        # Events -> healing orchestrations (docs/events-and-healing.md), as a production master would have them.
        "reactor": reactors(),
        "schedule": schedule(),
    }


def _healing():
    """_utils/k8sha_heal.py, where the master's reactions and schedule are defined (production's too)."""
    spec = importlib.util.spec_from_file_location("k8sha_heal", config.REPO / "_utils" / "k8sha_heal.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reactors():
    """The master's reactor list: every tag of the fault catalogue, then the others."""
    healing = _healing()
    return healing.master_reactors(healing.catalogue())


def schedule():
    return _healing().master_schedule()


def write_config(pillar_dir=None):
    cfg = config.SALT_CONFIG_DIR
    for sub in ("", "cloud.providers.d", "cloud.profiles.d"):
        (cfg / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("pki", "cache", "run", "log"):
        (config.MASTER_DIR / sub).mkdir(parents=True, exist_ok=True)
    (cfg / "master").write_text(yaml.safe_dump(master_config(pillar_dir)))
    # salt-cloud reads the same directory: the project's lab provider and profiles.
    for kind in ("providers", "profiles"):
        link = cfg / f"cloud.{kind}.d" / "k8sha-lab.conf"
        link.unlink(missing_ok=True)
        link.symlink_to(config.REPO / "cloud" / f"lab.{kind}.conf")


def pid():
    try:
        value = int((config.MASTER_DIR / "run" / "salt-master.pid").read_text())
        os.kill(value, 0)
        return value
    except (OSError, ValueError):
        return None


def start(timeout=60, pillar_dir=None):
    net.attach(config.MASTER_NS, config.MASTER_ADDRESS)
    before = (config.SALT_CONFIG_DIR / "master").read_text() if (config.SALT_CONFIG_DIR / "master").exists() else None
    write_config(pillar_dir)
    if pid():
        if (config.SALT_CONFIG_DIR / "master").read_text() == before:
            return
        stop()  # a new configuration (another pillar directory): restart
    in_master_ns(config.VENV_BIN / "salt-master", "-c", config.SALT_CONFIG_DIR, "-d")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid() and (config.MASTER_DIR / "run" / "master_event_pub.ipc").exists():
            return
        time.sleep(0.2)
    raise LabError(f"salt-master did not start; see {config.MASTER_DIR / 'log' / 'master'}")


def stop(timeout=20):
    master = pid()
    if not master:
        return
    os.kill(master, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid():
        time.sleep(0.2)
    if pid():
        os.killpg(os.getpgid(master), signal.SIGKILL)


def in_master_ns(*cmd, check=True, capture=True, timeout=600):
    """A command in the master's network namespace, with the host's mounts (nsenter, not
    'ip netns exec', whose private mount namespace would hide the machines' overlays)."""
    return run("nsenter", f"--net=/run/netns/{config.MASTER_NS}", "--", *cmd,
               check=check, capture=capture, timeout=timeout)


def salt_command(tool, *args):
    """argv for a Salt CLI tool against the lab master."""
    return ["nsenter", f"--net=/run/netns/{config.MASTER_NS}", "--",
            str(config.VENV_BIN / tool), "-c", str(config.SALT_CONFIG_DIR), *args]


def salt_text(tool, *args, timeout=600):
    """Run a Salt CLI tool with its default outputter: (stdout, exit code)."""
    result = subprocess.run(salt_command(tool, *args), capture_output=True, text=True, timeout=timeout)
    return result.stdout, result.returncode


def salt_json(tool, *args, timeout=600):
    """Run a Salt CLI tool with --out=json and return the parsed output."""
    # --static: one JSON document for all minions (salt only; salt-run prints one anyway).
    options = ["--out=json", "--static"] if tool == "salt" else ["--out=json"]
    result = subprocess.run(salt_command(tool, *options, *args),
                            capture_output=True, text=True, timeout=timeout)
    if not result.stdout.strip():
        raise LabError(f"{tool} {' '.join(args)}: no output (exit {result.returncode}): {result.stderr.strip()}")
    # Salt's LocalClient prints "No minions matched the target..." on stdout when a step of an
    # orchestration targets only minions that are gone: the JSON document starts after it.
    lines = result.stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(("{", "["))), 0)
    return json.loads("\n".join(lines[start:])), result.returncode
