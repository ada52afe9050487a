"""The master's kubeadm steps (_states/kubeadm_cluster.py) against minions that answer as
kubeadm_member would: what is called where, in which order, and what is left behind."""

import pytest
from helpers import salt_render

NODES = [{"name": "cp1", "role": "control_plane"}, {"name": "cp2", "role": "control_plane"},
         {"name": "cp3", "role": "control_plane"}, {"name": "worker1", "role": "worker"}]


class Minions:
    """saltutil.cmd as the master sees it: each node's kubeadm_member state; calls recorded."""

    def __init__(self, states, failing=()):
        self.states, self.failing, self.calls = dict(states), set(failing), []

    def cmd(self, targets, fun, arg=(), tgt_type=None, timeout=None):
        answers = {}
        for node in targets:
            self.calls.append((node, fun, tuple(arg)))
            if fun == "kubeadm_member.status":
                ret = {"state": self.states[node], "reason": "as found", "api_healthy": True}
            elif node in self.failing:
                answers[node] = {"ret": f"ERROR: CommandExecutionError: kubeadm {fun} failed on {node}", "retcode": 1}
                continue
            elif fun == "kubeadm_member.register_join":
                ret = {"token_id": f"tok{arg[0]}"}
            elif fun in ("kubeadm_member.init", "kubeadm_member.join"):
                self.states[node] = "member"
                ret = {"changed": True, "comment": f"{node}: {fun} done"}
            else:
                ret = "sha256:ab"
            answers[node] = {"ret": ret, "retcode": 0}
        return answers


@pytest.fixture
def steps(tmp_path):
    def make(states, failing=(), test=False):
        module = salt_render.load("_states", "kubeadm_cluster")
        minions = Minions(states, failing)
        snapshots = []
        module.__opts__ = {"test": test, "pillar_roots": {"base": [str(tmp_path)]}}
        module.__salt__ = {
            "saltutil.cmd": minions.cmd,
            "cluster_topology.description": lambda: {"nodes": NODES},
            "cluster_topology.members": lambda role: ["lb1", "lb2"] if role == "loadbalancer" else
                                            [n["name"] for n in NODES if n["role"] == role],
            "cluster_topology.settings": lambda: {"kubernetes": {"join_token_ttl": "1h"}},
        }
        module.__utils__ = salt_render.as_utils("k8sha_minions", "k8sha_heal")
        module.__states__ = {"etcd_snapshot.taken": lambda name, reason, exclude: snapshots.append(exclude)
                             or {"result": True, "comment": "taken"}}
        return module, minions, snapshots
    return make


def test_init_runs_on_the_first_control_plane_only_when_no_control_plane_is_a_member(steps):
    module, minions, _ = steps({"cp1": "absent", "cp2": "absent", "cp3": "absent"})
    ret = module.initialized("k8sha-lab")
    assert ret["result"] is True and ret["changes"] == {"cp1": "initialized"}
    assert [c for c in minions.calls if c[1] == "kubeadm_member.init"] == [("cp1", "kubeadm_member.init", ())]
    again = module.initialized("k8sha-lab")
    assert again["changes"] == {} and "control-plane members: cp1" in again["comment"]


def test_init_is_refused_on_half_joined_control_planes_and_dry_runs_change_nothing(steps):
    module, minions, _ = steps({"cp1": "absent", "cp2": "half-joined", "cp3": "absent"})
    ret = module.initialized("k8sha-lab")
    assert ret["result"] is False and "cp2 (as found)" in ret["comment"] and "kubeadm reset -f" in ret["comment"]
    module, minions, _ = steps({"cp1": "absent", "cp2": "absent", "cp3": "absent"}, test=True)
    ret = module.initialized("k8sha-lab")
    assert ret["result"] is None and ret["changes"] == {"cp1": "init"}
    assert not [c for c in minions.calls if c[1] != "kubeadm_member.status"]


def test_a_control_plane_joins_after_a_snapshot_and_leaves_no_material_or_token(steps, tmp_path):
    module, minions, snapshots = steps({"cp1": "member", "cp2": "absent", "cp3": "absent", "worker1": "absent"})
    ret = module.nodes_joined("cp2")
    assert ret["result"] is True and ret["changes"] == {"cp2": "joined"}
    assert snapshots == [["cp2"]]
    order = [f for _, f, _ in minions.calls if f != "kubeadm_member.status"]
    assert order == ["kubeadm_member.ca_cert_hash", "kubeadm_member.register_join", "kubeadm_member.join",
                     "kubeadm_member.revoke_join", "lb_status.server_state", "lb_status.server_state"]
    assert ("cp1", "kubeadm_member.revoke_join", ("tokcp2",)) in minions.calls
    # in HAProxy's pool on both load balancers (a control plane orch.remove_node took out stays in maintenance)
    assert {c for c in minions.calls if c[1] == "lb_status.server_state"} == {
        ("lb1", "lb_status.server_state", ("cp2", "ready")), ("lb2", "lb_status.server_state", ("cp2", "ready"))}
    assert not list(tmp_path.rglob("*.sls"))


def test_a_failed_join_still_removes_its_material_and_revokes_its_token(steps, tmp_path):
    module, minions, snapshots = steps({"cp1": "member", "cp2": "member", "cp3": "member", "worker1": "absent"},
                                       failing={"worker1"})
    ret = module.nodes_joined("workers", nodes=["worker1"])
    assert ret["result"] is False and "worker1: kubeadm kubeadm_member.join failed on worker1" in ret["comment"]
    assert snapshots == []  # a worker adds no etcd member
    assert ("cp1", "kubeadm_member.revoke_join", ("tokworker1",)) in minions.calls
    assert not list(tmp_path.rglob("*.sls"))


def test_joins_are_refused_for_nodes_outside_the_description_or_half_joined(steps):
    module, _, _ = steps({"cp1": "member", "cp2": "half-joined", "cp3": "absent", "worker1": "absent"})
    assert "not control planes or workers of the description: lb1" in module.nodes_joined("lb1")["comment"]
    refused = module.nodes_joined("cp2")
    assert refused["result"] is False and "half-joined: cp2 (as found)" in refused["comment"]
