"""
Master-side steps of the one healing orchestration, orch/heal.sls, driven by the fault
catalogue (salt/k8sha/faults.yaml). The safety rules (docs/events-and-healing.md) live here:

    heal.permitted   the node exists with the fault's role, the fault has not failed too often
                     lately, and no other repair holds its lock (one per fault and node, or per
                     role for control planes); a lock taken by the heal.admit runner is adopted
    heal.needed      the fault is re-checked from the master (heal_check.fault); changes only
                     when it is real: the event that started the run is only a hint
    heal.verified    after the repair, the fault is gone (and the API answers through the VIP)
    heal.recorded    the outcome is stored and announced (k8sha/heal/<fault>/result); only a
                     verified fault whose repair failed counts against the attempt window
    heal.unlocked    the lock this run took is released (never one another process holds)
    heal.build_locked    orch.cluster holds the control-plane lock while it builds
    heal.stale_etcd_member_removed, heal.node_reset   steps of the control-plane rejoin

Too many failures send k8sha/heal/needs_human and stop all tries until the window has passed.
Attempts and locks are kept in a JSON file on the master (k8sha:lookup:heal:state_dir); a lock
is free as soon as the process that took it is gone (_utils/k8sha_heal.py). Each lock is also
taken in the cluster's etcd on a lease, and each outcome added to the attempt window kept there,
for other masters (_utils/k8sha_etcd_lock.py).
"""

import secrets
import time

import salt.utils.event
from salt.exceptions import CommandExecutionError

__virtualname__ = "heal"


def __virtual__():
    return __virtualname__


def _ret(name, result=True, comment="", changes=None):
    return {"name": name, "result": result, "comment": comment, "changes": changes or {}}


def _settings():
    return __salt__["cluster_topology.settings"]()


def _event(suffix, data):
    """An event on the master's bus (these states run on the master, in orchestrations)."""
    with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False) as bus:
        bus.fire_event(data, f"{_settings()['event_prefix']}/heal/{suffix}")


def _node(minion):
    return next((n for n in __salt__["cluster_topology.description"]().get("nodes", []) if n.get("name") == minion), None)


def _store():
    return __utils__["k8sha_heal.store"](__utils__["k8sha_master.heal_directory"](__opts__, _settings()))


def _cluster_etcd():
    """The cluster's etcd with this master's credentials, or None. An invalid description is
    not this step's to report: the build's next step names the fields."""
    try:
        description = __salt__["cluster_topology.description"]()
    except CommandExecutionError:
        return None
    return __utils__["k8sha_etcd_lock.cluster_etcd"](__opts__["cachedir"], description, _settings())


def _etcd_lock(key, holder, token):
    """(the lock in the cluster's etcd, or None; why it is refused, or None)."""
    return __utils__["k8sha_etcd_lock.take"](_cluster_etcd(), key, __opts__["id"], holder, token,
                                             _settings()["heal"]["etcd_lease_ttl"])


def _failures(own, shared, now, window):
    """Failed repairs within the window: every master's (etcd), and at least this master's own."""
    count = __utils__["k8sha_heal.recent_failures"]
    return max(count(own, now, window), count(shared or [], now, window))


def _release_file_lock(key, token):
    with _store() as data:
        __utils__["k8sha_heal.release"](data, key, token)


def _entry(fault):
    return __salt__["heal_check.catalogue"]()[fault]


def permitted(name, node, token=None, detail=None):
    """
    ``name``: the fault (an entry of the catalogue); ``node``: the node it is about.
    Refuses (result False, nothing else runs) unless every safety rule holds. ``token``: the
    lock the heal.admit runner took for this run (adopted, and released by the runner).
    """
    util = __utils__
    entry = _entry(name)
    found = _node(node)
    reason = util["k8sha_heal.refusal"](name, entry, node, found and found.get("role"))
    if not reason:
        with _store() as data:
            reason = util["k8sha_heal.retired_reason"](data, node)
    if reason:
        _event("refused", {"fault": name, "minion": node, "reason": reason})
        return _ret(name, False, f"refused: {reason}; nothing was done")
    heal, now = _settings()["heal"], time.time()
    key = util["k8sha_heal.lock_key"](name, entry, node)
    if __opts__["test"]:  # a dry run takes no lock and writes nothing
        __context__["k8sha_heal"] = {"lock": None, "token": None, "minion": node, "fault": name}
        return _ret(name, None, f"{name} repair of {node} would be considered (dry run: no lock taken)")
    shared = util["k8sha_etcd_lock.shared_attempts"](_cluster_etcd(), f"{name}:{node}", now, heal["window"])
    with _store() as data:
        failures = _failures(data["attempts"].get(f"{name}:{node}", []), shared, now, heal["window"])
        if failures >= heal["max_attempts"]:
            reason = f"{failures} failed repairs of {name} on {node} in the last {heal['window']} s: left to a human"
            _event("needs_human", {"fault": name, "minion": node, "reason": reason})
            return _ret(name, False, f"refused: {reason}")
        held = data["locks"].get(key)
        if token and held and held.get("token") == token:
            __context__["k8sha_heal"] = {"lock": None, "token": token, "minion": node, "fault": name}
            return _ret(name, comment=f"{name} repair of {node} admitted (lock {key} held by heal.admit)")
        mine = secrets.token_hex(8)
        held = util["k8sha_heal.claim"](data, key, node, now, heal["lock_ttl"], mine)
        if held:
            util["k8sha_heal.coalesce"](data, key, name, node, now, detail)
            return _ret(name, False, f"refused: {held['minion']} is being repaired ({key}) since "
                                     f"{int(now - held['since'])} s; re-checked once that repair is done")
    lock, refused = _etcd_lock(key, node, mine)
    if refused:
        _release_file_lock(key, mine)
        return _ret(name, False, f"refused: {refused}; nothing was done")
    __context__["k8sha_heal"] = {"lock": key, "token": mine, "minion": node, "fault": name, "etcd_lock": lock}
    return _ret(name, comment=f"{name} repair of {node} permitted (lock {key}{' and in etcd' if lock else ''})")


def build_locked(name="control_plane", wait=300, holder="orch.cluster", ttl=None, in_etcd=True):
    """orch.cluster (or another orchestration of the whole cluster: ``holder``) holds the
    control-plane lock while it builds: the start events of the machines it creates must not
    start rejoins of nodes it is joining itself. A repair that holds the lock (a rejoin, or a
    check of a start event), here or on another master (etcd), is waited for, up to ``wait`` s.
    ``ttl``: seconds the lock lasts (default heal:lock_ttl; it ends earlier with the run's
    process). ``in_etcd: False``: the heal file only (orch.etcd_restore: etcd has no quorum)."""
    heal = _settings()["heal"]
    if __opts__["test"]:
        return _ret(name, None, f"{holder} would hold the {name} lock (dry run: not taken)")
    token, deadline = secrets.token_hex(8), time.monotonic() + wait
    while True:
        now = time.time()
        with _store() as data:
            held = __utils__["k8sha_heal.claim"](data, name, holder, now, ttl or heal["lock_ttl"], token)
        lock, refused = (None, None) if held or not in_etcd else _etcd_lock(name, holder, token)
        if refused:
            _release_file_lock(name, token)
            held = {"minion": refused, "since": now, "expires": now}
        if not held:
            break
        if time.monotonic() > deadline:
            return _ret(name, False, f"a repair of {held['minion']} holds the {name} lock since "
                                     f"{int(now - held['since'])} s (waited {wait} s; it expires in "
                                     f"{int(held['expires'] - now)} s, or when that run ends); run {holder} "
                                     "again when it is done")
        time.sleep(2)
    __context__["k8sha_heal"] = {"lock": name, "token": token, "minion": None, "fault": None, "etcd_lock": lock}
    return _ret(name, comment=f"{holder} holds the {name} lock{' (and in etcd)' if lock else ''}: repairs wait "
                              "until it is done")


def etcd_client_ready(name):
    """This master's client certificate for the cluster's etcd (its repair locks there, for other
    masters): made once a control plane exists; the key is made here and never leaves the master
    (a control plane signs the request, etcd_cluster.sign_client)."""
    directory = __utils__["k8sha_etcd_lock.credentials_directory"](__opts__["cachedir"])
    paths = __utils__["k8sha_etcd_lock.credential_paths"](directory)
    if all(__salt__["file.file_exists"](p) for p in paths.values()):
        return _ret(name, comment=f"this master's etcd client certificate is in {directory}")
    if __opts__["test"]:
        return _ret(name, None, f"this master would get an etcd client certificate ({directory})")
    ok, done = __utils__["k8sha_etcd_lock.issue"](__salt__["saltutil.cmd"], directory, __opts__["id"],
                                                   __salt__["cluster_topology.members"]("control_plane"))
    if not ok:
        return _ret(name, False, f"no etcd client certificate for this master: {done}")
    return _ret(name, comment=f"this master's etcd client certificate is in {directory} (its repair locks go to "
                              "etcd too)", changes={"certificate": done["cert"]})


def unlocked(name):
    """Releases the lock ``permitted`` (or ``build_locked``) took in this run. Events coalesced
    meanwhile are handed back to heal.admit (k8sha/heal/recheck) so that none is lost."""
    mine = __context__.get("k8sha_heal")
    if not mine or not mine.get("lock"):
        return _ret(name, comment="no lock taken by this run")
    __utils__["k8sha_etcd_lock.give_back"](mine.get("etcd_lock"))
    with _store() as data:
        __utils__["k8sha_heal.release"](data, mine["lock"], mine["token"])
        waiting = bool(data["pending"].get(mine["lock"]))
    if waiting:
        _event("recheck", {"lock": mine["lock"]})
    return _ret(name, comment=f"lock {mine['lock']} released" + ("; coalesced events handed back" if waiting else ""))


def recorded(name, ok=True):
    """Stores the outcome of the repair and sends k8sha/heal/<fault>/result."""
    mine = __context__.get("k8sha_heal", {})
    minion = mine.get("minion")
    heal, now = _settings()["heal"], time.time()
    if __opts__["test"]:
        return _ret(name, None, f"the outcome of the {name} repair of {minion} would be recorded (dry run)")
    with _store() as data:
        attempts = [a for a in data["attempts"].get(f"{name}:{minion}", []) if now - a[0] < heal["window"]]
        attempts.append([now, bool(ok)])
        data["attempts"][f"{name}:{minion}"] = attempts
        __utils__["k8sha_heal.count"](data, "repaired" if ok else "repair_failed")
    etcd, pair = _cluster_etcd(), f"{name}:{minion}"
    __utils__["k8sha_etcd_lock.record_attempt"](etcd, pair, now, ok, heal["window"])  # the masters' shared window
    shared = __utils__["k8sha_etcd_lock.shared_attempts"](etcd, pair, now, heal["window"]) if not ok else None
    _event(f"{name}/result", {"minion": minion, "ok": bool(ok), "fault": name})
    if not ok and _failures(attempts, shared, now, heal["window"]) >= heal["max_attempts"]:
        _event("needs_human", {"fault": name, "minion": minion,
                               "reason": f"{heal['max_attempts']} failed repairs in {heal['window']} s"})
    return _ret(name, comment=f"{name} repair of {minion}: {'healed' if ok else 'FAILED'}",
                changes={minion: "healed"} if ok else {})


# --- facts, re-checked from the master --------------------------------------------------------------

def _fault(name, detail):
    mine = __context__.get("k8sha_heal", {})
    found = __salt__["heal_check.fault"](_entry(name)["check"], mine.get("minion"), detail)
    return found["real"], found["reason"]


def needed(name, detail=None):
    """The fault is real, as the master sees it now: changes (and the repair runs) only then."""
    real, reason = _fault(name, detail)
    if not real:
        return _ret(name, comment=f"nothing to repair: {reason}")
    if __opts__["test"]:
        return _ret(name, None, f"would repair: {reason}", changes={"fault": reason})
    return _ret(name, comment=reason, changes={"fault": reason})


def verified(name, detail=None, timeout=60):
    """After a repair: the fault is gone (re-checked until ``timeout``) and, when the catalogue
    says api_through_vip, the API answers /healthz through the VIP."""
    mine = __context__.get("k8sha_heal", {})
    if __opts__["test"]:
        return _ret(name, None, f"the repair of {mine.get('minion')} would be verified (dry run: nothing was repaired)")
    through_vip = _entry(name)["verify"].get("api_through_vip")
    api = __salt__["cluster_topology.description"]()["api"]
    deadline = time.monotonic() + timeout
    while True:
        real, reason = _fault(name, detail)
        serving = not through_vip or __salt__["kubeadm_member.healthz"](f"https://{api['vip']}:{api['port']}/healthz")["healthy"]
        if not real and serving:
            return _ret(name, comment=f"repaired: {reason}" + ("; /healthz answers through the VIP" if through_vip else ""))
        if time.monotonic() > deadline:
            return _ret(name, False, f"not repaired after {timeout} s: {reason}"
                                     + ("" if serving else "; /healthz does not answer through the VIP"))
        time.sleep(1)


def lost_reported(name, lost=()):
    """Lost minions are reported and deliberately left alone: a node that does not answer
    cannot be repaired safely (it may only be rebooting); it is handled when it is back."""
    lost = sorted(lost or [])
    if not lost:
        return _ret(name, comment="no minion lost")
    roles = {m: (_node(m) or {}).get("role", "unknown") for m in lost}
    if __opts__["test"]:
        return _ret(name, None, f"would report the loss of {', '.join(lost)} (dry run)")
    _event("node_lost", {"lost": lost, "roles": roles, "action": "none: repaired when it answers again"})
    return _ret(name, comment=f"lost: {', '.join(f'{m} ({r})' for m, r in roles.items())}; nothing done until they answer")


# --- steps of the control-plane rejoin ----------------------------------------------------------------

def stale_etcd_member_removed(name):
    """The etcd member with the peer URL of ``name`` (being rejoined) is removed, through a healthy
    control plane, only if the remaining members keep a quorum (etcd_cluster.remove_member)."""
    node = _node(name)
    peer = f"https://{node['address']}:{__salt__['cluster_topology.settings']()['ports']['etcd_peer']}"
    for other in [n for n in __salt__["cluster_topology.members"]("control_plane") if n != name]:
        members = __salt__["heal_check.ask"](other, "etcd_cluster.members")
        if not isinstance(members, list):
            continue
        if not any(peer in m["peer_urls"] for m in members):
            return _ret(name, comment=f"no etcd member has peer URL {peer}")
        _, member = __salt__["heal_check.etcd_member"](name)
        if member and member.get("healthy"):  # never remove a healthy voting member
            return _ret(name, False, f"refused: the etcd member {peer} of {name} is healthy; nothing was removed")
        if __opts__["test"]:
            return _ret(name, None, f"would remove the etcd member {peer} through {other}, if quorum allows",
                        {"removed": peer})
        answer = __salt__["saltutil.cmd"]([other], "etcd_cluster.remove_member", arg=[peer], tgt_type="list",
                                          timeout=60).get(other, {})
        if answer.get("retcode", 0) != 0:
            return _ret(name, False, f"{other} did not remove {peer}: {answer.get('ret')}")
        return _ret(name, comment=answer["ret"]["comment"], changes={"removed": peer})
    return _ret(name, False, "no other control plane answers for etcd: nothing was removed")


def node_reset(name):
    """The node is reset (kubeadm reset -f) before it joins again when kubeadm's files exist but
    etcd has no healthy member for it: half-joined, or its member was removed. A healthy member
    is never reset; a node with no kubeadm files needs no reset."""
    status = __salt__["heal_check.ask"](name, "kubeadm_member.status", timeout=60)
    if status is None:
        return _ret(name, False, f"{name} does not answer kubeadm_member.status")
    if status["state"] == "absent":
        return _ret(name, comment=f"{name} has no kubeadm files: no reset needed")
    answered, member = __salt__["heal_check.etcd_member"](name)
    if not answered:
        return _ret(name, False, f"no other control plane reports etcd's members: {name} is not reset")
    if member and member.get("healthy"):
        return _ret(name, False, f"refused: the etcd member of {name} is healthy; {name} is not reset")
    if __opts__["test"]:
        return _ret(name, None, f"{name} is {status['state']} without a healthy etcd member: would run kubeadm reset -f",
                    {"reset": name})
    answer = __salt__["saltutil.cmd"]([name], "kubeadm_member.reset", tgt_type="list", timeout=300).get(name, {})
    if answer.get("retcode", 0) != 0:
        return _ret(name, False, f"kubeadm reset on {name} failed: {answer.get('ret')}")
    return _ret(name, comment=f"{name} was {status['state']} ({status['reason']}) without a healthy etcd member: reset",
                changes={"reset": name})
