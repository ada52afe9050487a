"""
States for this node's membership in the kubeadm cluster (module: _modules/kubeadm_member.py).

.. code-block:: yaml

    kubernetes-cluster-initialised:
      kubeadm_member.initialized:
        - name: k8sha-lab            # the cluster's name, for the output

    kubernetes-node-joined:
      kubeadm_member.joined:
        - name: cp2                  # this minion's id

Both change nothing on a member, refuse a half-joined node (it needs `kubeadm reset -f`),
and never show join material: it comes from pillar and kubeadm's output is redacted.
"""

from salt.exceptions import CommandExecutionError

__virtualname__ = "kubeadm_member"


def __virtual__():
    return __virtualname__


def _converge(name, action, verb):
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    current = __salt__["kubeadm_member.status"]()
    if current["state"] == "member":
        ret["comment"] = f"{current['node']} is a member of the cluster ({current['role']})"
        return ret
    if current["state"] == "half-joined":
        ret["result"] = False
        ret["comment"] = (f"{current['node']} is half-joined: {current['reason']}. Run `kubeadm reset -f` on it "
                          f"(the control_plane repair, orch.heal, does) and re-run; nothing was changed")
        return ret
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"{current['node']} would {verb}"
        return ret
    try:
        done = __salt__[f"kubeadm_member.{action}"]()
    except CommandExecutionError as exc:
        ret["result"], ret["comment"] = False, f"{current['node']}: {exc}"
        return ret
    ret["comment"] = done["comment"]
    if done["changed"]:
        ret["changes"] = {"membership": {"old": current["state"], "new": "member"}}
    return ret


def initialized(name):
    """The cluster exists: kubeadm init on this (first) control plane unless it is a member."""
    return _converge(name, "init", f"run kubeadm init for cluster {name}")


def joined(name):
    """This node is a member: kubeadm join with the material the orchestration put in pillar."""
    return _converge(name, "join", "run kubeadm join")
