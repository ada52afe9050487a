"""The rolling upgrade (orch.upgrade): the version rules the master applies before anything changes,
one control plane's upgrade in kubeadm's order against minions that answer as the node modules
would (out of the pool first, back in at the end, also after a failure), a dry run, and the
stand-in's own kubeadm version policy and packages (lab/standin)."""

import importlib.machinery
import importlib.util
import pathlib
import subprocess
import sys

import pytest
from helpers import salt_render

upgrade = salt_render.load("_states", "cluster_upgrade")
member = salt_render.load("_modules", "kubeadm_member")
upgrade.__salt__ = {"kubeadm_member.version_matches": member.version_matches}


def test_one_minor_version_or_a_patch_is_permitted():
    assert upgrade.refusal("1.32", {"cp1": ["1.31.2"], "worker1": ["1.31.2"]}) is None
    assert upgrade.refusal("1.31.5", {"cp1": ["1.31.2"]}) is None
    # an upgrade stopped halfway is resumed: some nodes at 1.32 already
    assert upgrade.refusal("1.32", {"cp1": ["1.32.0"], "cp2": ["1.32.0", "1.31.2"], "cp3": ["1.31.2"]}) is None


def test_a_skipped_minor_version_is_refused_with_the_field_and_the_way():
    why = upgrade.refusal("1.33", {"cp1": ["1.32.0"], "cp2": ["1.31.2"]})
    assert why.startswith("cluster.kubernetes.version: '1.33' skips a minor version: cp2 runs 1.31.2"), why
    assert "set '1.32', run orch.upgrade, then '1.33'" in why and "Nothing was changed" in why


def test_a_downgrade_is_refused():
    why = upgrade.refusal("1.31", {"cp1": ["1.32.0"], "cp2": ["1.31.2"]})
    assert why.startswith("cluster.kubernetes.version: '1.31' is older than what cp1 run(s) (1.32.0)"), why
    assert upgrade.refusal("1.31.1", {"cp1": ["1.31.2"]}) is not None


def test_a_nodes_versions_are_its_packages_its_kubernetes_images_and_its_kubelet_not_etcds_tag():
    reported = {"packages": {"kubeadm": "1.32.0-1.1", "kubelet": "1.31.2-1.1", "kubectl": None},
                "static_pods": {"kube-apiserver": "v1.32.0", "etcd": "3.5.16-0"}}
    assert upgrade.node_versions(reported, "v1.31.2") == ["1.32.0", "1.31.2", "1.32.0", "1.31.2"]


class Minions:
    """Answers as the node modules would; ``fail``: the function that fails."""

    def __init__(self, fail=None):
        self.calls, self.fail, self.upgraded = [], fail, set()

    def versions(self, node):
        new = node in self.upgraded
        return {"packages": {p: "1.32.0-1.1" if new else "1.31.2-1.1" for p in ("kubeadm", "kubelet", "kubectl")},
                "static_pods": {"kube-apiserver": "v1.32.0" if new else "v1.31.2"}}

    def cmd(self, targets, fun, arg=(), tgt_type=None, timeout=None, kwarg=None):
        answers = {}
        for node in targets:
            packages = tuple((kwarg or {}).get("pillar", {}).get("k8sha_upgrade", {}).get("packages", ()))
            self.calls.append((node, fun, tuple(arg) + packages))
            if fun == self.fail:
                answers[node] = {"ret": f"ERROR: {fun} failed on {node}", "retcode": 1}
                continue
            if fun == "kubeadm_upgrade.restart_kubelet":
                self.upgraded.add(node)
            ret = {"kubeadm_upgrade.versions": lambda n=node: self.versions(n),
                   "kube_nodes.versions": lambda: {n: {"ready": True, "kubelet": "v1.32.0" if n in self.upgraded
                                                       else "v1.31.2"} for n in ("cp1", "cp2", "cp3")},
                   "lb_status.haproxy_backends": lambda: {"servers": [{"name": c, "status": "UP"}
                                                                      for c in ("cp1", "cp2", "cp3")]},
                   "state.sls": lambda: {"pkg_|-kubernetes-packages": {"result": True, "comment": "installed"}},
                   }.get(fun, lambda: {"done": fun})()
            answers[node] = {"ret": ret, "retcode": 0}
        return answers


@pytest.fixture
def control_plane_upgrade():
    def make(fail=None, test=False):
        module = salt_render.load("_states", "cluster_upgrade")
        minions = Minions(fail)
        module.__opts__ = {"test": test}
        module.__salt__ = {
            "saltutil.cmd": minions.cmd,
            "kubeadm_member.version_matches": member.version_matches,
            "cluster_topology.settings": lambda: {"kubernetes": {"upgrade_timeout": 5}},
            "cluster_topology.members": lambda role: {"loadbalancer": ["lb1", "lb2"],
                                                      "control_plane": ["cp1", "cp2", "cp3"]}.get(role, []),
            "cluster_topology.description": lambda: {"api": {"vip": "198.51.100.100", "port": 6443},
                                                     "kubernetes": {"version": "1.32"}},
            "kubeadm_member.healthz": lambda url: {"healthy": True, "answer": "200 ok"},
        }
        module.__utils__ = salt_render.as_utils("k8sha_minions")
        return module, minions
    return make


def changing_calls(minions):
    reads = {"kubeadm_upgrade.versions", "kube_nodes.versions", "lb_status.haproxy_backends"}
    return [(node, fun, arg) for node, fun, arg in minions.calls if fun not in reads]


def test_the_first_control_plane_leaves_the_pool_then_upgrades_in_kubeadms_order_and_comes_back(control_plane_upgrade):
    module, minions = control_plane_upgrade()
    ret = module.control_plane_upgraded("cp1", first=True)
    assert ret["result"] is True, ret
    assert changing_calls(minions) == [
        ("lb1", "lb_status.server_state", ("cp1", "maint")), ("lb2", "lb_status.server_state", ("cp1", "maint")),
        ("cp1", "state.sls", ("kubernetes.packages", "kubeadm")),
        ("cp1", "kubeadm_upgrade.apply", ("1.32",)),
        ("cp2", "kube_nodes.drain", ("cp1", "drain_before_upgrade")),
        ("cp1", "state.sls", ("kubernetes.packages", "kubelet", "kubectl")),
        ("cp1", "kubeadm_upgrade.restart_kubelet", ()),
        ("cp2", "kube_nodes.uncordon", ("cp1",)),
        ("lb1", "lb_status.server_state", ("cp1", "ready")), ("lb2", "lb_status.server_state", ("cp1", "ready"))]
    assert [s["step"] for s in ret["changes"]["timeline"]][-2:] == ["uncordon", "UP in HAProxy"]
    assert ret["changes"]["from"] == "1.31.2" and ret["changes"]["to"] == "1.32"
    # once done, a re-run changes nothing
    minions.calls.clear()
    again = module.control_plane_upgraded("cp1", first=True)
    assert again["result"] is True and not again["changes"] and changing_calls(minions) == []


def test_a_failed_kubeadm_upgrade_stops_before_the_kubelet_and_puts_the_node_back_in_the_pool(control_plane_upgrade):
    module, minions = control_plane_upgrade(fail="kubeadm_upgrade.node")
    ret = module.control_plane_upgraded("cp2")
    assert ret["result"] is False and "kubeadm upgrade node: kubeadm_upgrade.node failed on cp2" in ret["comment"], ret
    funs = [(node, fun) for node, fun, _ in changing_calls(minions)]
    assert ("cp2", "kubeadm_upgrade.restart_kubelet") not in funs
    assert funs[-2:] == [("lb1", "lb_status.server_state"), ("lb2", "lb_status.server_state")]
    assert changing_calls(minions)[-1][2] == ("cp2", "ready")


def test_a_dry_run_changes_nothing(control_plane_upgrade):
    module, minions = control_plane_upgrade(test=True)
    ret = module.control_plane_upgraded("cp1", first=True)
    assert ret["result"] is None and "would upgrade cp1 from 1.31.2 to 1.32 (kubeadm upgrade apply)" in ret["comment"]
    assert changing_calls(minions) == []


# --- the lab's stand-in: kubeadm's version policy and the two versions of its packages ----------

def load_kubeadm():
    """The kubeadm stand-in (a script) as a module, with its shared library."""
    sys.modules.setdefault("standin", salt_render.load("lab/standin", "standin"))
    loader = importlib.machinery.SourceFileLoader("kubeadm_standin_upgrade", str(salt_render.REPO / "lab/standin/kubeadm"))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("kubeadm_standin_upgrade", loader))
    loader.exec_module(module)
    return module


def test_the_standin_kubeadm_enforces_kubeadms_version_skew_policy():
    kubeadm = load_kubeadm()
    kubeadm.VERSION = "v1.32.0"
    assert kubeadm.version_policy_errors("v1.32.0", "v1.31.2", ["v1.31.2"]) == ([], [])
    mandatory, _ = kubeadm.version_policy_errors("v1.33.0", "v1.31.2", [])
    assert any("kubeadm can upgrade only 1 minor version at a time" in e for e in mandatory), mandatory
    assert any("at least one minor release higher than the kubeadm minor release (33 > 32)" in e for e in mandatory)
    _, skippable = kubeadm.version_policy_errors("v1.32.4", "v1.31.2", [])
    assert skippable == ['Specified version to upgrade to "v1.32.4" is higher than the kubeadm version "v1.32.0". '
                         "Upgrade kubeadm first using the tool you used to install kubeadm"]
    assert kubeadm.image("etcd", "v1.32.0") == "registry.k8s.io/etcd:3.5.16-0"
    assert kubeadm.image("kube-apiserver", "v1.32.0") == "registry.k8s.io/kube-apiserver:v1.32.0"


def test_the_lab_repository_has_one_version_per_minor_and_each_binary_reports_its_packages(tmp_path):
    subprocess.run([str(salt_render.REPO / "lab/standin/build-packages"), str(tmp_path)], check=True,
                   capture_output=True)
    for minor, version in (("1.31", "1.31.2-1.1"), ("1.32", "1.32.0-1.1")):
        repo = tmp_path / f"v{minor}"
        assert f"Version: {version}" in (repo / "Packages").read_text()
        root = tmp_path / f"root-{minor}"
        subprocess.run(["dpkg-deb", "-x", str(repo / f"kubeadm_{version}_all.deb"), str(root)], check=True)
        short = subprocess.run(["python3", str(root / "usr/bin/kubeadm"), "version", "-o", "short"], check=True,
                               capture_output=True, text=True, env={"PYTHONPATH": str(salt_render.REPO / "lab/standin")})
        assert short.stdout.strip() == "v" + version.split("-")[0]
        assert f'VERSION = "v{version.split("-")[0]}"' in pathlib.Path(root / "usr/bin/kube-apiserver").read_text()
    assert "kubelet (>= 1.31)" in (tmp_path / "v1.32/Packages").read_text()


class ClusterMinions(Minions):
    """Also answers etcd's membership (``unhealthy``: a member that is not healthy) and snapshots."""

    def __init__(self, unhealthy=None):
        super().__init__()
        self.unhealthy = unhealthy

    def cmd(self, targets, fun, arg=(), tgt_type=None, timeout=None, kwarg=None):
        if fun == "etcd_cluster.membership":
            self.calls.extend((node, fun, ()) for node in targets)
            return {node: {"ret": {"members": [{"name": m, "healthy": m != self.unhealthy} for m in ("cp1", "cp2", "cp3")],
                                   "problems": []}, "retcode": 0} for node in targets}
        return super().cmd(targets, fun, arg, tgt_type, timeout, kwarg)


@pytest.mark.parametrize("unhealthy", ["cp3", None])
def test_the_upgrade_starts_only_with_a_healthy_etcd_and_after_a_snapshot(control_plane_upgrade, unhealthy):
    module, _ = control_plane_upgrade()
    minions = ClusterMinions(unhealthy)
    snapshots = []
    module.__salt__["saltutil.cmd"] = minions.cmd
    module.__salt__["cluster_topology.members"] = lambda role: {"loadbalancer": ["lb1", "lb2"],
                                                                "control_plane": ["cp1", "cp2", "cp3"]}.get(role, [])
    module.__states__ = {"etcd_snapshot.taken": lambda name, reason: snapshots.append(reason) or
                         {"result": True, "comment": "snapshot kept", "changes": {"snapshot": "/cache/s.db"}}}
    ret = module.permitted("k8sha-lab")
    if unhealthy:
        assert ret["result"] is False and "etcd member cp3 is not healthy" in ret["comment"], ret
        assert snapshots == [] and changing_calls(minions) == [("cp1", "etcd_cluster.membership", ())]
    else:
        assert ret["result"] is True and ret["changes"]["snapshot"] == "/cache/s.db", ret
        assert snapshots == ["the upgrade to 1.32"] and set(ret["changes"]["plan"]) == {"cp1", "cp2", "cp3"}
