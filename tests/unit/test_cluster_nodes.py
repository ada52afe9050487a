"""orch.remove_node's master steps (_states/cluster_nodes.py) against minions that answer as
etcd_cluster, lb_status and kubeadm_member would: what is refused before anything changes,
what is called where, and that a dry run calls nothing that changes a node."""

import pytest
from helpers import salt_render

CHANGING = ("lb_status.server_state", "etcd_cluster.remove_member", "kubeadm_member.reset",
            "kube_nodes.delete", "kube_nodes.drain")


class Minions:
    """saltutil.cmd as the master sees it: a healthy 3-member etcd unless told otherwise."""

    def __init__(self, desc, unhealthy=(), silent=()):
        self.desc, self.unhealthy, self.silent, self.calls = desc, set(unhealthy), set(silent), []

    def membership(self):
        cps = [n for n in self.desc["nodes"] if n["role"] == "control_plane"]
        members = [{"id": f"{i:x}", "name": n["name"], "peer_urls": [f"https://{n['address']}:2380"],
                    "client_urls": [f"https://{n['address']}:2379"]} for i, n in enumerate(cps, 1)]
        health = {m["client_urls"][0]: {"healthy": m["name"] not in self.unhealthy} for m in members}
        return {"members": members, "health": health, "problems": []}

    def cmd(self, targets, fun, arg=(), tgt_type=None, timeout=None):
        answers = {}
        for node in targets:
            self.calls.append((node, fun, tuple(arg)))
            if node in self.silent:  # what saltutil.cmd gives for a minion that did not return
                answers[node] = {"failed": True}
                continue
            ret = {"etcd_cluster.membership": self.membership,
                   "kubeadm_member.status": lambda: {"state": "member", "reason": "as found"},
                   "etcd_cluster.remove_member": lambda: {"removed": True, "comment": f"removed {arg[0]}"},
                   "kube_nodes.drain": lambda: {"drained": True, "comment": "drained"},
                   }.get(fun, lambda: {"done": fun})()
            answers[node] = {"ret": ret, "retcode": 0}
        return answers


@pytest.fixture
def steps():
    etcd = salt_render.load("_modules", "etcd_cluster")

    def make(desc=None, test=False, **minion_options):
        desc = desc or salt_render.description()
        module = salt_render.load("_states", "cluster_nodes")
        minions = Minions(desc, **minion_options)
        module.__opts__ = {"test": test}
        module.__salt__ = {
            "saltutil.cmd": minions.cmd,
            "cluster_topology.description": lambda: desc,
            "cluster_topology.members": lambda role: [n["name"] for n in desc["nodes"] if n["role"] == role],
            "cluster_topology.settings": lambda: {"ports": {"etcd_peer": 2380}},
            "etcd_cluster.quorum_after_removal": etcd.quorum_after_removal,
        }
        module.__utils__ = salt_render.as_utils("k8sha_minions", "k8sha_description")
        return module, minions
    return make


def changing_calls(minions):
    return [c for c in minions.calls if c[1] in CHANGING]


def test_a_control_plane_leaving_three_is_refused_without_confirmation_and_nothing_is_called(steps):
    module, minions = steps()
    ret = module.removal_permitted("cp3")
    assert ret["result"] is False
    assert "2 control_plane nodes" in ret["comment"] and "confirm_even=True" in ret["comment"]
    assert minions.calls == []  # refused from the description alone, before any minion is asked


def test_with_confirmation_a_control_plane_may_leave_when_etcd_keeps_its_quorum(steps):
    module, minions = steps()
    ret = module.removal_permitted("cp3", confirm_even=True)
    assert ret["result"] is True and ret["changes"] == {"removing": "cp3"}, ret
    assert [c[1] for c in minions.calls] == ["etcd_cluster.membership"]


def test_a_control_plane_whose_removal_breaks_etcd_quorum_is_refused(steps):
    # cp2 is unhealthy: without cp3, 1 healthy of 2 members is below the quorum of 2.
    module, minions = steps(unhealthy={"cp2"})
    ret = module.removal_permitted("cp3", confirm_even=True)
    assert ret["result"] is False and "below the quorum of 2" in ret["comment"], ret
    assert changing_calls(minions) == []


def test_one_of_two_load_balancers_may_not_leave(steps):
    module, _ = steps()
    ret = module.removal_permitted("lb2")
    assert ret["result"] is False and "the VIP needs at least 2" in ret["comment"], ret


def test_a_node_not_described_is_refused(steps):
    module, _ = steps()
    ret = module.removal_permitted("cp9")
    assert ret["result"] is False and "cp9 is not a node of the cluster description" in ret["comment"]


def test_a_worker_may_leave_without_any_etcd_question(steps):
    module, minions = steps()
    assert module.removal_permitted("worker1")["result"] is True
    assert minions.calls == []


def run_removal(module, name):
    return [getattr(module, step)(name) for step in ("pods_evicted", "drained", "etcd_member_removed", "reset",
                                                      "kubernetes_node_deleted")]


def test_a_control_plane_is_drained_on_both_load_balancers_and_leaves_etcd_through_another(steps):
    module, minions = steps()
    results = run_removal(module, "cp3")
    assert all(r["result"] is True for r in results), results
    assert changing_calls(minions) == [
        ("cp1", "kube_nodes.drain", ("cp3",)),
        ("lb1", "lb_status.server_state", ("cp3", "maint")),
        ("lb2", "lb_status.server_state", ("cp3", "maint")),
        ("cp1", "etcd_cluster.remove_member", ("https://198.51.100.23:2380",)),
        ("cp3", "kubeadm_member.reset", ()),
        ("cp1", "kube_nodes.delete", ("cp3",)),
    ]


def test_a_dry_run_of_the_removal_changes_nothing(steps):
    module, minions = steps(test=True)
    results = run_removal(module, "cp3")
    assert all(r["result"] is None for r in results), results
    assert changing_calls(minions) == []


def test_a_silent_load_balancer_stops_the_removal_before_etcd_is_touched(steps):
    module, minions = steps(silent={"lb2"})
    ret = module.drained("cp3")
    assert ret["result"] is False and "lb2 could not take cp3 out of its pool" in ret["comment"]
    assert not [c for c in minions.calls if c[1] == "etcd_cluster.remove_member"]


def test_a_node_that_does_not_answer_is_not_reset_but_the_removal_goes_on(steps):
    module, minions = steps(silent={"worker1"})
    ret = module.reset("worker1")
    assert ret["result"] is True and "does not answer" in ret["comment"]
    assert ("worker1", "kubeadm_member.reset", ()) not in minions.calls


def test_the_node_delete_is_tried_again_while_etcd_elects_a_leader(steps):
    """Removing the etcd leader's member makes etcd elect another: meanwhile the API server answers
    503 "leader changed" (seen in the lab when cp3 led). The delete is tried again, not given up."""
    module, minions = steps()
    answers = iter([{"ret": "ERROR: kubectl delete node cp3: Error from server (ServiceUnavailable): "
                            "etcdserver: leader changed", "retcode": 1}])
    plain = minions.cmd

    def cmd(targets, fun, arg=(), tgt_type=None, timeout=None):
        if fun == "kube_nodes.delete":
            answer = next(answers, None)
            if answer:
                minions.calls.append((targets[0], fun, tuple(arg)))
                return {targets[0]: answer}
        return plain(targets, fun, arg, tgt_type, timeout)
    module.__salt__["saltutil.cmd"] = cmd
    ret = module.kubernetes_node_deleted("cp3", retry_for=5)
    assert ret["result"] is True and ret["changes"] == {"deleted": "cp3"}, ret
    assert [c for c in minions.calls if c[1] == "kube_nodes.delete"] == [("cp1", "kube_nodes.delete", ("cp3",)),
                                                                         ("cp2", "kube_nodes.delete", ("cp3",))]
    failing = iter([{"ret": "ERROR: kubectl delete node cp3: connection refused", "retcode": 1}] * 100)
    module.__salt__["saltutil.cmd"] = lambda targets, fun, arg=(), tgt_type=None, timeout=None: {targets[0]: next(failing)}
    ret = module.kubernetes_node_deleted("cp3", retry_for=0)
    assert ret["result"] is False and "could not be deleted for 0 s" in ret["comment"] and "connection refused" in ret["comment"]
