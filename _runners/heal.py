"""
Admission of fault events, and reconciliation: the master's side of the event path.

Every event of the fault catalogue (salt/k8sha/faults.yaml) reaches ``heal.admit`` through
reactor/fault.sls. Admission is cheap and runs no minion call: it drops events that cannot be
a fault of the catalogue, records the claimed sender (a hint: beacons send batched events whose
data the minion writes itself), and lets at most one repair per lock run. An event that
arrives while its fault is being repaired, or within the fault's damping time, is coalesced:
counted, and re-checked once when the repair is done, so no fault is lost and a storm costs
one orchestration. The orchestration (orch/heal.sls) checks the fault itself before it acts.

``heal.reconcile`` runs every check of the catalogue on every node (the master's schedule,
docs/architecture.md: the master's configuration) and admits what it finds, so a fault whose event was lost —
a master restart mid-repair, a dropped event — is repaired too. It also removes join material
left by a run that died, and revokes its token.

CLI examples::

    salt-run heal.status                  # locks, coalesced events, counts
    salt-run heal.reconcile               # check every node now
    salt-run join_material.clean          # join material of runs that died: removed, token revoked
    salt-run heal.admit tag=salt/beacon/lb1/k8sha_haproxy/down sender=lb1
"""

import logging
import secrets
import time

import salt.utils.event
from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "heal"

REMIND_SECONDS = 60


def __virtual__():
    return __virtualname__


def _functions():
    """The master's execution modules with its pillar (cached: _utils/k8sha_master.py)."""
    return __utils__["k8sha_master.functions"](__opts__)


def _util(name):
    return __utils__[f"k8sha_heal.{name}"]


def _heal_settings(functions):
    settings = functions["cluster_topology.settings"]()
    return settings["heal"], __utils__["k8sha_master.heal_directory"](__opts__, settings)


def _event(functions, suffix, data):
    prefix = functions["cluster_topology.settings"]()["event_prefix"]
    with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False) as bus:
        bus.fire_event(data, f"{prefix}/heal/{suffix}")


def _judge(functions, tag, sender):
    """(fault, entry, node, detail, refusal, sender note) for one event, without a minion call."""
    faults = functions["heal_check.catalogue"]()
    fault = _util("fault_of")(tag, faults)
    entry = faults.get(fault)
    node = _util("node_of")(tag)
    nodes = {n.get("name"): n.get("role") for n in functions["cluster_topology.description"]().get("nodes", [])}
    reason = _util("refusal")(fault, entry, node, nodes.get(node))
    if not reason:
        with _util("store")(_heal_settings(functions)[1]) as data:
            reason = _util("retired_reason")(data, node)
    note = _util("sender_note")(node, sender)
    if not reason and note == "mismatch":
        reason = f"the event is about {node} but was sent by {sender}"
    detail = _util("detail_of")(entry, tag) if entry else None
    return fault, entry, node, detail, reason, note


def admit(tag, sender=None):
    """An event of the catalogue: refused, coalesced, or the one repair run for its lock."""
    functions = _functions()
    fault, entry, node, detail, reason, note = _judge(functions, tag, sender)
    heal, directory = _heal_settings(functions)
    # Every minion's start event matches the control-plane fault: the others are not refusals.
    routine = fault == "control_plane" and reason and reason.endswith("this repair is for a control_plane")
    report = False
    with _util("store")(directory) as data:
        _util("count")(data, "events")
        _util("count")(data, f"sender_{note}")
        if reason:
            _util("count")(data, "ignored" if routine else "refused")
            data["reported"] = {k: at for k, at in data.get("reported", {}).items() if time.time() - at < REMIND_SECONDS}
            said = data["reported"].get(f"{tag}|{sender}", 0)
            report = not routine and time.time() - said > REMIND_SECONDS
            if report:
                data["reported"][f"{tag}|{sender}"] = time.time()
    if reason:
        log.info("heal: event %s (sender %s) refused: %s", tag, sender, reason)
        if report:  # once a minute per tag and sender: a storm of forgeries is not echoed
            with _util("store")(directory) as data:
                _util("record")(data, time.time(), "refused", fault=fault, node=node, sender=sender, reason=reason)
            _event(functions, "refused", {"fault": fault, "minion": node, "tag": tag, "sender": sender, "reason": reason})
        return {"admitted": False, "reason": reason}
    return _run(functions, fault, entry, node, detail, f"event {tag} (sender {sender or 'missing'})")


def _run(functions, fault, entry, node, detail, origin):
    """Takes the fault's lock (or coalesces), then runs orch.heal for it and for every event
    coalesced meanwhile, each at most once per damping time."""
    heal, directory = _heal_settings(functions)
    key = _util("lock_key")(fault, entry, node)
    token, now = secrets.token_hex(8), time.time()
    # Every master's failed repairs (etcd), at least this master's own (the heal file).
    shared = __utils__["k8sha_etcd_lock.shared_attempts"](_cluster_etcd(functions), f"{fault}:{node}", now,
                                                          heal["window"])
    with _util("store")(directory) as data:
        failures = max(_util("recent_failures")(data["attempts"].get(f"{fault}:{node}", []), now, heal["window"]),
                       _util("recent_failures")(shared or [], now, heal["window"]))
        if failures >= heal["max_attempts"]:
            _util("count")(data, "left_to_a_human")
            reported = data.setdefault("reported", {}).get(f"{fault}:{node}", 0)
            remind = now - reported > REMIND_SECONDS
            if remind:
                data["reported"][f"{fault}:{node}"] = now
                _util("record")(data, now, "needs_human", fault=fault, node=node, failures=failures)
    if failures >= heal["max_attempts"]:
        reason = f"{failures} failed repairs of {fault} on {node} in the last {heal['window']} s: left to a human"
        log.info("heal: %s (%s)", reason, origin)
        if remind:  # once a minute at most: a storm about it must not become a storm of reports
            _event(functions, "needs_human", {"fault": fault, "minion": node, "reason": reason})
        return {"admitted": False, "reason": reason}
    with _util("store")(directory) as data:
        held = _util("claim")(data, key, node, now, heal["lock_ttl"], token)
        if held:
            _util("coalesce")(data, key, fault, node, now, detail)
            log.info("heal: %s of %s coalesced: %s holds %s (%s)", fault, node, held["minion"], key, origin)
            return {"admitted": False, "coalesced": True, "reason": f"{held['minion']} is being repaired ({key})"}
        _util("count")(data, "admitted")
    lock, refused = _etcd_lock(functions, heal, key, node, token)
    if refused:
        with _util("store")(directory) as data:
            _util("release")(data, key, token)
        log.info("heal: %s of %s not repaired: %s (%s)", fault, node, refused, origin)
        return {"admitted": False, "reason": refused}
    log.info("heal: %s repair of %s admitted (lock %s%s; %s)", fault, node, key, " and in etcd" if lock else "", origin)
    runs = []
    try:
        while True:
            runs.append(_checked_and_repaired(functions, heal, directory, key, token, fault, entry, node, detail))
            with _util("store")(directory) as data:
                following = _util("next_pending")(data, key)
            if following is None:
                break
            fault, node, detail = following
            entry = functions["heal_check.catalogue"]()[fault]
            log.info("heal: re-checking %s of %s (events coalesced meanwhile)", fault, node)
    finally:
        __utils__["k8sha_etcd_lock.give_back"](lock)
        with _util("store")(directory) as data:
            _util("release")(data, key, token)
    return {"admitted": True, "runs": runs}


def _cluster_etcd(functions):
    """The cluster's etcd with this master's credentials, or None (the orchestration names the
    description's faults)."""
    try:
        description = functions["cluster_topology.description"]()
    except CommandExecutionError:
        return None
    return __utils__["k8sha_etcd_lock.cluster_etcd"](__opts__["cachedir"], description,
                                                     functions["cluster_topology.settings"]())


def _etcd_lock(functions, heal, key, node, token):
    """(the lock in the cluster's etcd, or None; why it is refused, or None). Another master's
    run under the same lock (it saw the same fault) is waited for, up to lock_ttl: once it ends,
    or its master dies and the lease runs out, this master checks the fault itself and repairs
    only what is left (_utils/k8sha_etcd_lock.py)."""
    etcd = _cluster_etcd(functions)
    if etcd is None:
        return None, None
    started = time.monotonic()
    lock, refused = __utils__["k8sha_etcd_lock.take"](etcd, key, __opts__["id"], node, token,
                                                      heal["etcd_lease_ttl"], wait=heal["lock_ttl"])
    waited = time.monotonic() - started
    if lock and waited > 2:
        log.info("heal: %s taken in etcd after waiting %.0f s for another master's run", key, waited)
    return lock, refused


def _checked_and_repaired(functions, heal, directory, key, token, fault, entry, node, detail):
    """One pass under the lock: the master's own check (no orchestration for a fault that is not
    there: a storm of forged events costs checks, not runs), then orch.heal for a real one.
    Checks of one fault on one node are recheck_spacing apart; repairs, at least its damping."""
    pair = f"{fault}:{node}"
    found, reason = _checked(functions, heal, directory, key, pair, entry, node, detail)
    if found:
        with _util("store")(directory) as data:
            damped = _util("wait_after")(data, "last_repair", pair, entry["damping"], time.time())
        if damped:  # repaired moments ago: wait out the damping, then look again
            log.info("heal: %s of %s: repaired less than %s s ago; checked again in %.0f s (damping)", fault, node,
                     entry["damping"], damped)
            time.sleep(damped)
            found, reason = _checked(functions, heal, directory, key, pair, entry, node, detail)
    if not found:
        log.info("heal: %s of %s: nothing to repair: %s (no orchestration)", fault, node, reason)
        return {"fault": fault, "node": node, "detail": detail, "found": f"nothing to repair: {reason}", "ok": True}
    with _util("store")(directory) as data:
        data["last_repair"][pair] = time.time()
        _util("count")(data, "orchestrations")
    run = _orchestrate(fault, node, detail if detail is not None else found[0][0], token)
    with _util("store")(directory) as data:
        _util("record")(data, time.time(), "repair", fault=fault, node=node, ok=run["ok"], found=run["found"])
    log.info("heal: %s of %s: %s (orch.heal %s)", fault, node, run["found"], "succeeded" if run["ok"] else "failed")
    return run


def _checked(functions, heal, directory, key, pair, entry, node, detail):
    """The master's own check, at least recheck_spacing after the previous one of this fault and node."""
    with _util("store")(directory) as data:
        wait = _util("wait_after")(data, "last_check", pair, heal["recheck_spacing"], time.time())
    time.sleep(wait)
    with _util("store")(directory) as data:
        data["last_check"][pair] = time.time()
        data["locks"][key]["expires"] = time.time() + heal["lock_ttl"]
        _util("count")(data, "checks")
    return _found(functions, entry["check"], node, detail)


def _orchestrate(fault, node, detail, token):
    result = __salt__["state.orchestrate"]("orch.heal", pillar={"heal": {"fault": fault, "node": node,
                                                                         "detail": detail, "token": token}})
    states = (result.get("data") or {}).values() if isinstance(result, dict) else []
    steps = next(iter(states), {}) if states else {}
    needed = next((s for s in steps.values() if isinstance(s, dict) and s.get("__id__") == f"heal-{fault}-needed"), {})
    return {"fault": fault, "node": node, "detail": detail, "found": needed.get("comment"),
            "ok": result.get("retcode", 1) == 0 if isinstance(result, dict) else False}


def recheck(lock):
    """Events coalesced under ``lock`` while a run that heal.admit did not start (orch.cluster,
    a run by hand) held it: each is admitted once now. (k8sha/heal/recheck, reactor/heal_recheck.sls;
    a forged recheck only costs these checks.)"""
    functions = _functions()
    _, directory = _heal_settings(functions)
    with _util("store")(directory) as data:
        following = _util("next_pending")(data, lock)
    if following is None:
        return {"rechecked": None}
    fault, node, detail = following
    entry = functions["heal_check.catalogue"]()[fault]
    return _run(functions, fault, entry, node, detail, f"recheck of {lock}")


def reconcile():
    """Every check of the catalogue on every node, from the master; each fault found is admitted
    (its orchestration checks again before it acts). Join material left by a dead run is removed
    first and its token revoked."""
    functions = _functions()
    _, directory = _heal_settings(functions)
    with _util("store")(directory) as data:
        build = data["locks"].get("control_plane")
        building = _util("alive")(build, time.time()) and build["minion"].startswith("orch.")
    if building:  # the build (or a removal) changes nodes itself; they are half-made meanwhile
        log.info("heal.reconcile: %s is changing the cluster: nothing checked", build["minion"])
        return {"skipped": f"{build['minion']} is changing the cluster"}
    cleaned = sorted(__salt__["join_material.clean"]()["removed"])
    found, started = [], []
    faults = functions["heal_check.catalogue"]()
    with _util("store")(directory) as data:
        retired = set(data["retired"])  # removed by orch.remove_node, still in the description
    for fault, node, detail in functions["heal_check.reconcile_targets"]():
        if node in retired:
            continue
        try:
            for real_detail, reason in _found(functions, faults[fault]["check"], node, detail)[0]:
                found.append(f"{fault} on {node}: {reason}")
                started.append(_run(functions, fault, faults[fault], node, real_detail, "reconciliation"))
        except Exception as exc:  # pylint: disable=broad-except
            log.warning("heal.reconcile: the %s check of %s failed: %s", fault, node, exc)
    log.info("heal.reconcile: %d fault(s) found%s", len(found), "".join(f"; {f}" for f in found))
    return {"faults": found, "runs": started, "stale_join_material_removed": cleaned}


def _found(functions, check, node, detail):
    """([(detail, reason)] of the faults ``check`` finds on ``node``, why): the master asks the node."""
    if check == "config_drift" and detail is None:
        drifted = functions["heal_check.drifted_files"](node)
        return [(path, f"{path} differs from what Salt writes") for path in drifted], "no managed file differs"
    result = functions["heal_check.fault"](check, node, detail)
    return ([(detail, result["reason"])] if result["real"] else []), result["reason"]


def vip_holders_seen(holders):
    """Record the VIP's holders as the master asked them (cluster.split_brain, on every VRRP state
    event): a change is a failover in cluster.history."""
    _, directory = _heal_settings(_functions())
    with _util("store")(directory) as data:
        return {"changed": _util("vip_moved")(data, time.time(), holders)}


def unretire(node):
    """Drop the mark of ``node``: orch.cluster builds it again and repairs resume."""
    _, directory = _heal_settings(_functions())
    with _util("store")(directory) as data:
        return {"unretired": data["retired"].pop(node, None) is not None, "node": node}


def history(limit=50):
    """The newest ``limit`` records: repairs (fault, node, outcome), refusals reported, faults left
    to a human, VIP moves. Newest first."""
    _, directory = _heal_settings(_functions())
    with _util("store")(directory) as data:
        return list(reversed(data["history"][-int(limit):]))


def status():
    """The heal file: live locks (and who holds them), coalesced events waiting, counts; and the
    lock records in the cluster's etcd, which every master sees (``etcd_locks``)."""
    functions = _functions()
    _, directory = _heal_settings(functions)
    now = time.time()
    with _util("store")(directory) as data:
        locks = {k: {"minion": v["minion"], "for_s": int(now - v["since"])}
                 for k, v in data["locks"].items() if _util("alive")(v, now)}
        found = {"locks": locks, "pending": data["pending"], "counts": data["counts"]}
    return {**found, "etcd_locks": etcd_locks()}


def etcd_locks():
    """The lock records in the cluster's etcd: {lock: {holder, lease, ttl_left}} (holder: master/
    what/run token pid), or why etcd could not say; None before this master has etcd credentials."""
    functions = _functions()
    try:
        description = functions["cluster_topology.description"]()
    except CommandExecutionError as exc:
        return f"no cluster description: {exc}"
    etcd = __utils__["k8sha_etcd_lock.cluster_etcd"](__opts__["cachedir"], description,
                                                     functions["cluster_topology.settings"]())
    return None if etcd is None else __utils__["k8sha_etcd_lock.records"](etcd)
