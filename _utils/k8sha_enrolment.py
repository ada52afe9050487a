"""
One-time enrolment values for new minions: no private key ever leaves the master.

salt-cloud (the project's drivers) issues a random value for each server it creates and
hands it to that server only (user data / the lab machine's files). The minion makes its
own key pair at first start and presents the value as the `k8sha_enrolment` grain in its
authentication request (Salt's `autosign_grains`). The master's engine
(_engines/k8sha_enrolment.py) accepts the pending key only when the value matches the one
issued for that minion id, then consumes it. Replays and unknown ids stay unaccepted.

Records live under ``<pki_dir>/k8sha_enrolment`` (0700, files 0600): ``issued/<id>`` holds the
value, ``used/<sha256 of the value>`` who used it and when (so a replay is named as one).
"""

import hashlib
import hmac
import json
import os
import pathlib
import secrets
import time

GRAIN = "k8sha_enrolment"
LIFETIME = 7200  # seconds, as Salt's own autosign_timeout (120 min)


def _dir(pki_dir, sub):
    path = pathlib.Path(pki_dir) / "k8sha_enrolment" / sub
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    return path


def _write(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)


def _digest(value):
    return hashlib.sha256(str(value).encode()).hexdigest()


def issue(pki_dir, minion_id, now=None):
    """A new one-time value for ``minion_id`` (replaces an earlier one)."""
    value = secrets.token_urlsafe(32)
    _write(_dir(pki_dir, "issued") / minion_id, {"value": value, "issued": now or time.time()})
    return value


def revoke(pki_dir, minion_id):
    """Forget the value issued for ``minion_id`` (its server was not created, or destroyed)."""
    (_dir(pki_dir, "issued") / minion_id).unlink(missing_ok=True)


def check(pki_dir, minion_id, value, now=None):
    """(True, '') when ``value`` is the unexpired value issued for ``minion_id``; else
    (False, why) naming the case: replay, no value issued, wrong value, expired."""
    now = now or time.time()
    used = _dir(pki_dir, "used") / _digest(value)
    if value and used.exists():
        record = json.loads(used.read_text())
        return False, (f"replayed enrolment value: it was used by {record['id']} at "
                       f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(record['at']))} UTC")
    path = _dir(pki_dir, "issued") / minion_id
    if not path.exists():
        return False, (f"no enrolment value was issued for the minion id {minion_id!r} (salt-cloud issues one "
                       "for each machine of the cluster description it creates)")
    record = json.loads(path.read_text())
    if now - record["issued"] > LIFETIME:
        return False, f"the enrolment value of {minion_id} expired ({LIFETIME // 60} min): re-create the machine"
    if not hmac.compare_digest(str(value or ""), record["value"]):
        return False, f"the enrolment value presented for {minion_id} is not the one issued for it"
    return True, ""


def consume(pki_dir, minion_id, value, now=None):
    """The value was used: it can never enrol anyone again."""
    _write(_dir(pki_dir, "used") / _digest(value), {"id": minion_id, "at": now or time.time()})
    revoke(pki_dir, minion_id)


def presented(autosign_grains):
    """The enrolment value in a minion's authentication request (its autosign grains), or None."""
    return (autosign_grains or {}).get(GRAIN) if isinstance(autosign_grains, dict) else None


def minion_settings(value, retry_seconds=2):
    """The minion configuration that presents ``value`` in its authentication request."""
    return {"grains": {GRAIN: value}, "autosign_grains": [GRAIN], "acceptance_wait_time": retry_seconds}
