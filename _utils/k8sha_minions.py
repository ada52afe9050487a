"""
Asking minions from the master's state modules (cluster_build, kubeadm_cluster): one call to
many nodes through saltutil.cmd, each answer as (ok, return), and the cause of a failed one.
"""


def answers(salt_cmd, targets, fun, arg=(), timeout=120):
    """{minion: (ok, return)} for the targets that answered (``salt_cmd``: saltutil.cmd). A minion
    that did not return comes back as {'failed': True}, without a return: not ok."""
    if not targets:
        return {}
    replies = salt_cmd(list(targets), fun, arg=list(arg), tgt_type="list", timeout=timeout)
    return {m: (not a.get("failed") and a.get("retcode", 0) == 0 and not str(a.get("ret", "")).startswith("ERROR"),
                a.get("ret", f"{m} did not return"))
            for m, a in replies.items()}


def cause(answer):
    """The message of a failed call, without Salt's exception prefix."""
    return str(answer).split("CommandExecutionError: ", 1)[-1].strip().removeprefix("ERROR: ")


def pool_state(salt_cmd, balancers, server, state, timeout=60):
    """``server`` set to ``state`` (ready, drain, maint) in HAProxy on every load balancer
    (lb_status.server_state): {load balancer: why} of those that did not."""
    replies = answers(salt_cmd, balancers, "lb_status.server_state", [server, state], timeout)
    return {lb: replies.get(lb, (False, f"{lb} did not return"))[1] for lb in balancers
            if not replies.get(lb, (False,))[0]}


def up_everywhere(salt_cmd, balancers, server, timeout=30):
    """Whether HAProxy on every load balancer sees ``server`` UP (lb_status.haproxy_backends)."""
    replies = answers(salt_cmd, balancers, "lb_status.haproxy_backends", (), timeout)
    return all(ok and any(s["name"] == server and s["status"].startswith("UP") for s in ret["servers"])
               for ok, ret in (replies.get(lb, (False, {})) for lb in balancers))
