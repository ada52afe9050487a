"""orch.etcd_restore's master steps (_states/etcd_restore.py) against minions that answer as
etcd_cluster and kubeadm_member would, and the manifest edits of the node side
(_modules/etcd_restore.py). The restore itself runs in the lab tier on a real etcd."""

import base64
import hashlib

import pytest
import yaml
from helpers import salt_render

CONTROL_PLANES = ["cp1", "cp2", "cp3"]


class Minions:
    def __init__(self, healthy=(), answering=("cp1",), states=None):
        self.healthy, self.answering, self.calls = set(healthy), set(answering), []
        self.states = states or {n: "member" for n in CONTROL_PLANES}
        self.pillar_seen = None

    def cmd(self, targets, fun, arg=(), tgt_type=None, timeout=None):
        answers = {}
        for node in targets:
            self.calls.append((node, fun))
            if node not in self.answering:  # what saltutil.cmd gives for a minion that did not return
                answers[node] = {"failed": True}
                continue
            if fun == "etcd_cluster.health":
                ret = {f"https://{n}:2379": {"healthy": n in self.healthy} for n in CONTROL_PLANES}
            elif fun == "kubeadm_member.status":
                ret = {"state": self.states[node]}
            elif fun == "etcd_restore.from_snapshot":
                self.pillar_seen = self.read_pillar(node)
                ret = {"revision": 7, "keys": 42, "kept": "/var/lib/etcd/member.before-restore-x"}
            else:
                ret = {"done": fun}
            answers[node] = {"ret": ret, "retcode": 0}
        return answers


@pytest.fixture
def restore(tmp_path):
    snapshots = tmp_path / "cache" / "k8sha-etcd-snapshots"
    snapshots.mkdir(parents=True)
    (snapshots / "20261130T000000Z-cp1.db").write_bytes(b"older")
    (snapshots / "20261201T000000Z-cp2.db").write_bytes(b"newest snapshot")
    pillar_root = tmp_path / "pillar"

    def make(test=False, **minion_options):
        module = salt_render.load("_states", "etcd_restore")
        minions = Minions(**minion_options)
        minions.read_pillar = lambda node: yaml.safe_load(
            (pillar_root / "secrets" / "etcd_restore" / f"{node}.sls").read_text())
        module.__opts__ = {"test": test, "cachedir": str(tmp_path / "cache"), "pillar_roots": {"base": [str(pillar_root)]}}
        module.__salt__ = {"saltutil.cmd": minions.cmd, "cluster_topology.members": lambda role: list(CONTROL_PLANES)}
        module.__utils__ = salt_render.as_utils("k8sha_minions", "k8sha_heal")
        module.__context__ = {}
        return module, minions
    make.pillar_root = pillar_root
    return make


def test_a_restore_is_refused_while_etcd_has_a_quorum(restore):
    module, minions = restore(healthy={"cp1", "cp2"}, answering=("cp1", "cp2"))
    ret = module.quorum_lost("k8sha-lab")
    assert ret["result"] is False and "etcd has a quorum (2 healthy members, quorum 2)" in ret["comment"]
    assert module.__context__ == {}


def test_the_survivor_is_the_first_control_plane_that_answers_with_kubeadms_files(restore):
    module, _ = restore(healthy={"cp2"}, answering=("cp2", "cp3"), states={"cp1": "member", "cp2": "absent",
                                                                         "cp3": "member"})
    ret = module.quorum_lost("k8sha-lab")
    assert ret["result"] is True and ret["changes"] == {"survivor": "cp3"}, ret


def test_the_newest_snapshot_reaches_the_survivors_pillar_only_during_the_restore(restore):
    module, minions = restore()
    assert module.quorum_lost("k8sha-lab")["result"] is True
    ret = module.snapshot_restored("k8sha-lab")
    assert ret["result"] is True and ret["changes"]["restored"] == "20261201T000000Z-cp2.db", ret
    material = minions.pillar_seen["k8sha_etcd_restore"]["cp1"]
    assert base64.b64decode(material["snapshot"]) == b"newest snapshot"
    assert material["sha256"] == hashlib.sha256(b"newest snapshot").hexdigest()
    assert list((restore.pillar_root / "secrets" / "etcd_restore").iterdir()) == []  # removed after it


def test_a_dry_run_restores_nothing_and_delivers_no_snapshot(restore):
    module, minions = restore(test=True, answering=("cp1", "cp2"))
    assert module.quorum_lost("k8sha-lab")["result"] is None
    ret = module.snapshot_restored("k8sha-lab", snapshot="20261130T000000Z-cp1.db")
    assert ret["result"] is None and "would restore 20261130T000000Z-cp1.db onto cp1" in ret["comment"]
    assert not (restore.pillar_root / "secrets").exists()
    assert module.others_reset("k8sha-lab")["result"] is None
    assert not [c for c in minions.calls if c[1] in ("etcd_restore.from_snapshot", "kubeadm_member.reset")]


def test_a_snapshot_that_is_not_kept_stops_the_restore(restore):
    module, minions = restore()
    module.quorum_lost("k8sha-lab")
    ret = module.snapshot_restored("k8sha-lab", snapshot="../../etc/shadow")
    assert ret["result"] is False and "no snapshot" in ret["comment"]
    assert ("cp1", "etcd_restore.from_snapshot") not in minions.calls


def test_only_other_control_planes_with_kubeadms_files_that_answer_are_reset(restore):
    module, minions = restore(answering=("cp1", "cp2"), states={"cp1": "member", "cp2": "member", "cp3": "absent"})
    module.quorum_lost("k8sha-lab")
    ret = module.others_reset("k8sha-lab")
    assert ret["changes"] == {"reset": ["cp2"]}, ret
    assert [c for c in minions.calls if c[1] == "kubeadm_member.reset"] == [("cp2", "kubeadm_member.reset")]


def test_the_restored_members_manifest_names_it_alone_and_keeps_every_other_flag():
    node = salt_render.load("_modules", "etcd_restore")
    pod = {"spec": {"containers": [{"command": ["etcd", "--name=cp1", "--data-dir=/var/lib/etcd",
                                                "--initial-cluster=cp1=https://a:2380,cp2=https://b:2380",
                                                "--initial-cluster-state=existing"]}]}}
    flags = node.flags_of(node.command_with(pod, {"initial-cluster": "cp1=https://a:2380",
                                                  "initial-cluster-state": "new"}))
    assert flags == {"name": "cp1", "data-dir": "/var/lib/etcd", "initial-cluster": "cp1=https://a:2380",
                     "initial-cluster-state": "new"}
