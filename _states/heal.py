"""
Master-side steps of the healing orchestrations (orch/heal_*.sls). The safety rules of
DESIGN.md §7 live here, so that every orchestration applies them the same way:

    heal.permitted   the event's node exists with the role the fault belongs to, the event
                     was sent by that node, the fault has not failed too often lately, and
                     no other repair of it (or, for control planes, of any control plane) runs
    heal.needed      the fault is re-checked from the master; `changes` only when it is real
    heal.recorded    the outcome is stored and announced (k8sha/heal/<kind>/result)
    heal.unlocked    the repair's lock is released (only by the run that took it)
    heal.stale_etcd_member_removed, heal.node_reset   steps of the control-plane rejoin

A refusal sends k8sha/heal/refused; too many failures send k8sha/heal/needs_human and
stop all tries until the window has passed. Attempts and locks are kept in a JSON file on
the master (k8sha:lookup:heal:state_dir), so they survive a master restart; locks expire.
"""

import contextlib
import fcntl
import json
import os
import secrets
import time

import salt.utils.event

__virtualname__ = "heal"


def __virtual__():
    return __virtualname__


def _ret(name, result=True, comment="", changes=None):
    return {"name": name, "result": result, "comment": comment, "changes": changes or {}}


def _settings():
    return __salt__["cluster_topology.settings"]()


def _prefix():
    return _settings()["event_prefix"]


def _event(suffix, data):
    """An event on the master's bus (these states run on the master, in orchestrations)."""
    with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False) as bus:
        bus.fire_event(data, f"{_prefix()}/heal/{suffix}")


def _node(minion):
    return next((n for n in __salt__["cluster_topology.description"]().get("nodes", []) if n.get("name") == minion), None)


@contextlib.contextmanager
def _store():
    """The attempts and locks file, read and written under an exclusive lock."""
    directory = _settings()["heal"]["state_dir"] or os.path.join(__opts__["cachedir"], "k8sha-heal")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    with open(os.path.join(directory, "heal.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = os.path.join(directory, "heal.json")
        try:
            with open(path) as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            data = {}
        data.setdefault("attempts", {})
        data.setdefault("locks", {})
        yield data
        with open(path + ".tmp", "w") as handle:
            json.dump(data, handle)
        os.replace(path + ".tmp", path)


def minion_of(tag):
    """The minion a beacon or start event is about: salt/beacon/<id>/..., salt/minion/<id>/start."""
    parts = tag.split("/")
    return parts[2] if len(parts) > 2 and parts[0] == "salt" and parts[1] in ("beacon", "minion") else None


def refusal(node, role, minion, sender):
    """Why an event must not start a repair, or None (pure function)."""
    if node is None:
        return f"{minion} is not a node of the cluster description"
    if role and node.get("role") != role:
        return f"{minion} is a {node.get('role')}, this repair is for a {role}"
    if sender and sender != minion:
        return f"the event is about {minion} but was sent by {sender}"
    return None


def recent_failures(attempts, now, window):
    return sum(1 for at, ok in attempts if not ok and now - at < window)


def permitted(name, tag, role=None, sender=None, lock=None):
    """
    ``name``: the kind of repair (haproxy, keepalived, config, apiserver, control_plane).
    Refuses (result False, nothing else runs) unless every safety rule holds.
    """
    minion = minion_of(tag)
    reason = refusal(_node(minion), role, minion, sender)
    if reason:
        _event("refused", {"kind": name, "minion": minion, "tag": tag, "sender": sender, "reason": reason})
        return _ret(name, False, f"refused: {reason}; nothing was done")
    heal = _settings()["heal"]
    lock_key = lock or f"{name}:{minion}"
    now = time.time()
    if __opts__["test"]:  # a dry run takes no lock and writes nothing
        __context__["k8sha_heal"] = {"lock": None, "token": None, "minion": minion, "tag": tag}
        return _ret(name, None, f"{name} repair of {minion} would be considered (dry run: no lock taken)")
    with _store() as data:
        attempts = data["attempts"].get(f"{name}:{minion}", [])
        if recent_failures(attempts, now, heal["window"]) >= heal["max_attempts"]:
            reason = (f"{recent_failures(attempts, now, heal['window'])} failed repairs of {name} on {minion} in "
                      f"the last {heal['window']} s: left to a human")
            _event("needs_human", {"kind": name, "minion": minion, "tag": tag, "reason": reason})
            return _ret(name, False, f"refused: {reason}")
        held = data["locks"].get(lock_key)
        if held and held["expires"] > now:
            return _ret(name, False, f"refused: {held['minion']} is being repaired ({lock_key}) since "
                                     f"{int(now - held['since'])} s; this event changes nothing")
        token = secrets.token_hex(8)
        data["locks"][lock_key] = {"minion": minion, "token": token, "since": now, "expires": now + heal["lock_ttl"]}
    __context__["k8sha_heal"] = {"lock": lock_key, "token": token, "minion": minion, "tag": tag}
    return _ret(name, comment=f"{name} repair of {minion} permitted (lock {lock_key})")


def build_locked(name="control_plane"):
    """orch.cluster holds the control-plane lock while it builds: the start events of the
    machines it creates must not start rejoins of nodes it is joining itself."""
    heal = _settings()["heal"]
    now = time.time()
    if __opts__["test"]:
        return _ret(name, None, f"orch.cluster would hold the {name} lock (dry run: not taken)")
    with _store() as data:
        held = data["locks"].get(name)
        # A build that stopped (a failed step) leaves its lock behind: the next build takes it over.
        if held and held["expires"] > now and held["minion"] != "orch.cluster":
            return _ret(name, False, f"a repair of {held['minion']} holds the {name} lock since "
                                     f"{int(now - held['since'])} s (expires in {int(held['expires'] - now)} s); "
                                     "run orch.cluster again when it is done")
        token = secrets.token_hex(8)
        data["locks"][name] = {"minion": "orch.cluster", "token": token, "since": now, "expires": now + heal["lock_ttl"]}
    __context__["k8sha_heal"] = {"lock": name, "token": token, "minion": None, "tag": None}
    return _ret(name, comment=f"orch.cluster holds the {name} lock: repairs wait until it is done")


def unlocked(name):
    """Releases the lock ``permitted`` took in this run; another run's lock is left alone."""
    mine = __context__.get("k8sha_heal")
    if not mine or not mine.get("lock"):
        return _ret(name, comment="no lock taken by this run")
    with _store() as data:
        held = data["locks"].get(mine["lock"])
        if held and held["token"] == mine["token"]:
            del data["locks"][mine["lock"]]
    return _ret(name, comment=f"lock {mine['lock']} released")


def recorded(name, ok=True):
    """Stores the outcome of the repair and sends k8sha/heal/<kind>/result."""
    mine = __context__.get("k8sha_heal", {})
    minion = mine.get("minion")
    heal = _settings()["heal"]
    now = time.time()
    if __opts__["test"]:
        return _ret(name, None, f"the outcome of the {name} repair of {minion} would be recorded (dry run)")
    with _store() as data:
        attempts = [a for a in data["attempts"].get(f"{name}:{minion}", []) if now - a[0] < heal["window"]]
        attempts.append([now, bool(ok)])
        data["attempts"][f"{name}:{minion}"] = attempts
    _event(f"{name}/result", {"minion": minion, "ok": bool(ok), "tag": mine.get("tag")})
    if not ok and recent_failures(attempts, now, heal["window"]) >= heal["max_attempts"]:
        _event("needs_human", {"kind": name, "minion": minion, "tag": mine.get("tag"),
                               "reason": f"{heal['max_attempts']} failed repairs in {heal['window']} s"})
    return _ret(name, comment=f"{name} repair of {minion}: {'healed' if ok else 'FAILED'}",
                changes={minion: "healed"} if ok else {})


# --- facts, re-checked from the master --------------------------------------------------------------

def _ask(minion, fun, arg=(), timeout=30):
    answer = __salt__["saltutil.cmd"]([minion], fun, arg=list(arg), tgt_type="list", timeout=timeout).get(minion)
    if not answer or answer.get("retcode", 0) != 0:
        return None
    return answer.get("ret")


def _fault(check, minion, detail):
    """(real, reason) for one kind of fault, asked from the master."""
    settings = _settings()
    if check == "service_stopped":
        service = detail or ""
        if service != settings["keepalived"]["service"]:
            return False, f"{service!r} is not a service these repairs manage"
        running = _ask(minion, "service.status", [service])
        return running is False, f"{service} on {minion} is {'running' if running else 'not running'}"
    if check == "haproxy_down":
        backends = _ask(minion, "lb_status.haproxy_backends") or {}
        return not backends.get("running", False), f"HAProxy on {minion}: {backends.get('reason', 'answers')}"
    if check == "config_drift":
        owner = __salt__["cluster_topology.config_owners"](_node(minion)["role"]).get(detail)
        if not owner:
            return False, f"{detail} is not a file Salt manages on {minion}"
        preview = __salt__["saltutil.cmd"]([minion], "state.sls", arg=[owner], kwarg={"test": True},
                                           tgt_type="list", timeout=120).get(minion, {}).get("ret")
        pending = [s.get("__id__") for s in (preview or {}).values() if isinstance(s, dict) and s.get("result") is None]
        return bool(pending), f"{detail} on {minion}: {'differs from ' + owner if pending else 'as Salt wrote it'}"
    if check == "apiserver_unhealthy":
        status = _ask(minion, "kubeadm_member.status", timeout=60) or {}
        if status.get("state") != "member":
            return False, f"{minion} is not a member ({status.get('state', 'no answer')}): a rejoin matter, not a restart"
        return _apiserver_fault_seen_by_load_balancers(minion)
    if check == "control_plane_rejoin":
        status = _ask(minion, "kubeadm_member.status", timeout=60)
        if status is None:
            return False, f"{minion} does not answer: nothing is done until it does"
        if status["state"] == "member":
            return False, f"{minion}: member ({status['reason']})"
        member = _etcd_member(minion)
        if member and member.get("healthy"):  # etcd's word over kubeadm's files (a manifest moved away)
            return False, (f"{minion}: kubeadm's files say {status['state']} ({status['reason']}), but its etcd "
                           f"member {member['name'] or member['id']} is healthy: left alone; put kubeadm's files back")
        return True, f"{minion}: {status['state']} ({status['reason']})"
    raise ValueError(f"unknown check {check}")


def _apiserver_fault_seen_by_load_balancers(minion):
    """(fault, reason): the API server's /healthz as the load balancers see it. They are the
    witnesses the security groups let reach it (the master is not one), and their answers come
    back over Salt's authenticated channel. A fault needs every answering LB to see it."""
    port = __salt__["cluster_topology.description"]()["api"]["port"]
    url = f"https://{_node(minion)['address']}:{port}/healthz"
    balancers = __salt__["cluster_topology.members"]("loadbalancer")
    answers = __salt__["saltutil.cmd"](balancers, "kubeadm_member.healthz", arg=[url], tgt_type="list", timeout=15)
    seen = {lb: a.get("ret") for lb, a in answers.items() if a.get("retcode", 0) == 0 and isinstance(a.get("ret"), bool)}
    if not seen:
        return False, f"no load balancer answered to probe /healthz of {minion}: nothing is done"
    healthy = sorted(lb for lb, ok in seen.items() if ok)
    if healthy:
        return False, f"/healthz of {minion} answers 200 from {', '.join(healthy)}"
    return True, f"/healthz of {minion} does not answer 200 from {', '.join(sorted(seen))}"


def member_at(members, address, peer_port):
    """The etcd member whose peer URL is ``address:peer_port``, or None (pure)."""
    wanted = f"{address}:{peer_port}"
    return next((m for m in members or [] if any(u.split("://", 1)[-1].rstrip("/") == wanted for u in m["peer_urls"])),
                None)


def _etcd_member(minion):
    """``minion``'s etcd member with its health, as another control plane's etcd reports it."""
    node = _node(minion)
    peer_port = _settings()["ports"]["etcd_peer"]
    for other in [n for n in __salt__["cluster_topology.members"]("control_plane") if n != minion]:
        membership = _ask(other, "etcd_cluster.membership", timeout=60)
        if isinstance(membership, dict):
            return member_at(membership["members"], node["address"], peer_port)
    return None


def needed(name, check, detail=None):
    """The fault is real, as the master sees it now: changes (and the repair runs) only then."""
    mine = __context__.get("k8sha_heal", {})
    real, reason = _fault(check, mine.get("minion"), detail)
    if not real:
        return _ret(name, comment=f"nothing to repair: {reason}")
    if __opts__["test"]:
        return _ret(name, None, f"would repair: {reason}", changes={"fault": reason})
    return _ret(name, comment=reason, changes={"fault": reason})


def verified(name, check, detail=None, timeout=60):
    """After a repair: the fault is gone (re-checked until ``timeout``) and, for the load
    balancers' faults, the API answers /healthz through the VIP."""
    mine = __context__.get("k8sha_heal", {})
    if __opts__["test"]:
        return _ret(name, None, f"the repair of {mine.get('minion')} would be verified (dry run: nothing was repaired)")
    api = __salt__["cluster_topology.description"]()["api"]
    deadline = time.monotonic() + timeout
    while True:
        real, reason = _fault(check, mine.get("minion"), detail)
        serving = check not in ("haproxy_down", "service_stopped") or __salt__["kubeadm_member.healthz"](f"https://{api['vip']}:{api['port']}/healthz")
        if not real and serving:
            return _ret(name, comment=f"repaired: {reason}" + ("; /healthz answers through the VIP" if serving else ""))
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
        members = _ask(other, "etcd_cluster.members")
        if not isinstance(members, list):
            continue
        if not any(peer in m["peer_urls"] for m in members):
            return _ret(name, comment=f"no etcd member has peer URL {peer}")
        member = _etcd_member(name)
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
    """A half-joined node is reset (kubeadm reset -f) before it joins again; others are left alone."""
    status = _ask(name, "kubeadm_member.status", timeout=60)
    if status is None:
        return _ret(name, False, f"{name} does not answer kubeadm_member.status")
    if status["state"] != "half-joined":
        return _ret(name, comment=f"{name} is {status['state']}: no reset needed")
    if __opts__["test"]:
        return _ret(name, None, f"{name} is half-joined ({status['reason']}): would run kubeadm reset -f",
                    {"reset": name})
    answer = __salt__["saltutil.cmd"]([name], "kubeadm_member.reset", tgt_type="list", timeout=300).get(name, {})
    if answer.get("retcode", 0) != 0:
        return _ret(name, False, f"kubeadm reset on {name} failed: {answer.get('ret')}")
    return _ret(name, comment=f"{name} was half-joined ({status['reason']}): reset", changes={"reset": name})
