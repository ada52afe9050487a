"""
Beacon: the local API server's /healthz over TLS (control planes). Events (tag
``salt/beacon/<minion>/k8sha_apiserver/<what>``):

    unhealthy  {"url": ..., "answer": ..., "failures": n}   after ``fall`` failed checks in a row
    healthy    {"url": ...}                                  after ``rise`` good ones

``unhealthy`` is repeated every ``remind`` seconds while it lasts. Silent on a node that is
not (yet, or any more) a control plane: no kube-apiserver manifest.

.. code-block:: yaml

    beacons:
      k8sha_apiserver:
        - interval: 2
        - fall: 3
        - rise: 2
        - url: https://127.0.0.1:6443/healthz   # the description's API port (salt/beacons renders it)
        - disable_during_state_run: True

It reads nothing from a master: it runs in the minion's main process, and a call to a master's
file server there (a dead master's times out after 180 s) would make the minion deaf meanwhile.
"""

import os
import time

import salt.utils.beacons

__virtualname__ = "k8sha_apiserver"
MANIFEST = "/etc/kubernetes/manifests/kube-apiserver.yaml"


def __virtual__():
    return __virtualname__


def validate(config):
    if not isinstance(config, list):
        return False, "k8sha_apiserver: configuration must be a list"
    if not salt.utils.beacons.list_to_dict(config).get("url"):
        return False, "k8sha_apiserver: no url (the API server's /healthz): apply the beacons state (state.apply beacons)"
    return True, "valid"


def step(state, ok, fall, rise, now, remind):
    """Next (state, events) from one check result (pure function). state: healthy,
    failures, successes, sent (when unhealthy was last sent)."""
    state = dict(state)
    events = []
    if ok:
        state["failures"], state["successes"] = 0, state["successes"] + 1
        if not state["healthy"] and state["successes"] >= rise:
            state["healthy"] = True
            events.append({"tag": "healthy"})
        return state, events
    state["failures"], state["successes"] = state["failures"] + 1, 0
    if state["healthy"] and state["failures"] >= fall:
        state["healthy"], state["sent"] = False, now
        events.append({"tag": "unhealthy", "failures": state["failures"]})
    elif not state["healthy"] and remind and now - state["sent"] >= remind:
        state["sent"] = now
        events.append({"tag": "unhealthy", "failures": state["failures"]})
    return state, events


def beacon(config):
    config = salt.utils.beacons.list_to_dict(config)
    # Only a node kubeadm made a control plane runs an API server: before init or join (and
    # after a reset) there is nothing to watch; a missing member is the control_plane repair's (orch.heal).
    if not os.path.exists(config.get("manifest", MANIFEST)):
        __context__.pop("k8sha_apiserver.state", None)
        return []
    url = config["url"]
    probe = __salt__["kubeadm_member.healthz"](url, config.get("timeout", 3))
    ok, answer = probe["healthy"], probe["answer"]
    state = __context__.get("k8sha_apiserver.state", {"healthy": True, "failures": 0, "successes": 0, "sent": 0})
    state, events = step(state, ok, config.get("fall", 3), config.get("rise", 2), time.monotonic(),
                         config.get("remind", 60))
    __context__["k8sha_apiserver.state"] = state
    for event in events:
        event.update({"url": url, "answer": answer})
    return events
