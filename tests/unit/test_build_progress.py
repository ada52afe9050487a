"""build.cluster's live lines: one per step as it ends, one when a step starts work on nodes."""

from helpers import salt_render

build = salt_render.load("_runners", "build")


def progress(result, comment, changes=None, run_num=2, length=17):
    return {"len": length, "ret": {"__id__": "cluster-machines-present", "name": "k8sha-lab", "result": result,
                                   "comment": comment, "changes": changes or {}, "duration": 7983.9,
                                   "__run_num__": run_num}}


def test_a_step_that_ended_shows_elapsed_time_number_result_and_comment():
    line = build.step_line(progress(True, "created lb1, lb2", {"created": ["lb1", "lb2"]}), 12.34)
    assert line == "   12.3 s   3/17  ok           * cluster-machines-present  (8.0 s): created lb1, lb2"


def test_a_failed_step_shows_its_whole_cause_and_long_comments_are_cut_otherwise():
    cause = "cp2: half-joined: found ca, missing kubelet_conf. Run `kubeadm reset -f` on it; nothing was changed " * 2
    failed = build.step_line(progress(False, cause), 3.0)
    assert "FAILED" in failed and failed.endswith(" ".join(cause.split()))
    assert build.step_line(progress(True, cause), 3.0).endswith("...")
    assert "would change" in build.step_line(progress(None, "would create lb1"), 1.0)


def test_only_jobs_that_work_on_nodes_are_announced():
    line = build.start_line({"fun": "state.sls", "arg": ["base,firewall"], "tgt": ["lb1", "cp1"]}, 5.0)
    assert line == "    5.0 s         started        state.sls base,firewall on lb1, cp1"
    assert "kubeadm join on cp2" in build.start_line({"fun": "kubeadm_member.join", "tgt": ["cp2"]}, 1.0)
    assert build.start_line({"fun": "test.ping", "tgt": ["cp2"]}, 1.0) is None
