"""cluster_build.jobs_finished (orch.heal's node-idle step): a repair waits for the node's other
Salt jobs (one a dead master left goes on there), fails naming them after its timeout, reports only
in a dry run, and fails when the node does not answer."""

import pytest
from helpers import salt_render


class Node:
    """saltutil.running on one node, as saltutil.cmd returns it: ``busy`` answers with a job
    (beside the question itself), then an idle node."""

    def __init__(self, busy=0, silent=False):
        self.busy, self.silent, self.asked = busy, silent, 0

    def cmd(self, targets, fun, arg=(), tgt_type=None, timeout=None):
        assert fun == "saltutil.running", fun
        self.asked += 1
        if self.silent:
            return {targets[0]: {"failed": True}}
        itself = {"fun": "saltutil.running", "jid": "2", "pid": 20}
        jobs = [itself] + ([{"fun": "state.highstate", "jid": "1", "pid": 10}] if self.asked <= self.busy else [])
        return {targets[0]: {"ret": jobs, "retcode": 0}}


@pytest.fixture
def jobs_finished(monkeypatch):
    def make(node, test=False):
        module = salt_render.load("_states", "cluster_build")
        module.__opts__ = {"test": test}
        module.__salt__ = {"saltutil.cmd": node.cmd}
        module.__utils__ = salt_render.as_utils("k8sha_minions")
        monkeypatch.setattr(module.time, "sleep", lambda seconds: None)
        return module.jobs_finished
    return make


def test_an_idle_node_passes_at_once(jobs_finished):
    node = Node()
    ret = jobs_finished(node)("cp2", timeout=60)
    assert ret["result"] is True and ret["comment"] == "cp2 runs no other Salt job" and node.asked == 1


def test_a_job_left_by_another_master_is_waited_for_and_named(jobs_finished):
    node = Node(busy=3)
    ret = jobs_finished(node)("cp2", timeout=60)
    assert ret["result"] is True and node.asked == 4
    assert "waited" in ret["comment"] and "state.highstate (jid 1, pid 10)" in ret["comment"], ret


def test_a_job_that_outlasts_the_timeout_stops_the_repair_with_the_way_out(jobs_finished):
    node = Node(busy=10**6)
    ret = jobs_finished(node)("cp2", timeout=0)
    assert ret["result"] is False and ret["changes"] == {}
    assert "still runs state.highstate (jid 1, pid 10)" in ret["comment"]
    assert "salt cp2 saltutil.kill_job JID" in ret["comment"]


def test_a_dry_run_reports_the_job_and_does_not_wait(jobs_finished):
    node = Node(busy=10**6)
    ret = jobs_finished(node, test=True)("cp2", timeout=600)
    assert ret["result"] is None and node.asked == 1 and "would wait" in ret["comment"]


def test_a_node_that_does_not_answer_fails_the_step(jobs_finished):
    ret = jobs_finished(Node(silent=True))("cp2", timeout=60)
    assert ret["result"] is False and "did not say which Salt jobs it runs" in ret["comment"]
