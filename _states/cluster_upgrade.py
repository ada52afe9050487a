"""
A rolling upgrade to the description's cluster.kubernetes.version, from the master
(orch/upgrade.sls), in kubeadm's documented order: the first control plane (kubeadm upgrade
plan/apply), the other control planes (kubeadm upgrade node), then the workers; on each node the
kubeadm package first, the kubelet and kubectl packages after. One node at a time; a node that
already runs the version is left alone, so a re-run resumes where a stopped one ended.

    cluster_upgrade.permitted           refused before anything changes: a skipped minor version or a
                                        downgrade, a node not answering or NotReady, etcd not healthy,
                                        a control plane not UP in HAProxy; then an etcd snapshot
    cluster_upgrade.control_plane_upgraded
                                        out of HAProxy's pool on every load balancer, upgraded, Ready at
                                        the version, back in the pool once HAProxy sees it UP, /healthz
                                        through the VIP
    cluster_upgrade.worker_upgraded     kubeadm upgrade node, drained, kubelet, Ready at the version, uncordoned

What each node runs is asked from the node (its packages, its static pods' images) and from the
API (the version its kubelet reports): a node is done only when both agree.
"""

import time

__virtualname__ = "cluster_upgrade"


def __virtual__():
    return __virtualname__


def _ret(name, result=True, comment="", changes=None):
    return {"name": name, "result": result, "comment": comment, "changes": changes or {}}


def _ask(targets, fun, arg=(), timeout=120, kwarg=None):
    def salt_cmd(*args, **kwargs):
        return __salt__["saltutil.cmd"](*args, kwarg=kwarg, **kwargs)
    return __utils__["k8sha_minions.answers"](salt_cmd, targets, fun, arg, timeout)


def _ask_one(minion, fun, arg=(), timeout=120, kwarg=None):
    return _ask([minion], fun, arg, timeout, kwarg).get(minion, (False, f"{minion} did not answer"))


def _cause(answer):
    return __utils__["k8sha_minions.cause"](answer)


def _wanted():
    return str(__salt__["cluster_topology.description"]()["kubernetes"]["version"])


def _parts(version):
    """(major, minor[, patch]) of 1.32, 1.32.0, v1.32.0 or 1.32.0-1.1."""
    return tuple(int(p) for p in str(version).lstrip("v").split("-", 1)[0].split("."))


def _matches(version, wanted):
    return __salt__["kubeadm_member.version_matches"](version, wanted)


def node_versions(reported, kubelet):
    """Every version a node runs (pure): its packages, its static pods' Kubernetes images (etcd's
    tag is etcd's own version) and the kubelet version the API reports."""
    found = [v for v in (reported.get("packages") or {}).values() if v]
    found += [v for c, v in (reported.get("static_pods") or {}).items() if c != "etcd" and v]
    return [str(v).lstrip("v").split("-", 1)[0] for v in found + ([kubelet] if kubelet else [])]


def refusal(wanted, running):
    """Why the cluster cannot go to ``wanted`` (1.32 or 1.32.0) from ``running`` ({node: [versions]}),
    or None (pure). kubeadm moves one minor version at a time and never downgrades here."""
    target = _parts(wanted)
    every = [(node, _parts(v)) for node, versions in running.items() for v in versions]
    if not every:
        return "no node reported a version: nothing to upgrade from"
    lowest_node, lowest = min(every, key=lambda item: item[1])
    if target[1] > lowest[1] + 1:
        step = f"1.{lowest[1] + 1}"
        return (f"cluster.kubernetes.version: {wanted!r} skips a minor version: {lowest_node} runs "
                f"{'.'.join(map(str, lowest))}. kubeadm upgrades one minor version at a time: set {step!r}, run "
                f"orch.upgrade, then {wanted!r} and run it again. Nothing was changed")
    newer = sorted({node for node, v in every if v[:len(target)] > target})
    if newer:
        highest = max(v for _, v in every)
        return (f"cluster.kubernetes.version: {wanted!r} is older than what {', '.join(newer)} run(s) "
                f"({'.'.join(map(str, highest))}): kubeadm does not downgrade a cluster; set it back to "
                f"'{'.'.join(map(str, highest[:2]))}'. Nothing was changed")
    return None


def _api_view(exclude=()):
    """(control plane asked, {node: {ready, kubelet}}) from the first control plane that answers."""
    for control_plane in __salt__["cluster_topology.members"]("control_plane"):
        if control_plane in exclude:
            continue
        ok, view = _ask_one(control_plane, "kube_nodes.versions", timeout=60)
        if ok and isinstance(view, dict):
            return control_plane, view
    return None, {}


def _running(nodes):
    """({node: [versions]}, [problems]) from the nodes and the API."""
    answers = _ask(nodes, "kubeadm_upgrade.versions", timeout=60)
    asked, view = _api_view()
    problems = [] if asked else ["no control plane answered kubectl get nodes"]
    running = {}
    for node in nodes:
        ok, reported = answers.get(node, (False, f"{node} did not answer"))
        if not ok:
            problems.append(f"{node}: {_cause(reported)}")
            continue
        if asked and not view.get(node, {}).get("ready"):
            problems.append(f"{node} is not Ready in the API")
        running[node] = node_versions(reported, view.get(node, {}).get("kubelet"))
    return running, problems


def _up_everywhere(balancers, name):
    return __utils__["k8sha_minions.up_everywhere"](__salt__["saltutil.cmd"], balancers, name)


def _cluster_problems(control_planes):
    """etcd not healthy (asked from a control plane) and control planes not UP in HAProxy."""
    problems = []
    membership = None
    for control_plane in control_planes:
        ok, membership = _ask_one(control_plane, "etcd_cluster.membership", timeout=60)
        if ok and isinstance(membership, dict):
            break
    else:
        return ["no control plane answered etcd's membership"]
    problems += [f"etcd: {p}" for p in membership.get("problems", [])]
    problems += [f"etcd member {m.get('name')} is not healthy" for m in membership["members"] if not m.get("healthy")]
    balancers = __salt__["cluster_topology.members"]("loadbalancer")
    problems += [f"{cp} is not UP in HAProxy on every load balancer" for cp in control_planes
                 if not _up_everywhere(balancers, cp)]
    return problems


def permitted(name):
    """``name``: the cluster. Refused before anything changes (see the module); otherwise the plan,
    and an etcd snapshot kept on the master (no upgrade without one)."""
    wanted = _wanted()
    control_planes = __salt__["cluster_topology.members"]("control_plane")
    nodes = control_planes + __salt__["cluster_topology.members"]("worker")
    running, problems = _running(nodes)
    if problems:
        return _ret(name, False, "no upgrade while a node is not well: " + "; ".join(problems) + ". Nothing was changed")
    why = refusal(wanted, running)
    if why:
        return _ret(name, False, why)
    pending = [n for n in nodes if not all(_matches(v, wanted) for v in running[n])]
    if not pending:
        return _ret(name, comment=f"every node runs Kubernetes {wanted}: nothing to upgrade")
    problems = _cluster_problems(control_planes)
    if problems:
        return _ret(name, False, "no upgrade while the control plane is not healthy: " + "; ".join(problems)
                    + ". Nothing was changed")
    plan = {n: f"{'/'.join(sorted(set(running[n])))} -> {wanted}" for n in pending}
    if __opts__["test"]:
        return _ret(name, None, f"would upgrade {', '.join(pending)} to {wanted}, one at a time", {"plan": plan})
    snapshot = __states__["etcd_snapshot.taken"](name, reason=f"the upgrade to {wanted}")
    if not snapshot["result"]:
        return _ret(name, False, snapshot["comment"])
    return _ret(name, comment=f"upgrade to {wanted} permitted for {', '.join(pending)}; {snapshot['comment']}",
                changes={"plan": plan, "snapshot": snapshot["changes"].get("snapshot")})


class _Timeline:
    """Each step of one node's upgrade with its duration, for the state's changes (and bench/)."""

    def __init__(self):
        self.steps, self.started = [], time.monotonic()

    def run(self, step, call):
        began, wall = time.monotonic(), time.time()
        ok, answer = call()
        self.steps.append({"step": step, "at": round(began - self.started, 2), "began": round(wall, 2),
                           "seconds": round(time.monotonic() - began, 2), "ok": ok})
        if not ok:
            raise _StepFailed(f"{step}: {_cause(answer)}")
        return answer


class _StepFailed(Exception):
    pass


def _packages(node, packages):
    """The held packages moved to the description's version (state kubernetes.packages in upgrade mode)."""
    ok, result = _ask_one(node, "state.sls", ["kubernetes.packages"], timeout=600,
                          kwarg={"pillar": {"k8sha_upgrade": {"packages": list(packages)}}})
    if isinstance(result, dict):
        failed = [s.get("comment", "") for s in result.values() if isinstance(s, dict) and s.get("result") is False]
        if failed:
            return False, "; ".join(failed)
    return ok, result


def _ready_at(node, wanted, peer_exclude, timeout):
    """Wait until the API reports ``node`` Ready with its kubelet at ``wanted``."""
    deadline = time.monotonic() + timeout
    while True:
        asked, view = _api_view(exclude=peer_exclude)
        seen = view.get(node, {})
        if seen.get("ready") and seen.get("kubelet") and _matches(seen["kubelet"], wanted):
            return True, seen
        if time.monotonic() > deadline:
            return False, f"{node} not Ready at {wanted} after {timeout} s (the API via {asked}: {seen or 'no answer'})"
        time.sleep(2)


def _from_peer(node, fun, arg=()):
    """A kubectl step about ``node`` run from another control plane."""
    for control_plane in __salt__["cluster_topology.members"]("control_plane"):
        if control_plane != node:
            ok, answer = _ask_one(control_plane, fun, arg, timeout=400)
            if ok:
                return ok, answer
    return False, f"no other control plane could run {fun} {node}"


def _node_steps(timeline, node, wanted, first, control_plane):
    """kubeadm's order on one node: kubeadm package, upgrade apply/node, drain, kubelet and kubectl
    packages, kubelet restart, Ready at the version, uncordon."""
    timeout = int(__salt__["cluster_topology.settings"]()["kubernetes"]["upgrade_timeout"])
    timeline.run("kubeadm package", lambda: _packages(node, ["kubeadm"]))
    if first:
        timeline.run("kubeadm upgrade apply", lambda: _ask_one(node, "kubeadm_upgrade.apply", [wanted], timeout=1200))
    else:
        timeline.run("kubeadm upgrade node", lambda: _ask_one(node, "kubeadm_upgrade.node", timeout=1200))
    timeline.run("drain", lambda: _from_peer(node, "kube_nodes.drain", [node, "drain_before_upgrade"]))
    timeline.run("kubelet and kubectl packages", lambda: _packages(node, ["kubelet", "kubectl"]))
    timeline.run("kubelet restarted", lambda: _ask_one(node, "kubeadm_upgrade.restart_kubelet"))
    timeline.run(f"Ready at {wanted}", lambda: _ready_at(node, wanted, (node,) if control_plane else (), timeout))
    timeline.run("uncordon", lambda: _from_peer(node, "kube_nodes.uncordon", [node]))


def _done(node, wanted):
    """(done, what it runs): the node's versions and the API's view of its kubelet all at ``wanted``."""
    ok, reported = _ask_one(node, "kubeadm_upgrade.versions", timeout=60)
    if not ok:
        return None, _cause(reported)
    _, view = _api_view()
    versions = node_versions(reported, view.get(node, {}).get("kubelet"))
    return all(_matches(v, wanted) for v in versions), "/".join(sorted(set(versions)))


def _unless_done(name, wanted, how):
    """(the state's return when ``name`` is not upgraded now: done already, not answering, or a dry
    run; else None, what it runs)."""
    done, running = _done(name, wanted)
    if done is None:
        return _ret(name, False, f"{name}: {running}; nothing was changed"), running
    if done:
        return _ret(name, comment=f"{name} runs Kubernetes {wanted}"), running
    if __opts__["test"]:
        return _ret(name, None, f"would upgrade {name} from {running} to {wanted} ({how})"), running
    return None, running


def control_plane_upgraded(name, first=False):
    """``name`` (a control plane) upgraded without a failed request through the VIP; ``first``: the
    one that runs kubeadm upgrade apply."""
    wanted = _wanted()
    early, running = _unless_done(name, wanted, "kubeadm upgrade apply" if first else "kubeadm upgrade node")
    if early:
        return early
    balancers = __salt__["cluster_topology.members"]("loadbalancer")
    others = [cp for cp in __salt__["cluster_topology.members"]("control_plane") if cp != name]
    down = [cp for cp in others if not _up_everywhere(balancers, cp)]
    if down:
        return _ret(name, False, f"{', '.join(down)} not UP in HAProxy on every load balancer: {name} stays in the "
                                 "pool and is not upgraded")
    timeline = _Timeline()
    try:
        _out_of_the_pool(timeline, balancers, name, lambda: _node_steps(timeline, name, wanted, first, True))
    except _StepFailed as exc:
        return _ret(name, False, f"{name}: {exc}", {"timeline": timeline.steps})
    api = __salt__["cluster_topology.description"]()["api"]
    through_vip = __salt__["kubeadm_member.healthz"](f"https://{api['vip']}:{api['port']}/healthz")
    if not through_vip["healthy"]:
        return _ret(name, False, f"{name} upgraded, but /healthz through the VIP answers {through_vip['answer']}",
                    {"timeline": timeline.steps})
    return _ret(name, comment=f"{name} upgraded from {running} to {wanted}, back in HAProxy's pool",
                changes={"from": running, "to": wanted, "timeline": timeline.steps})


def _out_of_the_pool(timeline, balancers, name, steps):
    """``steps`` run while ``name`` is in maintenance on every load balancer; back in the pool in any
    case (its health check decides), then waited for UP everywhere."""
    def pool(state):
        return __utils__["k8sha_minions.pool_state"](__salt__["saltutil.cmd"], balancers, name, state)
    try:
        failed = pool("maint")
        if failed:
            raise _StepFailed(f"out of HAProxy's pool: {failed}")
        steps()
    except _StepFailed as exc:
        pool("ready")
        raise _StepFailed(f"{exc}; it is back in HAProxy's pool (its health check decides)") from None
    pool("ready")
    timeline.run("UP in HAProxy", lambda: _wait_up(balancers, name))


def _wait_up(balancers, name, timeout=120):
    deadline = time.monotonic() + timeout
    while not _up_everywhere(balancers, name):
        if time.monotonic() > deadline:
            return False, f"{name} not UP in HAProxy on every load balancer after {timeout} s"
        time.sleep(1)
    return True, None


def worker_upgraded(name):
    """``name`` (a worker) upgraded: kubeadm upgrade node, drained, kubelet, Ready, uncordoned."""
    wanted = _wanted()
    early, running = _unless_done(name, wanted, "kubeadm upgrade node")
    if early:
        return early
    timeline = _Timeline()
    try:
        _node_steps(timeline, name, wanted, False, False)
    except _StepFailed as exc:
        return _ret(name, False, f"{name}: {exc}", {"timeline": timeline.steps})
    return _ret(name, comment=f"{name} upgraded from {running} to {wanted}",
                changes={"from": running, "to": wanted, "timeline": timeline.steps})
