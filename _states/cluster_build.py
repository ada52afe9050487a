"""
The orchestrations' gates, from the master (orch/*.sls): each checks first and changes only
what is missing, so that a re-run on a healthy cluster reports no changes. A failure names
the node and the cause. Machines: _states/cluster_machines.py; kubeadm: _states/kubeadm_cluster.py.

    cluster_build.description_valid   the cluster description has no problem
    cluster_build.minions_ready       every node answers and has the project's modules
    cluster_build.jobs_finished       a node runs no other Salt job (one a dead master left goes on there)
    cluster_build.vip_answers         one load balancer holds the VIP and it accepts connections
    cluster_build.healthy             etcd members healthy, nodes Ready, /healthz through the VIP
"""

import socket
import time

__virtualname__ = "cluster_build"
SYNCED_KINDS = ("utils", "modules", "states", "beacons")  # the project's _utils (first: modules use them), _modules, ...


def __virtual__():
    return __virtualname__


def _ret(name, result=True, comment="", changes=None):
    return {"name": name, "result": result, "comment": comment, "changes": changes or {}}


def _description():
    return __salt__["cluster_topology.description"]()


def _names(role=None):
    return [n["name"] for n in _description()["nodes"] if role is None or n["role"] == role]


def _cmd(targets, fun, arg=(), timeout=120):
    """{minion: (ok, return)} for the targets that answered."""
    return __utils__["k8sha_minions.answers"](__salt__["saltutil.cmd"], targets, fun, arg, timeout)


def _error(answer):
    return __utils__["k8sha_minions.cause"](answer)


# --- the description and the minions ----------------------------------------------------------

def description_valid(name):
    """The cluster description (pillar `cluster`) has no problem; each problem names the field and the fix."""
    problems = __salt__["cluster_topology.validate"](require_secrets=False)["problems"]
    if problems:
        return _ret(name, False, "invalid cluster description (pillar/cluster.sls); nothing was changed:\n  "
                    + "\n  ".join(problems))
    retired = _retired_still_described()
    if retired:
        return _ret(name, False, "; ".join(retired) + "; nothing was changed")
    return _ret(name, comment=f"cluster {_description().get('name')}: description valid ({len(_names())} nodes)")


def _retired_still_described():
    """Why nodes orch.remove_node took out may not be built again: they are still described.
    Marks of nodes the operator has since deleted from the description are dropped (not in a dry run)."""
    directory = __utils__["k8sha_master.heal_directory"](__opts__, __salt__["cluster_topology.settings"]())
    described = set(_names())
    with __utils__["k8sha_heal.store"](directory) as data:
        if not __opts__["test"]:
            data["retired"] = {n: r for n, r in data["retired"].items() if n in described}
        return [__utils__["k8sha_heal.retired_reason"](data, n) for n in sorted(data["retired"]) if n in described]


def minions_ready(name, timeout=180, nodes=None):
    """Every node of the description (or ``nodes``) answers test.ping and has the project's
    Salt modules, states and beacons (a new machine has none)."""
    nodes = list(nodes or _names())
    deadline = time.monotonic() + timeout
    answered = {}
    while time.monotonic() < deadline:
        answered = {m for m, (ok, ret) in _cmd(nodes, "test.ping", timeout=10).items() if ok and ret is True}
        if answered >= set(nodes):
            break
        time.sleep(2)
    missing = [n for n in nodes if n not in answered]
    if missing:
        return _ret(name, False, f"no answer in {timeout} s from {', '.join(missing)}: is salt-minion running there "
                                 "and its key accepted (salt-key -L)?")
    if __opts__["test"]:  # syncing writes the project's modules on the minions
        return _ret(name, None, f"{len(nodes)} minions answer; the project's modules would be synced")
    delivered = {}
    for kind in SYNCED_KINDS:  # only what the project ships: sync_all syncs 18 kinds (~4x slower)
        synced = _cmd(nodes, f"saltutil.sync_{kind}")
        failed = [m for m, (ok, _) in synced.items() if not ok] + [n for n in nodes if n not in synced]
        if failed:
            return _ret(name, False, f"saltutil.sync_{kind} failed on {', '.join(failed)}")
        for minion, (_, names) in synced.items():
            if names:
                delivered.setdefault(minion, []).extend(names)
    return _ret(name, comment=f"{len(nodes)} minions answer; project modules in place",
                changes={"synced": delivered} if delivered else {})


def _other_jobs(node):
    """The Salt jobs running on ``node`` (saltutil.running), this question left out; None: no answer."""
    answer = _cmd([node], "saltutil.running", timeout=30).get(node)
    if not answer or not answer[0] or not isinstance(answer[1], list):
        return None
    return [job for job in answer[1] if isinstance(job, dict) and job.get("fun") != "saltutil.running"]


def _named(jobs):
    return ", ".join(f"{job.get('fun')} (jid {job.get('jid')}, pid {job.get('pid')})" for job in jobs)


def jobs_finished(name, timeout=600):
    """Node ``name`` runs no other Salt job. A job goes on on its node when the master that sent
    it dies (its highstate, its kubeadm join): a repair taken over by another master must not run
    beside it, and Salt 3008's ``queue: True`` only defers a state run, whose return then comes
    after salt.state has stopped waiting. Waits up to ``timeout`` s; a dry run only reports."""
    started, waited_for = time.monotonic(), []
    while True:
        jobs = _other_jobs(name)
        if not jobs or __opts__["test"] or time.monotonic() - started > timeout:
            break
        waited_for = waited_for or jobs
        time.sleep(2)
    if jobs is None:
        return _ret(name, False, f"{name} did not say which Salt jobs it runs (saltutil.running): is its minion up?")
    if jobs and __opts__["test"]:
        return _ret(name, None, f"{name} runs {_named(jobs)}: the repair would wait for it (up to {timeout} s)")
    if jobs:
        return _ret(name, False, f"{name} still runs {_named(jobs)} after {timeout} s; nothing was changed: "
                                 f"let it end (or salt {name} saltutil.kill_job JID), then repair again")
    if waited_for:
        return _ret(name, comment=f"{name} runs no other Salt job (waited {time.monotonic() - started:.0f} s for "
                                  f"{_named(waited_for)})")
    return _ret(name, comment=f"{name} runs no other Salt job")


# --- load balancers ----------------------------------------------------------------------------

def _tcp_open(host, port, timeout=2):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def vip_answers(name, timeout=60):
    """Exactly one load balancer holds the VIP ``name`` and it accepts TCP connections on the API port."""
    api = _description()["api"]
    balancers = _names("loadbalancer")
    deadline, holders = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        states = _cmd(balancers, "lb_status.vrrp", timeout=15)
        holders = sorted(m for m, (ok, ret) in states.items() if ok and isinstance(ret, dict) and ret.get("holds_vip"))
        if len(holders) == 1 and _tcp_open(name, api["port"]):
            return _ret(name, comment=f"{name}:{api['port']} answers; held by {holders[0]}")
        time.sleep(1)
    if len(holders) != 1:
        return _ret(name, False, f"the VIP {name} is held by {len(holders)} load balancers ({', '.join(holders) or 'none'})"
                                 f" after {timeout} s: check keepalived on {', '.join(balancers)} (lb_status.vrrp)")
    return _ret(name, False, f"{name}:{api['port']} refuses connections: is HAProxy running on {holders[0]}?")


# --- verification ------------------------------------------------------------------------------

def _problems():
    desc = _description()
    control_planes, expected = _names("control_plane"), _names("control_plane") + _names("worker")
    problems = []
    answers = _cmd(control_planes, "kubeadm_member.cluster_health", timeout=30)
    report = next((ret for ok, ret in answers.values() if ok and isinstance(ret, dict)), None)
    if report is None:
        return [f"no control plane could report the cluster's health ({', '.join(control_planes)})"]
    problems += report["etcd"]["problems"]
    not_ready = [n for n in expected if report["nodes"].get(n) != "Ready"]
    if not_ready:
        problems.append(f"nodes not Ready: {', '.join(not_ready)}")
    if not __salt__["kubeadm_member.healthz"](f"https://{desc['api']['vip']}:{desc['api']['port']}/healthz")["healthy"]:
        problems.append(f"/healthz through the VIP {desc['api']['vip']}:{desc['api']['port']} does not answer 200")
    return problems


def healthy(name, timeout=90):
    """etcd has exactly one healthy member per control plane (a dead or unknown member is named with
    the safe way to remove it), every node is Ready, the API answers through the VIP."""
    deadline = time.monotonic() + timeout
    problems = _problems()
    while problems and time.monotonic() < deadline:
        time.sleep(3)
        problems = _problems()
    if problems:
        return _ret(name, False, f"cluster {name} is not healthy after {timeout} s: " + "; ".join(problems))
    return _ret(name, comment=f"cluster {name}: {len(_names('control_plane'))} healthy etcd members, "
                              f"{len(_names('control_plane')) + len(_names('worker'))} nodes Ready, API healthy through the VIP")
