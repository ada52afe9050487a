"""
The healing bookkeeping the master keeps (docs/events-and-healing.md), shared by the heal.admit runner,
the heal states of orch/heal.sls and the reconciliation: the fault catalogue
(salt/k8sha/faults.yaml), and one JSON file of attempts, locks, coalesced events and counts.

A lock belongs to a process (its pid and start time): when that process is gone — a master
restart, a killed salt-run — the lock is free at once, not after its expiry.

Everything here is plain Python on explicit arguments, so that the runner, the states and the
tests use the same rules.
"""

import contextlib
import fcntl
import fnmatch
import json
import os
import pathlib
import time

import yaml

CATALOGUE = pathlib.Path(__file__).resolve().parents[1] / "salt" / "k8sha" / "faults.yaml"
FIELDS = ("summary", "tag", "role", "check", "repair", "verify", "lock", "damping", "handled")


def catalogue(path=CATALOGUE):
    """{fault: entry} from the catalogue, with every field checked (a bad entry is named)."""
    data = yaml.safe_load(pathlib.Path(path).read_text()) or {}
    for name, entry in data.items():
        missing = [f for f in FIELDS if f not in entry]
        if missing:
            raise ValueError(f"{path}: fault {name} lacks {', '.join(missing)}")
        if entry["lock"] not in ("node", "role"):
            raise ValueError(f"{path}: fault {name}: lock must be node or role, not {entry['lock']!r}")
    return data


def fault_of(tag, faults):
    """The name of the fault whose tag pattern matches ``tag``, or None."""
    return next((name for name, entry in faults.items() if fnmatch.fnmatchcase(tag or "", entry["tag"])), None)


def node_of(tag):
    """The node an event is about: the third part of salt/beacon/<id>/... and salt/minion/<id>/start."""
    parts = (tag or "").split("/")
    return parts[2] if len(parts) > 2 and parts[0] == "salt" and parts[1] in ("beacon", "minion") else None


def detail_of(entry, tag):
    """What the check is about: the catalogue's fixed value, or the rest of the tag."""
    detail = entry.get("detail")
    if isinstance(detail, dict) and "tag_after" in detail:
        return tag.split(detail["tag_after"], 1)[1] if tag and detail["tag_after"] in tag else None
    return detail


def lock_key(fault, entry, node):
    """One repair at a time per fault and node, or per role (control planes: etcd changes one member at a time)."""
    return entry["role"] if entry["lock"] == "role" else f"{fault}:{node}"


def refusal(fault, entry, node, role):
    """Why an event about ``node`` (whose role in the description is ``role``) cannot be a
    ``fault``, or None (pure)."""
    if fault is None:
        return "no fault of the catalogue has this tag"
    if node is None:
        return "the tag names no node"
    if role is None:
        return f"{node} is not a node of the cluster description"
    if entry["role"] != "any" and role != entry["role"]:
        return f"{node} is a {role}, this repair is for a {entry['role']}"
    return None


def retired_reason(data, node):
    """Why ``node`` gets no repair because orch.remove_node took it out, or None: it stays in
    the description until the operator deletes it, and must not be rebuilt meanwhile."""
    retired = data.get("retired", {}).get(node)
    if not retired:
        return None
    return (f"{node} was removed by orch.remove_node ({time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(retired['at']))}): "
            f"no repair or rebuild; delete it from pillar/cluster.sls, or `salt-run cluster.unretire {node}` "
            "to build it again")


def sender_note(node, sender):
    """How the event's claimed sender relates to the node it is about (pure). Beacons send
    batched events whose data the minion writes itself, id included: the sender is a hint,
    recorded, never trusted."""
    if not sender:
        return "missing"
    return "matches" if sender == node else "mismatch"


def recent_failures(attempts, now, window):
    return sum(1 for at, ok in attempts if not ok and now - at < window)


# --- processes that hold locks -------------------------------------------------------------

def process_start(pid):
    """The start time of process ``pid`` (clock ticks since boot), or None if it does not exist."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def this_process():
    return {"pid": os.getpid(), "pid_start": process_start(os.getpid())}


def alive(lock, now):
    """A lock holds while it has not expired and the process that took it still runs."""
    if not lock or lock.get("expires", 0) <= now:
        return False
    if "pid" not in lock:
        return True
    return process_start(lock["pid"]) == lock.get("pid_start")


# --- the store -----------------------------------------------------------------------------

EMPTY = {"attempts": {}, "locks": {}, "pending": {}, "last_repair": {}, "last_check": {}, "counts": {}, "reported": {},
         "history": [], "vip_holders": [], "repairs": {}, "retired": {}}
HISTORY_KEEP = 500  # records of cluster.history: repairs, refusals reported, needs_human, VIP moves


@contextlib.contextmanager
def store(directory):
    """The heal file (``directory``/heal.json), read and written under an exclusive lock."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    with open(os.path.join(directory, "heal.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = os.path.join(directory, "heal.json")
        try:
            with open(path) as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            data = {}
        for key, empty in EMPTY.items():
            data.setdefault(key, type(empty)())
        yield data
        with open(path + ".tmp", "w") as handle:
            json.dump(data, handle)
        os.replace(path + ".tmp", path)
        metrics = os.path.join(directory, "k8sha_heal.prom")
        with open(metrics + ".tmp", "w") as handle:
            handle.write(prometheus_text(data))
        os.replace(metrics + ".tmp", metrics)


def prometheus_text(data):
    """The heal file's figures in Prometheus' text format (node-exporter's textfile collector)."""
    lines = ["# HELP k8sha_heal_total What admission and the repairs did, by kind (heal.status counts)",
             "# TYPE k8sha_heal_total counter"]
    lines += [f'k8sha_heal_total{{what="{what}"}} {n}' for what, n in sorted(data["counts"].items())]
    lines += ["# HELP k8sha_repairs_total Repairs run (orch.heal) by fault and outcome",
              "# TYPE k8sha_repairs_total counter"]
    for key, n in sorted(data["repairs"].items()):
        fault, outcome = key.split("|")
        lines.append(f'k8sha_repairs_total{{fault="{fault}",outcome="{outcome}"}} {n}')
    lines += ["# HELP k8sha_vip_holder The load balancers holding the VIP when the master last asked",
              "# TYPE k8sha_vip_holder gauge"]
    lines += [f'k8sha_vip_holder{{holder="{node}"}} 1' for node in data["vip_holders"]]
    return "\n".join(lines) + "\n"


def record(data, now, kind, **fields):
    """One record of the project's history (newest last, the last HISTORY_KEEP kept)."""
    data["history"].append(dict(at=now, kind=kind, **fields))
    del data["history"][:-HISTORY_KEEP]
    if kind == "repair":
        key = f"{fields['fault']}|{'repaired' if fields['ok'] else 'failed'}"
        data["repairs"][key] = data["repairs"].get(key, 0) + 1


def vip_moved(data, now, holders):
    """Record a change of the VIP's holders as the master saw them; True if they changed."""
    holders = sorted(holders)
    if holders == data["vip_holders"]:
        return False
    record(data, now, "vip", previous=data["vip_holders"], holders=holders)
    data["vip_holders"] = holders
    return True


def count(data, what, n=1):
    data["counts"][what] = data["counts"].get(what, 0) + n


def claim(data, key, holder, now, ttl, token):
    """Takes lock ``key`` for ``holder`` (a node or orch.cluster) unless a live one holds it:
    returns the lock that stands in the way, or None when taken."""
    held = data["locks"].get(key)
    if alive(held, now):
        return held
    data["locks"][key] = {"minion": holder, "token": token, "since": now, "expires": now + ttl, **this_process()}
    return None


def release(data, key, token):
    held = data["locks"].get(key)
    if held and held.get("token") == token:
        del data["locks"][key]
        return True
    return False


def coalesce(data, key, fault, node, now, detail=None):
    """Counts an event that arrived while ``key`` was held; it is re-checked once when it frees."""
    pending = data["pending"].setdefault(key, {})
    entry = pending.setdefault(f"{fault}:{node}:{detail or ''}",
                               {"fault": fault, "node": node, "detail": detail, "events": 0, "since": now})
    entry["events"] += 1
    count(data, "coalesced")


def next_pending(data, key):
    """The oldest (fault, node, detail) coalesced under ``key``, removed from the list, or None."""
    pending = data["pending"].get(key) or {}
    if not pending:
        data["pending"].pop(key, None)
        return None
    first = min(pending, key=lambda k: pending[k]["since"])
    entry = pending.pop(first)
    if not pending:
        data["pending"].pop(key, None)
    return entry["fault"], entry["node"], entry.get("detail")


def wait_after(data, field, key, seconds, now):
    """Seconds until ``seconds`` have passed since data[field][key] (0 when never): the damping
    after a repair (field last_repair) and the spacing of two checks (field last_check)."""
    last = data.get(field, {}).get(key)
    return max(0.0, last + seconds - now) if last else 0.0


# --- join material left by a run that died ---------------------------------------------------

WRITER = "# writer:"


def this_machine():
    """The machine this master runs on (/etc/machine-id): another master's pids mean nothing here."""
    try:
        with open("/etc/machine-id") as handle:
            return handle.read().strip() or "unknown"
    except OSError:
        return "unknown"


def writer_line():
    """The line join material files start with: which process, on which machine, wrote them."""
    me = this_process()
    return f"{WRITER} {me['pid']} {me['pid_start']} {this_machine()}\n"


def write_private_pillar(path, purpose, data):
    """A pillar file only the master reads (0600 in a 0700 directory), headed by its writer, so
    that one left by a run that died is found (stale_join_files) and removed."""
    import salt.utils.yaml  # pylint: disable=import-outside-toplevel

    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(writer_line())
        handle.write(f"# Written by {purpose}; removed after it.\n")
        salt.utils.yaml.safe_dump(data, handle, default_flow_style=False)


def stale_join_files(directory, foreign_after=900, now=None):
    """Join material files (secrets/join/<node>.sls) whose writer is no longer running: a
    master restart or a killed run left them. Their tokens are still registered on the cluster.
    A file another master's machine wrote (several masters share the pillar) cannot be judged by
    its pid here: it is stale once older than ``foreign_after`` s (heal:lock_ttl: no join
    outlives the lock that covers it)."""
    stale, now = [], time.time() if now is None else now
    for path in sorted(pathlib.Path(directory).glob("*.sls")):
        first = path.read_text().splitlines()[:1]
        fields = first[0].split() if first and first[0].startswith(WRITER) else []
        if len(fields) == 5 and fields[4] != this_machine():
            if now - path.stat().st_mtime < foreign_after:
                continue  # another master's join, maybe in progress
        elif len(fields) in (4, 5) and \
                process_start(int(fields[2])) == (int(fields[3]) if fields[3] != "None" else None):
            continue  # its writer runs: a join in progress
        stale.append(path)
    return stale


# --- the remediation table of docs/events-and-healing.md ---------------------------------------------------------

def remediation_table(faults):
    """The remediation table of docs/events-and-healing.md, from the catalogue (tests/unit/test_heal.py keeps them equal)."""
    lines = ["| Fault | Event (tag) | Role | The master's check | Repair | One at a time per | Damping |",
             "|---|---|---|---|---|---|---|"]
    for name, entry in faults.items():
        repair = entry["repair"] if isinstance(entry["repair"], str) else \
            ", ".join(f"{k}: {v}" for k, v in entry["repair"].items())
        lines.append(f"| `{name}`: {entry['summary']} | `{entry['tag']}` | {entry['role']} | `{entry['check']}` | "
                     f"`{repair}`: {entry['handled']} | {'role' if entry['lock'] == 'role' else 'node'} | "
                     f"{entry['damping']} s |")
    return "\n".join(lines)


# --- the master's configuration: reactions and the reconciliation's schedule ---------------------------------

# Reactions besides the fault catalogue's events, which all go to reactor/fault.sls.
OTHER_REACTIONS = {
    "salt/presence/change": "node_lost",
    "k8sha/keepalived/state": "keepalived_state",
    "k8sha/heal/recheck": "heal_recheck",
}
RECONCILE_MINUTES = 5
SNAPSHOT_HOURS = 6


def master_reactors(faults):
    """The master's `reactor` list: every tag of the catalogue to reactor/fault.sls, then the others."""
    tags = [{entry["tag"]: ["salt://reactor/fault.sls"]} for entry in faults.values()]
    return tags + [{tag: [f"salt://reactor/{name}.sls"]} for tag, name in OTHER_REACTIONS.items()]


def master_schedule(minutes=RECONCILE_MINUTES, snapshot_hours=SNAPSHOT_HOURS):
    """The master's `schedule`: the catalogue's checks on every node every few minutes (and once
    when the master starts), so that a fault whose event was lost is repaired; an etcd snapshot
    every few hours (a runner: a scheduled orchestration would make repairs' orchestrations fail);
    the control planes' certificates checked daily (certs.check: an event when some are due)."""
    return {"k8sha-reconcile": {"function": "heal.reconcile", "minutes": minutes, "run_on_start": True,
                                "maxrunning": 1},
            "k8sha-etcd-snapshot": {"function": "etcd_snapshot.take", "hours": snapshot_hours,
                                    "run_on_start": False, "maxrunning": 1},
            "k8sha-cert-check": {"function": "certs.check", "hours": 24, "run_on_start": False, "maxrunning": 1}}


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--master-config"]:
        print(yaml.safe_dump({"reactor": master_reactors(catalogue()), "schedule": master_schedule()}, sort_keys=False))
    else:
        print(remediation_table(catalogue()))
