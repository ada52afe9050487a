"""
Accepts the key of a new cluster machine when, and only when, it presented the one-time
enrolment value that salt-cloud issued for its minion id (_utils/k8sha_enrolment.py).

The `salt/auth` events this engine reads are hints, never trusted: the key accepted is the
one the master itself holds in pending for that id, and only when its public key is the one
the event names and the value matches the master's own record. Refusals (replayed value,
unknown id, wrong value) leave the key unaccepted and are reported once a minute per id as
`k8sha/enrolment/refused` (id and reason; never the value) and in the master's log.

Master configuration (lab/lablib/master.py sets it; docs/openstack.md)::

    engines: [{k8sha_enrolment: {}}]
    auth_events_autosign_grains: [pend, denied]   # Salt puts the presented value in the event
"""

import logging
import time

import salt.key
import salt.utils.event

log = logging.getLogger(__name__)
REPORT_EVERY = 60  # seconds between two reports of the same refusal


def _pending_pub(keys, minion_id):
    return (keys.key_str(minion_id).get("minions_pre") or {}).get(minion_id)


def decide(opts, keys, data, utils):
    """(action, reason) for one salt/auth event: ('accept', ''), ('refuse', why) or
    ('ignore', '') for minions that present no enrolment value (not ours to judge)."""
    value = utils["k8sha_enrolment.presented"](data.get("autosign_grains"))
    minion_id = str(data.get("id") or "")
    if not value or data.get("act") not in ("pend", "denied"):
        return "ignore", ""
    ok, why = utils["k8sha_enrolment.check"](opts["pki_dir"], minion_id, value)
    if not ok:
        return "refuse", why
    if data.get("act") == "denied":
        return "refuse", f"{minion_id} already has an accepted key; this second key stays out"
    pending = _pending_pub(keys, minion_id)
    if not pending or pending.strip() != str(data.get("pub") or "").strip():
        return "refuse", f"the master holds no pending key for {minion_id} with the public key this request named"
    return "accept", ""


def start(interval=1):
    reported = {}
    with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=True) as bus, \
            salt.key.get_key(__opts__) as keys:
        while True:
            event = bus.get_event(full=True, wait=interval, tag="salt/auth")
            if not event:
                continue
            data = event["data"]
            action, why = decide(__opts__, keys, data, __utils__)
            minion_id = data.get("id")
            if action == "accept":
                keys.accept(match_dict={"minions_pre": [minion_id]})
                __utils__["k8sha_enrolment.consume"](__opts__["pki_dir"], minion_id,
                                                     __utils__["k8sha_enrolment.presented"](data["autosign_grains"]))
                log.info("k8sha_enrolment: accepted the key of %s (one-time value consumed)", minion_id)
                bus.fire_event({"id": minion_id}, "k8sha/enrolment/accepted")
            elif action == "refuse" and time.time() - reported.get((minion_id, why), 0) > REPORT_EVERY:
                reported[(minion_id, why)] = time.time()
                log.warning("k8sha_enrolment: key of %s left unaccepted: %s", minion_id, why)
                bus.fire_event({"id": minion_id, "reason": why}, "k8sha/enrolment/refused")
