"""The lab's salt-masters: host processes, each in its own network namespace on the bridge,
serving the project tree (file_roots, pillar_roots, module_dirs). Master "a" always runs;
master "b" only with `lab up --second-master`: hot multi-master, sharing a's keys (pki_dir) and
the same roots, as docs/events-and-healing.md describes for production. Every function takes
``which`` ("a" or "b")."""

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


def site(which="a"):
    if which not in config.MASTERS:
        raise LabError(f"no lab master {which!r}: a or b")
    return config.MASTERS[which]


def pki_dir(which="a"):
    """Both masters' keys: one master key pair and one set of accepted minion keys (a minion
    checks each master's key against the one it holds; the second master must present the same).
    The second master's is a link to the first's: Salt puts its root_dir in front of a pki_dir
    outside root_dir."""
    return site(which).dir / "pki"


def master_config(pillar_dir=None, which="a"):
    d = site(which).dir
    return {
        "id": site(which).minion_id,
        "interface": "0.0.0.0",
        "user": "root",
        "root_dir": str(d),
        "pki_dir": str(pki_dir(which)),
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
        # pillar/top.sls adds pillar/lab_kubernetes.sls when the nodes run the real Kubernetes.
        "k8sha_lab_kubernetes": config.kubernetes_mode(),
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


def write_config(pillar_dir=None, which="a"):
    cfg = site(which).config_dir
    for sub in ("", "cloud.providers.d", "cloud.profiles.d"):
        (cfg / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("cache", "run", "log"):
        (site(which).dir / sub).mkdir(parents=True, exist_ok=True)
    if which == "a":
        pki_dir().mkdir(parents=True, exist_ok=True)
    elif not pki_dir(which).is_symlink():
        pki_dir(which).symlink_to(pki_dir())
    (cfg / "master").write_text(yaml.safe_dump(master_config(pillar_dir, which)))
    # salt-cloud reads the same directory: the project's lab provider and profiles.
    for kind in ("providers", "profiles"):
        link = cfg / f"cloud.{kind}.d" / "k8sha-lab.conf"
        link.unlink(missing_ok=True)
        link.symlink_to(config.REPO / "cloud" / f"lab.{kind}.conf")


def pid(which="a"):
    try:
        value = int((site(which).dir / "run" / "salt-master.pid").read_text())
        os.kill(value, 0)
        return value
    except (OSError, ValueError):
        return None


def served_pillar_dir(which="a"):
    """The pillar directory master ``which`` serves now (None: it has no configuration)."""
    path = site(which).config_dir / "master"
    return yaml.safe_load(path.read_text())["pillar_roots"]["base"][0] if path.exists() else None


def start(timeout=60, pillar_dir=None, which="a"):
    here = site(which)
    if which != "a" and not (pki_dir() / "master.pem").exists():
        raise LabError("the second master shares the first one's keys: start master a first (lab/lab up)")
    if which != "a":
        share_master_key(here)
    net.attach(here.ns, here.address)
    before = (here.config_dir / "master").read_text() if (here.config_dir / "master").exists() else None
    write_config(pillar_dir, which)
    if pid(which):
        if (here.config_dir / "master").read_text() == before:
            return
        stop(which=which)  # a new configuration (another pillar directory): restart
    in_master_ns(config.VENV_BIN / "salt-master", "-c", here.config_dir, "-d", which=which)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid(which) and (here.dir / "run" / "master_event_pub.ipc").exists():
            return
        time.sleep(0.2)
    raise LabError(f"salt-master {which} did not start; see {here.dir / 'log' / 'master'}")


def share_master_key(here):
    """The first master's key pair under the second's name too: Salt 3008 reads a master's key
    from <its id>.pem in pki_dir (and makes a new one when there is none); multi-master needs
    one key, which each minion checks every master against."""
    first = site("a").minion_id
    for suffix, mode in ((".pem", 0o400), (".pub", 0o644)):
        target = pki_dir() / f"{here.minion_id}{suffix}"
        target.unlink(missing_ok=True)
        target.write_bytes((pki_dir() / f"{first}{suffix}").read_bytes())
        target.chmod(mode)


def stop(timeout=20, which="a"):
    master = pid(which)
    if not master:
        return
    os.kill(master, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid(which):
        time.sleep(0.2)
    if pid(which):
        os.killpg(os.getpgid(master), signal.SIGKILL)


def kill(which):
    """Master ``which`` lost at once, as a machine that dies: SIGKILL to all its processes, no
    clean-up of its own (its run files are removed so that it can be started again)."""
    master = pid(which)
    if master:
        os.killpg(os.getpgid(master), signal.SIGKILL)
    for leftover in ("salt-master.pid", "master_event_pub.ipc"):
        (site(which).dir / "run" / leftover).unlink(missing_ok=True)


def in_master_ns(*cmd, check=True, capture=True, timeout=600, which="a"):
    """A command in a master's network namespace, with the host's mounts (nsenter, not
    'ip netns exec', whose private mount namespace would hide the machines' overlays)."""
    return run("nsenter", f"--net=/run/netns/{site(which).ns}", "--", *cmd,
               check=check, capture=capture, timeout=timeout)


def salt_command(tool, *args, which=None):
    """argv for a Salt CLI tool against a lab master (default: $LAB_MASTER, else a)."""
    here = site(which or os.environ.get("LAB_MASTER") or "a")
    return ["nsenter", f"--net=/run/netns/{here.ns}", "--",
            str(config.VENV_BIN / tool), "-c", str(here.config_dir), *args]


def salt_text(tool, *args, timeout=600, which=None):
    """Run a Salt CLI tool with its default outputter: (stdout, exit code)."""
    result = subprocess.run(salt_command(tool, *args, which=which), capture_output=True, text=True, timeout=timeout)
    return result.stdout, result.returncode


def salt_json(tool, *args, timeout=600, which=None):
    """Run a Salt CLI tool with --out=json and return the parsed output."""
    # --static: one JSON document for all minions (salt only; salt-run prints one anyway).
    options = ["--out=json", "--static"] if tool == "salt" else ["--out=json"]
    result = subprocess.run(salt_command(tool, *options, *args, which=which),
                            capture_output=True, text=True, timeout=timeout)
    if not result.stdout.strip():
        raise LabError(f"{tool} {' '.join(args)}: no output (exit {result.returncode}): {result.stderr.strip()}")
    # Salt's LocalClient prints "No minions matched the target..." on stdout when a step of an
    # orchestration targets only minions that are gone: the JSON document starts after it.
    lines = result.stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(("{", "["))), 0)
    return json.loads("\n".join(lines[start:])), result.returncode
