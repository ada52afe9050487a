"""
One control plane's kubeadm certificates renewed without a failed request through the VIP, from
the master (orch/renew_certs.sls runs it for each control plane in turn):

    cluster_certs.renewed   when one of its certificates has fewer than the threshold's days left
                            (or ``force``): out of HAProxy's pool on every load balancer, kubeadm
                            certs renew all and its static pods restarted (kubeadm_certs.renew),
                            back in the pool once HAProxy's check sees it UP, /healthz through the VIP
"""

import time

__virtualname__ = "cluster_certs"


def __virtual__():
    return __virtualname__


def _ret(name, result=True, comment="", changes=None):
    return {"name": name, "result": result, "comment": comment, "changes": changes or {}}


def _ask(targets, fun, arg=(), timeout=120):
    return __utils__["k8sha_minions.answers"](__salt__["saltutil.cmd"], targets, fun, arg, timeout)


def _pool(balancers, name, state):
    """``name`` set to ``state`` in HAProxy on every load balancer: [failures]."""
    failed = __utils__["k8sha_minions.pool_state"](__salt__["saltutil.cmd"], balancers, name, state)
    return [f"{lb}: {why}" for lb, why in failed.items()]


def _up_everywhere(balancers, name):
    return __utils__["k8sha_minions.up_everywhere"](__salt__["saltutil.cmd"], balancers, name)


def renewed(name, threshold_days=None, force=False, timeout=120):
    """``name`` (a control plane): its certificates renewed when due."""
    threshold = float(threshold_days if threshold_days is not None
                      else __salt__["cluster_topology.settings"]()["kubernetes"]["cert_renewal_days"])
    ok, info = _ask([name], "kubeadm_certs.expiration", timeout=60).get(name, (False, f"{name} did not answer"))
    if not ok:
        return _ret(name, False, f"{name}: {__utils__['k8sha_minions.cause'](info)}; nothing was renewed")
    due = {n: d for n, d in info["certificates"].items() if d < threshold}
    if not due and not force:
        return _ret(name, comment=f"{name}: no certificate expires within {threshold:g} days (the soonest in "
                                  f"{min(info['certificates'].values()):g})")
    if __opts__["test"]:
        return _ret(name, None, f"would renew the certificates of {name} ({len(due)} due)", {"renewed": sorted(due)})
    balancers = __salt__["cluster_topology.members"]("loadbalancer")
    failed = _pool(balancers, name, "maint")
    if failed:
        _pool(balancers, name, "ready")
        return _ret(name, False, f"{name} could not leave HAProxy's pool ({'; '.join(failed)}); nothing was renewed")
    ok, done = _ask([name], "kubeadm_certs.renew", timeout=600).get(name, (False, f"{name} did not answer"))
    failed = _pool(balancers, name, "ready")  # back in the pool in any case: its health check decides
    if not ok:
        return _ret(name, False, f"{name}: {__utils__['k8sha_minions.cause'](done)}")
    deadline = time.monotonic() + timeout
    while not _up_everywhere(balancers, name):
        if time.monotonic() > deadline:
            return _ret(name, False, f"{name} renewed, but not UP in HAProxy after {timeout} s ({'; '.join(failed)})")
        time.sleep(1)
    api = __salt__["cluster_topology.description"]()["api"]
    through_vip = __salt__["kubeadm_member.healthz"](f"https://{api['vip']}:{api['port']}/healthz")
    if not through_vip["healthy"]:
        return _ret(name, False, f"{name} renewed, but /healthz through the VIP answers {through_vip['answer']}")
    soonest = min(done["days_left"].values())
    return _ret(name, comment=f"{name}: {len(done['renewed'])} certificates renewed (the soonest now expires in "
                              f"{soonest:g} days), static pods restarted, back in HAProxy's pool",
                changes={"renewed": done["renewed"]})
