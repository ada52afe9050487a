"""Certificate expiry and renewal: check-expiration's JSON read as kubeadm writes it, what the
master counts as due, and orch.renew_certs' step for one control plane against minions that
answer as kubeadm_certs and lb_status would (order, skip when not due, dry run)."""

import pytest
from helpers import salt_render

KUBEADM_JSON = {  # kubeadm certs check-expiration -o json (output.kubeadm.k8s.io/v1alpha3)
    "kind": "CertificateExpirationInfo", "apiVersion": "output.kubeadm.k8s.io/v1alpha3",
    "certificates": [
        {"name": "admin.conf", "expirationDate": "2027-01-01T00:00:00Z", "residualTime": 20 * 86400,
         "externallyManaged": False, "caName": "ca", "missing": False},
        {"name": "front-proxy-client", "expirationDate": None, "residualTime": 0, "externallyManaged": False,
         "missing": True}],
    "certificateAuthorities": [
        {"name": "ca", "expirationDate": "2036-01-01T00:00:00Z", "residualTime": 3650 * 86400,
         "externallyManaged": False, "missing": False}]}


def test_check_expiration_is_read_in_days_and_missing_certificates_are_left_out():
    certs = salt_render.load("_modules", "kubeadm_certs")
    assert certs.residual_days(KUBEADM_JSON) == {"admin.conf": 20.0, "ca": 3650.0}


def test_only_certificates_below_the_threshold_are_due_and_silent_nodes_are_not():
    runner = salt_render.load("_runners", "certs")
    found = {"cp1": {"certificates": {"apiserver": 20.0, "admin.conf": 300.0}, "authorities": {"ca": 10.0}},
             "cp2": {"certificates": {"apiserver": 300.0}, "authorities": {}}, "cp3": "did not answer"}
    assert runner.due(found, 30) == {"cp1": {"apiserver": 20.0}}


class Minions:
    def __init__(self, days):
        self.days, self.calls = days, []

    def cmd(self, targets, fun, arg=(), tgt_type=None, timeout=None):
        answers = {}
        for node in targets:
            self.calls.append((node, fun, tuple(arg)))
            ret = {"kubeadm_certs.expiration": lambda: {"certificates": {"apiserver": self.days}, "authorities": {}},
                   "kubeadm_certs.renew": lambda: {"renewed": ["apiserver"], "days_left": {"apiserver": 365.0}},
                   "lb_status.haproxy_backends": lambda: {"servers": [{"name": "cp1", "status": "UP"}]},
                   }.get(fun, lambda: {"done": fun})()
            answers[node] = {"ret": ret, "retcode": 0}
        return answers


@pytest.fixture
def renewal():
    def make(days, test=False):
        module = salt_render.load("_states", "cluster_certs")
        minions = Minions(days)
        module.__opts__ = {"test": test}
        module.__salt__ = {
            "saltutil.cmd": minions.cmd,
            "cluster_topology.settings": lambda: {"kubernetes": {"cert_renewal_days": 30}},
            "cluster_topology.members": lambda role: ["lb1", "lb2"],
            "cluster_topology.description": lambda: {"api": {"vip": "198.51.100.100", "port": 6443}},
            "kubeadm_member.healthz": lambda url: {"healthy": True, "answer": "200 ok"},
        }
        module.__utils__ = salt_render.as_utils("k8sha_minions")
        return module, minions
    return make


def test_a_due_control_plane_leaves_the_pool_renews_and_comes_back(renewal):
    module, minions = renewal(days=20.0)
    ret = module.renewed("cp1")
    assert ret["result"] is True and ret["changes"] == {"renewed": ["apiserver"]}, ret
    steps = [(node, fun, arg) for node, fun, arg in minions.calls if fun != "lb_status.haproxy_backends"]
    assert steps == [("cp1", "kubeadm_certs.expiration", ()),
                     ("lb1", "lb_status.server_state", ("cp1", "maint")), ("lb2", "lb_status.server_state", ("cp1", "maint")),
                     ("cp1", "kubeadm_certs.renew", ()),
                     ("lb1", "lb_status.server_state", ("cp1", "ready")), ("lb2", "lb_status.server_state", ("cp1", "ready"))]


def test_a_control_plane_with_time_left_is_not_touched_unless_forced(renewal):
    module, minions = renewal(days=200.0)
    ret = module.renewed("cp1")
    assert ret["result"] is True and not ret["changes"] and "no certificate expires within 30 days" in ret["comment"]
    assert [c[1] for c in minions.calls] == ["kubeadm_certs.expiration"]
    assert module.renewed("cp1", force=True)["changes"] == {"renewed": ["apiserver"]}


def test_a_dry_run_renews_nothing_and_leaves_the_pool_alone(renewal):
    module, minions = renewal(days=20.0, test=True)
    assert module.renewed("cp1")["result"] is None
    assert [c[1] for c in minions.calls] == ["kubeadm_certs.expiration"]
