"""
Beacon: HAProxy down/up and API-server backend state changes, from the stats socket
(load balancers). Events (tag ``salt/beacon/<minion>/k8sha_haproxy/<what>``):

    down     {"reason": ...}                                   HAProxy stopped answering
    up       {}                                                it answers again
    backend  {"server": "cp2", "status": "DOWN", "previous": "UP"}

While HAProxy stays down, ``down`` is repeated every ``remind`` seconds (default 60), so a
lost event or a failed repair is retried; the healing orchestration rate-limits itself.

.. code-block:: yaml

    beacons:
      k8sha_haproxy:
        - interval: 2
        - remind: 60
        - socket: /run/haproxy/admin.sock   # k8sha:lookup:haproxy:stats_socket (salt/beacons renders it)
        - disable_during_state_run: True

It reads nothing from a master: it runs in the minion's main process, and a call to a master's
file server there (a dead master's times out after 180 s) would make the minion deaf meanwhile.
"""

import time

import salt.utils.beacons

__virtualname__ = "k8sha_haproxy"


def __virtual__():
    return __virtualname__


def validate(config):
    if not isinstance(config, list):
        return False, "k8sha_haproxy: configuration must be a list"
    if not salt.utils.beacons.list_to_dict(config).get("socket"):
        return False, "k8sha_haproxy: no socket (HAProxy's stats socket): apply the beacons state (state.apply beacons)"
    return True, "valid"


def transitions(previous, current, now, last_down_sent, remind):
    """Events between two readings of lb_status.haproxy_backends (pure function)."""
    events = []
    if not current["running"]:
        if previous is None or previous["running"] or (remind and now - last_down_sent >= remind):
            events.append({"tag": "down", "reason": current.get("reason", "")})
        return events
    if previous is not None and not previous["running"]:
        events.append({"tag": "up"})
    before = {s["name"]: s["status"] for s in (previous or {}).get("servers", [])}
    for server in current["servers"]:
        old = before.get(server["name"])
        if old is not None and old.split()[0] != server["status"].split()[0]:
            events.append({"tag": "backend", "server": server["name"], "status": server["status"], "previous": old})
    return events


def beacon(config):
    config = salt.utils.beacons.list_to_dict(config)
    current = __salt__["lb_status.haproxy_backends"](config["socket"])
    previous = __context__.get("k8sha_haproxy.last")
    now = time.monotonic()
    events = transitions(previous, current, now, __context__.get("k8sha_haproxy.down_sent", 0),
                         config.get("remind", 60))
    if any(e["tag"] == "down" for e in events):
        __context__["k8sha_haproxy.down_sent"] = now
    __context__["k8sha_haproxy.last"] = current
    return events
