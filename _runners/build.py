"""
An orchestration with live progress: one line per step as it ends (elapsed time, result, the
step's comment; a failure shows its node and cause at once), a line when a step starts work on
nodes (a state run, kubeadm init or join), then the cluster's status.

CLI examples::

    salt-run build.cluster                    # orch.cluster, live, then cluster.status
    salt-run build.cluster mods=orch.workers  # any orchestration of the project
    salt-run build.cluster test=True          # a dry run
"""

import threading
import time

import salt.minion
import salt.utils.event
import salt.utils.jid

__virtualname__ = "build"
# Jobs that mean a step has started work on nodes (anything else is a step's own check).
ANNOUNCED = {"state.highstate": "highstate", "state.apply": "highstate", "state.sls": "state.sls",
             "kubeadm_member.init": "kubeadm init", "kubeadm_member.join": "kubeadm join"}


def __virtual__():
    return __virtualname__


def step_line(data, elapsed):
    """One line for a step that ended (pure), from Salt's state progress event."""
    ret = data["ret"]
    result = {True: "ok", None: "would change", False: "FAILED"}[ret.get("result")]
    changed = "*" if ret.get("changes") else " "
    comment = " ".join(str(ret.get("comment", "")).split())
    if ret.get("result") is not False and len(comment) > 110:
        comment = comment[:107] + "..."
    number = f"{ret.get('__run_num__', 0) + 1}/{data.get('len', '?')}"
    return (f"{elapsed:7.1f} s  {number:>5}  {result:12} {changed} {ret.get('__id__', ret.get('name'))}"
            f"  ({ret.get('duration', 0) / 1000:.1f} s): {comment}")


def start_line(data, elapsed):
    """A line for a job that starts work on nodes, or None (pure)."""
    what = ANNOUNCED.get(data.get("fun"))
    if not what:
        return None
    args = data.get("arg") or []
    if what == "state.sls" and args:
        what = f"state.sls {args[0]}"
    targets = data.get("tgt")
    nodes = ", ".join(targets) if isinstance(targets, list) else str(targets)
    return f"{elapsed:7.1f} s         started        {what} on {nodes}"


def _follow(bus, jid, started, done):
    """Print the orchestration's events until it has ended and its last event is read."""
    while True:
        event = bus.get_event(full=True, wait=0.5)
        if event is None:
            if done.is_set():
                return
            continue
        tag, data, elapsed = event["tag"], event["data"], time.monotonic() - started
        if tag.startswith(f"salt/job/{jid}/prog/"):
            print(step_line(data, elapsed), flush=True)
        elif tag.startswith("salt/job/") and tag.endswith("/new"):
            line = start_line(data, elapsed)
            if line:
                print(line, flush=True)


def _orchestrate(mods, test, pillar, jid):
    """What the state.orchestrate runner does, with Salt's state progress events on for this run
    only (state.sls's ``state_events``): 0 when every step succeeded. A master's own state run
    sends none (its opts say `local`), and with a `master_uri` it would send them as a minion
    (refused: the master has no minion key); without both, State sends them on the master's bus."""
    with salt.minion.MasterMinion(dict(__opts__, local=False)) as minion:
        minion.opts.pop("master_uri", None)
        running = minion.functions["state.sls"](mods, test, None, pillar=pillar, state_events=True,
                                                __pub_jid=jid, orchestration_jid=jid)
        return 0 if __utils__["state.check_result"]({minion.opts["id"]: running}) else 1


def cluster(mods="orch.cluster", test=False, pillar=None):
    """Run the orchestration ``mods`` showing its steps live, then the cluster's status. The exit
    code is the orchestration's, or the status's when the orchestration succeeded."""
    jid = salt.utils.jid.gen_jid(__opts__)
    started, done = time.monotonic(), threading.Event()
    print(f"salt-run state.orchestrate {mods}{' test=True' if test else ''}: one line per step", flush=True)
    # The follower is a thread of its own (it needs no Salt loader); the orchestration runs here.
    with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=True) as bus:
        follower = threading.Thread(target=_follow, args=(bus, jid, started, done), name="progress", daemon=True)
        follower.start()
        try:
            code = _orchestrate(mods, test, pillar, jid)
        finally:
            done.set()
            follower.join(timeout=10)
    print(f"{time.monotonic() - started:7.1f} s  {mods}: {'done' if code == 0 else 'FAILED'}\n", flush=True)
    status = __salt__["cluster.status"]()
    status["data"]["retcode"] = code or status["data"]["retcode"]
    return status
