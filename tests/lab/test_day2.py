"""
Day-2 operations on the built lab cluster (docs/day-2.md): a control plane taken out with
orch.remove_node and built again with orch.cluster, the API answering through the VIP all
along. Durations and failed requests are measured in bench/day2.py.
"""

import json
import subprocess
import time

import yaml
from helpers.lab_session import API_PORT, REPO, VIP, config, master

CONTROL_PLANES = ("cp1", "cp2", "cp3")


def run_orch(sls, *args, timeout=900):
    data, code = master.salt_json("salt-run", "state.orch", sls, *args, timeout=timeout)
    states = data.get("data", {}).get(next(iter(data.get("data", {})), ""), {}) if isinstance(data, dict) else {}
    return code, {v.get("__id__", k): v for k, v in states.items()} if isinstance(states, dict) else {}


def etcd_names(lab, asked="cp1"):
    return sorted(m["name"] for m in lab.salt(asked, "etcd_cluster.members").get(asked) or [])


def pool(lab, lb):
    """{server: HAProxy status} of the API backend on ``lb``."""
    return {s["name"]: s["status"] for s in lab.salt(lb, "lb_status.haproxy_backends")[lb]["servers"]}


def probe(duration):
    """GET /healthz through the VIP every 0.1 s from the master's namespace (bench/probe.py)."""
    return subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{config.MASTER_NS}", "--", str(REPO / ".venv/bin/python"),
         str(REPO / "bench/probe.py"), "--host", VIP, "--port", str(API_PORT), "--duration", str(duration),
         "--interval", "0.1"], stdout=subprocess.PIPE, text=True)


def test_a_control_plane_is_removed_without_a_failed_request_and_built_again_by_orch_cluster(lab):
    remove = "pillar={node: cp3, confirm_even: true}"
    # A dry run and a run without the even-count confirmation change nothing.
    code, states = run_orch("orch.remove_node", remove, "test=True")
    assert code == 0, states
    code, states = run_orch("orch.remove_node", "pillar={node: cp3}")
    refusal = states["remove-node-cp3-permitted"]["comment"]
    assert code != 0 and "confirm_even=True" in refusal, refusal
    assert etcd_names(lab) == list(CONTROL_PLANES) and lab.machine("cp3").running

    prober = probe(120)
    code, states = run_orch("orch.remove_node", remove)
    prober.terminate()
    requests = json.loads(prober.communicate(timeout=30)[0])
    assert code == 0, {k: v["comment"] for k, v in states.items() if not v["result"]}
    print("\n" + "\n".join(f"{k}: {v['comment']}" for k, v in states.items()))
    failed = [r for r in requests if not r[1]]
    print(f"orch.remove_node cp3: {len(requests)} requests through the VIP, {len(failed)} failed")
    assert failed == [], failed
    assert etcd_names(lab) == ["cp1", "cp2"]
    assert "cp3" not in lab.salt("cp1", "kube_nodes.ready")["cp1"]
    assert not lab.machine("cp3").running
    assert pool(lab, "lb1")["cp3"] == pool(lab, "lb2")["cp3"] == "MAINT"
    assert "delete `- {name: cp3, role: control_plane" in states["remove-node-cp3-reported"]["comment"]

    # Taken out, still described: no repair for it, and orch.cluster will not build it back.
    admitted, _ = master.salt_json("salt-run", "heal.admit", "tag=salt/minion/cp3/start", "sender=cp3")
    assert admitted["admitted"] is False and "removed by orch.remove_node" in admitted["reason"], admitted
    code, states = run_orch("orch.cluster")
    assert code != 0 and "cluster.unretire cp3" in states["cluster-description-valid"]["comment"]
    assert not lab.machine("cp3").running

    # Adding a node is orch.cluster on the running cluster: cp3 is made and joined again.
    master.salt_json("salt-run", "cluster.unretire", "cp3")
    code, states = run_orch("orch.cluster", timeout=1200)
    assert code == 0, {k: v["comment"] for k, v in states.items() if not v["result"]}
    assert etcd_names(lab) == list(CONTROL_PLANES)
    lab.wait_for(lambda: lab.salt("cp1", "kube_nodes.ready")["cp1"].get("cp3") == "Ready", 60, "cp3 Ready")
    for lb in ("lb1", "lb2"):  # unretire put cp3 back in the pool; the health checks let it in once it serves
        lab.wait_for(lambda lb=lb: pool(lab, lb).get("cp3") == "UP", 60, f"cp3 UP on {lb}")


def configmaps(lab):
    """The names of the ConfigMaps in the default namespace, as the API serves them (cp1's kubectl)."""
    out = lab.salt("cp1", "cmd.run", "kubectl --kubeconfig /etc/kubernetes/admin.conf get configmaps -o name")["cp1"]
    return {line.split("/", 1)[1] for line in out.split() if line.startswith("configmap/")}


WRITE = """
import sys
sys.path.insert(0, "/usr/lib/k8sha-standin")
import standin
with standin.api_from_kubeconfig("/etc/kubernetes/admin.conf") as api:
    for i in range(1, {count} + 1):
        body = {{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {{"name": "{prefix}-%d" % i}}, "data": {{"i": str(i)}}}}
        status, answer = api.call("POST", "/api/v1/namespaces/default/configmaps", body)
        assert status == 201, (status, answer)
"""


def write_configmaps(lab, prefix, count):
    """``count`` ConfigMaps created through the VIP with cp1's admin credentials, each acknowledged
    (201). (kubectl create sends protobuf, which the stand-in API server does not read.)"""
    script = WRITE.format(prefix=prefix, count=count)
    assert lab.salt("cp1", "cmd.retcode", f"python3 -c '{script}'", "python_shell=True")["cp1"] == 0


def test_etcd_is_restored_from_the_latest_snapshot_after_two_of_three_control_planes_are_destroyed(lab):
    code, states = run_orch("orch.etcd_restore")  # refused while etcd has a quorum
    assert code != 0 and "etcd has a quorum" in states["etcd-restore-quorum-lost"]["comment"], states
    run = time.strftime("%H%M%S")
    write_configmaps(lab, f"before-the-snapshot-{run}", 20)
    taken, code = master.salt_json("salt-run", "etcd_snapshot.take", timeout=300)
    assert code == 0 and taken["taken"], taken
    write_configmaps(lab, f"after-the-snapshot-{run}", 5)
    before = configmaps(lab)
    subprocess.run([str(REPO / "lab" / "lab"), "salt-cloud", "-y", "-d", "cp2", "cp3"], check=True, capture_output=True)
    lab.wait_for(lambda: not any(h.get("healthy") for h in (lab.salt("cp1", "etcd_cluster.health").get("cp1") or {})
                                 .values()), 60, "etcd to lose its quorum", interval=2)

    code, states = run_orch("orch.etcd_restore", timeout=1500)
    print("\n" + "\n".join(f"{k}: {v['comment'][:200]}" for k, v in states.items()))
    assert code == 0, {k: v["comment"] for k, v in states.items() if not v["result"]}
    assert states["etcd-restore-snapshot-restored"]["changes"]["restored"] == taken["snapshot"].rsplit("/", 1)[1]
    after = configmaps(lab)
    kept = {n for n in before if n.startswith(f"before-the-snapshot-{run}-")}
    lost = {n for n in before if n.startswith(f"after-the-snapshot-{run}-")}
    print(f"ConfigMaps before the loss: {len(kept)} written before the snapshot, {len(lost)} after it; "
          f"after the restore: {len(after & kept)} and {len(after & lost)}")
    assert len(kept) == 20 and len(lost) == 5 and kept <= after  # every write acknowledged before the snapshot is there
    assert not (lost & after)  # writes after the snapshot are lost, as documented
    assert etcd_names(lab) == list(CONTROL_PLANES)
    health = lab.salt("cp1", "etcd_cluster.health")["cp1"]
    assert len(health) == 3 and all(h["healthy"] for h in health.values()), health


def served_and_file_expiry(lab, node):
    """(notAfter of the API server certificate on disk, of the one the API server serves)."""
    address = {"cp1": "198.51.100.21", "cp2": "198.51.100.22", "cp3": "198.51.100.23"}[node]
    script = (f"openssl x509 -noout -enddate -in /etc/kubernetes/pki/apiserver.crt; "
              f"openssl s_client -connect {address}:{API_PORT} </dev/null 2>/dev/null | openssl x509 -noout -enddate; "
              "grep client-certificate-data /etc/kubernetes/admin.conf | awk '{print $2}' | base64 -d "
              "| openssl x509 -noout -enddate")
    return tuple(lab.salt(node, "cmd.run", script, "python_shell=True")[node].split("\n"))


def test_certificates_are_renewed_one_control_plane_at_a_time_without_a_failed_request(lab):
    checked, code = master.salt_json("salt-run", "certs.check", "threshold_days=400")
    assert code == 0 and sorted(checked["expiring"]) == list(CONTROL_PLANES), checked  # 365-day certificates
    nothing, _ = master.salt_json("salt-run", "certs.check")
    assert nothing["expiring"] == {}, nothing  # none within the default 30 days
    before = {cp: served_and_file_expiry(lab, cp) for cp in CONTROL_PLANES}
    code, states = run_orch("orch.renew_certs")  # nothing is due: nothing changes
    assert code == 0 and not any(v["changes"] for v in states.values()), states

    prober = probe(300)
    code, states = run_orch("orch.renew_certs", "pillar={threshold_days: 400}")
    prober.terminate()
    requests = json.loads(prober.communicate(timeout=30)[0])
    print("\n" + "\n".join(f"{k}: {v['comment']}" for k, v in states.items()))
    assert code == 0, {k: v["comment"] for k, v in states.items() if not v["result"]}
    for cp in CONTROL_PLANES:
        assert "apiserver" in states[f"control-plane-{cp}-certificates-renewed"]["changes"]["renewed"], states
    failed = [r for r in requests if not r[1]]
    print(f"orch.renew_certs: {len(requests)} requests through the VIP, {len(failed)} failed")
    assert failed == [], failed
    for cp in CONTROL_PLANES:
        on_disk, served, admin = served_and_file_expiry(lab, cp)
        assert on_disk == served and on_disk != before[cp][0], (cp, before[cp], on_disk, served)
        assert admin != before[cp][2], (cp, before[cp], admin)  # the project's admin.conf renewed too
    assert sorted(lab.salt("cp1", "kube_nodes.ready")["cp1"]) == ["cp1", "cp2", "cp3", "worker1"]


def describe_version(lab, version):
    """cluster.kubernetes.version set in the lab's description (pillar/cluster.sls), as an operator edits it."""
    path = lab.pillar_dir / "cluster.sls"
    description = yaml.safe_load(path.read_text())
    description["cluster"]["kubernetes"] = {"version": version}
    path.write_text(yaml.safe_dump(description, sort_keys=False))


def installed(lab, node):
    """{package: version} of the Kubernetes packages on ``node``, and the held ones."""
    out = lab.machine(node).exec("dpkg-query", "-W", "-f=${Package} ${Version}\\n", "kubeadm", "kubelet", "kubectl").stdout
    held = lab.machine(node).exec("apt-mark", "showhold").stdout.split()
    return dict(line.split() for line in out.splitlines()), sorted(held)


def test_the_cluster_is_upgraded_one_node_at_a_time_in_kubeadms_order_without_a_failed_request(lab):
    nodes = list(CONTROL_PLANES) + ["worker1"]
    before = {node: installed(lab, node) for node in nodes}
    assert all(p == {"kubeadm": "1.31.2-1.1", "kubelet": "1.31.2-1.1", "kubectl": "1.31.2-1.1"} for p, _ in before.values())
    try:
        # Skipping a minor version is refused before anything changes.
        describe_version(lab, "1.33")
        code, states = run_orch("orch.upgrade")
        refusal = states["upgrade-to-1.33-permitted"]["comment"]
        assert code != 0 and "skips a minor version" in refusal and "set '1.32'" in refusal, refusal
        describe_version(lab, "1.32")
        code, states = run_orch("orch.upgrade", "test=True")  # the plan; nothing changes
        assert code == 0 and "would upgrade cp1, cp2, cp3, worker1 to 1.32" in states["upgrade-to-1.32-permitted"]["comment"]
        assert {node: installed(lab, node) for node in nodes} == before
        # A version the repository does not have: the first node's kubeadm package fails, the run
        # stops there, the node is back in HAProxy's pool and nothing moved.
        describe_version(lab, "1.32.7")
        code, states = run_orch("orch.upgrade")
        stopped = states["control-plane-cp1-upgraded"]["comment"]
        assert code != 0 and "cp1: kubeadm package" in stopped and "back in HAProxy's pool" in stopped, stopped
        assert "control-plane-cp2-upgraded" not in states or states["control-plane-cp2-upgraded"]["result"] is False
        assert {node: installed(lab, node) for node in nodes} == before
        for lb in ("lb1", "lb2"):
            lab.wait_for(lambda lb=lb: pool(lab, lb).get("cp1") == "UP", 30, f"cp1 UP on {lb} again")
        describe_version(lab, "1.32")

        prober = probe(900)
        code, states = run_orch("orch.upgrade", timeout=1800)
        prober.terminate()
        requests = json.loads(prober.communicate(timeout=30)[0])
        assert code == 0, {k: v["comment"] for k, v in states.items() if not v["result"]}
        for state_id, state in states.items():
            print(f"{state_id}: {state['comment'][:160]} ({state.get('duration', 0) / 1000:.1f} s)")
            for step in state["changes"].get("timeline", []):
                print(f"    +{step['at']:6.1f} s  {step['step']:<30} {step['seconds']:6.1f} s")
        failed = [r for r in requests if not r[1]]
        print(f"orch.upgrade 1.31 -> 1.32: {len(requests)} requests through the VIP, {len(failed)} failed")
        assert failed == [], failed
        assert states["upgrade-to-1.32-permitted"]["changes"]["snapshot"], states  # an etcd snapshot first

        for node in nodes:
            packages, held = installed(lab, node)
            assert packages == {"kubeadm": "1.32.0-1.1", "kubelet": "1.32.0-1.1", "kubectl": "1.32.0-1.1"}, (node, packages)
            assert {"kubeadm", "kubectl", "kubelet"} <= set(held), (node, held)
        versions = lab.salt("cp2", "kube_nodes.versions")["cp2"]
        assert {n: v["kubelet"] for n, v in versions.items()} == dict.fromkeys(nodes, "v1.32.0"), versions
        assert json.loads(lab.through_vip("/version"))["gitVersion"] == "v1.32.0"
        for cp in CONTROL_PLANES:
            pods = lab.salt(cp, "kubeadm_upgrade.versions")[cp]["static_pods"]
            assert pods == {"kube-apiserver": "v1.32.0", "etcd": "3.5.16-0"}, (cp, pods)
        health = lab.salt("cp1", "etcd_cluster.health")["cp1"]
        assert len(health) == 3 and all(h["healthy"] for h in health.values()), health

        # Done: a re-run changes nothing, and the packages state converges without a refusal.
        code, states = run_orch("orch.upgrade")
        assert code == 0 and not any(v["changes"] for v in states.values() if v["__id__"] != "upgrade-holds-the-repair-lock")
        applied = lab.salt("cp2", "state.apply", "kubernetes.packages")["cp2"]
        assert all(s["result"] is True and not s["changes"] for s in applied.values()), applied
    finally:
        describe_version(lab, installed(lab, "cp1")[0]["kubeadm"].split("-")[0].rsplit(".", 1)[0])
