"""
The control planes' kubeadm certificates, as the master asks them: days left on each, and an
event for those below k8sha:lookup:kubernetes:cert_renewal_days (the master's schedule runs
``check`` daily). orch.renew_certs renews them.

CLI examples::

    salt-run certs.check                     # every control plane; k8sha/certs/expiring if any is due
    salt-run certs.check threshold_days=400  # what a renewal with that threshold would renew
"""

import logging

import salt.client
import salt.utils.event

log = logging.getLogger(__name__)

__virtualname__ = "certs"


def __virtual__():
    return __virtualname__


def due(expirations, threshold_days):
    """{node: {name: days}} of the certificates (not CAs) with fewer than ``threshold_days`` left (pure)."""
    return {node: {name: days for name, days in info["certificates"].items() if days < threshold_days}
            for node, info in expirations.items()
            if isinstance(info, dict) and any(d < threshold_days for d in info["certificates"].values())}


def check(threshold_days=None):
    """Days left on every kubeadm certificate of every control plane; those below the threshold
    are sent as <prefix>/certs/expiring. A control plane that does not answer is listed too."""
    functions = __utils__["k8sha_master.functions"](__opts__)
    settings = functions["cluster_topology.settings"]()
    threshold = float(threshold_days if threshold_days is not None else settings["kubernetes"]["cert_renewal_days"])
    control_planes = functions["cluster_topology.members"]("control_plane")
    with salt.client.LocalClient(mopts=__opts__) as client:
        answers = client.cmd(control_planes, "kubeadm_certs.expiration", tgt_type="list", timeout=60)
    expirations = {n: answers.get(n) if isinstance(answers.get(n), dict) else "did not answer" for n in control_planes}
    expiring = due(expirations, threshold)
    if expiring:
        log.warning("certs.check: certificates expire within %s days: %s", threshold, expiring)
        with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False) as bus:
            bus.fire_event({"threshold_days": threshold, "expiring": expiring,
                            "action": "salt-run state.orch orch.renew_certs"}, f"{settings['event_prefix']}/certs/expiring")
    return {"threshold_days": threshold, "expiring": expiring, "control_planes": expirations}
