"""orch.cluster in the lab: from nothing to a healthy cluster, a re-run that changes nothing,
a bad description stopped before any machine, join material that never leaks, and the
seed's goal: a control plane lost while a client writes through the VIP."""

import base64
import json
import subprocess
import tempfile
import time

import yaml
from helpers.lab_session import API_PORT, REPO, VIP, config, master, secgroups

CONTROL_PLANES = ("cp1", "cp2", "cp3")
NODES = ("cp1", "cp2", "cp3", "worker1")


def test_a_bad_description_stops_orch_cluster_before_any_machine_exists(lab):
    run = lab.bad_pillar_run
    assert run is not None, "K8SHA_LAB_REUSE: the lab was not started from nothing"
    assert run["code"] != 0
    ran = list(run["states"])  # failhard: nothing after the failed step
    assert sorted(ran) == ["cluster-build-holds-the-repair-lock", "cluster-description-valid"], ran
    comment = run["states"]["cluster-description-valid"]["comment"]
    assert "cluster.api.vip" in comment and "cp1" in comment and "nothing was changed" in comment, comment
    assert lab.machines_after_bad_run == []


def test_orch_cluster_builds_a_healthy_cluster_from_nothing(lab):
    states = lab.first_run["states"]
    assert all(s["result"] is True for s in states.values()), lab.failed_states(lab.first_run)
    assert states["cluster-machines-present"]["changes"]["created"] == sorted(["lb1", "lb2", *NODES])
    assert states["kubernetes-cluster-initialized"]["changes"] == {"cp1": "initialized"}
    for node in ("cp2", "cp3"):
        assert states[f"control-plane-{node}-joined"]["changes"] == {node: "joined"}
    assert states["workers-joined"]["changes"] == {"worker1": "joined"}
    # Each control-plane join (an etcd member added) was preceded by a snapshot kept on the master.
    snapshots = sorted((config.MASTER_DIR / "cache" / "k8sha-etcd-snapshots").glob("*.db"))
    assert len(snapshots) >= 2 and all(p.stat().st_mode & 0o077 == 0 for p in snapshots), snapshots
    status, _ = master.salt_json("salt-run", "cluster.status")
    assert sorted(m["name"] for m in status["etcd"]["members"]) == list(CONTROL_PLANES)
    assert [h["healthy"] for h in status["etcd"]["health"].values()] == [True] * 3
    assert status["etcd"]["leader"]["name"] in CONTROL_PLANES
    assert len(status["vip_holders"]) == 1 and status["api"]["healthy"] is True
    assert status["nodes"] == {n: "Ready" for n in NODES}


def test_every_machine_enrolled_with_its_own_one_time_value_and_no_key_was_made_for_it(lab):
    machines = sorted(["lb1", "lb2", *NODES])
    enrolment = config.MASTER_DIR / "pki" / "k8sha_enrolment"
    assert list((enrolment / "issued").iterdir()) == []  # every value was used
    used = sorted(json.loads(p.read_text())["id"] for p in (enrolment / "used").iterdir())
    assert used == machines
    log = (config.MASTER_DIR / "log" / "master").read_text()
    assert sorted(set(line.split("accepted the key of ")[1].split()[0] for line in log.splitlines()
                       if "k8sha_enrolment: accepted the key of" in line)) == machines
    # The minion made its key on the machine: the master never held its private half.
    for name in machines:
        pem = lab.machine(name).exec("cat", "/etc/salt/pki/minion/minion.pem").stdout
        assert "PRIVATE KEY" in pem
        found = subprocess.run(["grep", "-rlF", pem.strip().splitlines()[1], str(config.MASTER_DIR)],
                               capture_output=True, text=True)
        assert found.stdout == "", f"{name}'s private key is on the master: {found.stdout}"


def test_a_second_orch_cluster_run_changes_nothing(lab):
    run = lab.second_run
    assert run["code"] == 0, lab.failed_states(run)
    changed = {k: v["changes"] for k, v in run["states"].items() if v["changes"]}
    assert changed == {}
    assert len(run["states"]) == len(lab.first_run["states"])


def test_build_shows_each_step_live_then_the_status(lab):
    """salt-run build.cluster: a line when a step starts work on nodes, one per step as it ends, then the table."""
    text, code = master.salt_text("salt-run", "build.cluster", "mods=orch.load_balancers", timeout=300)
    print("\n" + text)
    lines = text.splitlines()
    assert code == 0, text
    assert any("started        highstate on lb1, lb2" in line for line in lines), text
    ended = [line.split() for line in lines if line.split()[2:3] in (["1/2"], ["2/2"])]
    assert [(words[2], words[3], words[4] if words[4] != "*" else words[5]) for words in ended] == [
        ("1/2", "ok", "load-balancers-converged"), ("2/2", "ok", "api-vip-answers")], text
    assert "HEALTHY" in lines and any(line.startswith("cluster k8sha-lab") for line in lines), text


def test_an_etcd_snapshot_on_demand_is_checked_and_kept_on_the_master_and_a_dry_run_takes_none(lab):
    snapshots = config.MASTER_DIR / "cache" / "k8sha-etcd-snapshots"
    before = set(snapshots.glob("*.db"))
    _, code = master.salt_json("salt-run", "state.orch", "orch.etcd_snapshot", "test=True", timeout=300)
    assert code == 0 and set(snapshots.glob("*.db")) == before
    data, code = master.salt_json("salt-run", "state.orch", "orch.etcd_snapshot", timeout=300)
    assert code == 0, data
    taken = sorted(set(snapshots.glob("*.db")) - before)
    assert len(taken) == 1 and taken[0].stat().st_mode & 0o777 == 0o600, taken
    status = subprocess.run(["etcdctl", "snapshot", "status", str(taken[0]), "-w", "json"], capture_output=True,
                            text=True, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
    assert status.returncode == 0 and json.loads(status.stdout)["totalKey"] > 0, status.stdout + status.stderr
    # The schedule's way (a runner, no state run): the same, kept beside it.
    time.sleep(1.1)  # snapshots are named by the second
    scheduled, code = master.salt_json("salt-run", "etcd_snapshot.take", timeout=300)
    assert code == 0 and scheduled["taken"] is True and scheduled["snapshot"].endswith(".db"), scheduled
    assert (snapshots / scheduled["snapshot"].rsplit("/", 1)[1]).stat().st_mode & 0o777 == 0o600


def test_join_material_never_reaches_logs_job_caches_or_leftover_files(lab):
    # 3 joins (cp2, cp3, worker1): 3 tokens and 2 certificate keys, seen in pillar during the run.
    assert len([v for v in lab.join_material if "." in v]) == 3, lab.join_material
    assert len([v for v in lab.join_material if "." not in v]) == 2, lab.join_material
    assert list(lab.join_material_dir.glob("*.sls")) == []
    places = [config.MASTER_DIR]  # the master's log, job cache (arguments and returns of every job)
    found = subprocess.run(["grep", "-rlF", *sum((["-e", v] for v in lab.join_material), []), *map(str, places)],
                           capture_output=True, text=True)
    assert found.stdout == "", f"join material found in {found.stdout}"
    for node in ("cp1", "cp2", "worker1"):
        box = lab.machine(node)
        logs = box.exec("sh", "-c", "journalctl --no-pager -o cat; cat /var/log/salt/minion 2>/dev/null; "
                        "grep -rl k8sha_join /var/cache/salt/minion 2>/dev/null; true").stdout
        leaked = [v for v in lab.join_material if v in logs]
        assert leaked == [] and "k8sha_join" not in logs, f"{node}: join material in its logs or cache"
    # The tokens were deleted after the joins: none of them is valid any more.
    tokens = box_tokens(lab.machine("cp1"))
    assert not any(v.split(".")[0] in tokens for v in lab.join_material if "." in v)


def box_tokens(box):
    return box.exec("kubeadm", "token", "list").stdout


def admin_credentials(lab, directory):
    """admin.conf of cp1 as certificate and key files on the host (for the probe)."""
    admin = yaml.safe_load(lab.machine("cp1").exec("cat", "/etc/kubernetes/admin.conf").stdout)
    user = admin["users"][0]["user"]
    paths = {}
    for field, name in (("client-certificate-data", "admin.crt"), ("client-key-data", "admin.key")):
        path = f"{directory}/{name}"
        with open(path, "wb") as handle:
            handle.write(base64.b64decode(user[field]))
        paths[name] = path
    return paths["admin.crt"], paths["admin.key"]


def test_the_api_is_served_on_the_descriptions_port_everywhere(lab):
    """The tier's description puts the API on 16443: HAProxy, kubeadm, firewalld and the
    security groups all followed it (the cluster above was built and answers through it)."""
    assert lab.through_vip("/healthz") == "ok"
    assert f"bind {VIP}:{API_PORT}" in lab.machine("lb1").exec("cat", "/etc/haproxy/haproxy.cfg").stdout
    zone = lab.machine("cp1").exec("firewall-cmd", "--zone=k8sha", "--list-ports").stdout.split()
    assert f"{API_PORT}/tcp" in zone and "6443/tcp" not in zone
    config = lab.machine("cp1").exec("cat", "/etc/kubernetes/k8sha-kubeadm.yaml").stdout
    assert f"bindPort: {API_PORT}" in config and f'controlPlaneEndpoint: "{VIP}:{API_PORT}"' in config
    rules = secgroups.load()["groups"]["k8sha-control-plane"]
    assert {r["port_range_min"] for r in rules if r["port_range_min"] in (6443, API_PORT)} == {API_PORT}


def test_the_real_kubectl_reads_the_cluster_through_the_vip(lab):
    box = lab.machine("cp1")
    assert "Client Version: v1.36" in box.exec("kubectl", "version", "--client").stdout
    admin = ("kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf")
    assert f"server: https://{VIP}:{API_PORT}" in box.exec("cat", "/etc/kubernetes/admin.conf").stdout
    wide = box.exec(*admin, "get", "nodes", "-o", "wide").stdout
    readyz = box.exec(*admin, "get", "--raw", "/readyz").stdout
    print(f"\nkubectl get nodes -o wide (through {VIP}:{API_PORT}):\n{wide}kubectl get --raw /readyz: {readyz}")
    rows = {line.split()[0]: line.split() for line in wide.splitlines()[1:]}
    assert sorted(rows) == sorted(NODES) and all(rows[n][1] == "Ready" for n in NODES)
    assert rows["cp1"][2] == "control-plane" and rows["worker1"][2] == "<none>" and rows["cp2"][5] == "198.51.100.22"
    assert readyz == "ok"
    leases = box.exec(*admin, "get", "leases", "-n", "kube-node-lease", "-o", "name").stdout.split()
    assert sorted(leases) == sorted(f"lease.coordination.k8s.io/{n}" for n in NODES)


def test_etcdctl_comes_from_the_control_plane_state_not_the_image(lab):
    for name in CONTROL_PLANES:
        box = lab.machine(name)
        assert box.exec("dpkg-query", "-W", "-f=${Status}", "etcd-client").stdout.endswith(" ok installed")
        assert "etcd-client" in box.exec("apt-mark", "showhold").stdout.split()
    for name in ("lb1", "worker1"):  # made from the same image, no control-plane state
        assert lab.machine(name).exec("sh", "-c", "command -v etcdctl", check=False).returncode != 0


def etcdctl(lab, *args):
    pki = "/etc/kubernetes/pki/etcd"
    return lab.machine("cp1").exec("env", "ETCDCTL_API=3", "etcdctl", "--endpoints=https://198.51.100.21:2379",
                                   f"--cacert={pki}/ca.crt", f"--cert={pki}/healthcheck-client.crt",
                                   f"--key={pki}/healthcheck-client.key", *args)


def test_a_fourth_etcd_member_fails_verify_and_is_flagged_with_its_safe_removal(lab):
    peer = "https://198.51.100.29:2380"
    etcdctl(lab, "member", "add", "cp9", f"--peer-urls={peer}")
    try:
        data, code = master.salt_json("salt-run", "state.orch", "orch.verify", timeout=300)
        assert code != 0
        comments = json.dumps(data)
        assert "is no control plane of the description" in comments and f"etcd_cluster.remove_member {peer}" in comments
        status, _ = master.salt_json("salt-run", "cluster.status")
        flagged = [p for p in status["etcd"]["problems"] if peer in p]
        print("\ncluster.status with a fourth member:", *status["etcd"]["problems"], sep="\n  ")
        assert len(status["etcd"]["members"]) == 4 and flagged
        table, code = master.salt_text("salt-run", "cluster.status")
        verdict = table.splitlines()[0]
        assert verdict.startswith("DEGRADED: ") and "etcd member (unstarted" in verdict and code == 1, table
        assert "! etcd member (unstarted" in table and peer in table
    finally:
        removed = lab.salt("cp1", "etcd_cluster.remove_member", peer)["cp1"]
    assert removed["removed"] is True, removed
    _, code = master.salt_json("salt-run", "state.orch", "orch.verify", timeout=300)
    assert code == 0


def test_a_version_change_on_the_built_cluster_is_refused_and_changes_nothing(lab):
    before = lab.machine("cp2").exec("dpkg-query", "-W", "-f=${Version}", "kubeadm").stdout
    result = lab.salt("cp2", "state.apply", "kubernetes.packages",
                      'pillar={"cluster": {"kubernetes": {"version": "1.32"}}}')["cp2"]
    comments = [s["comment"] for s in result.values() if s.get("result") is False]
    print("\nthe refusal:", *comments, sep="\n  ")
    assert any("cluster.kubernetes.version: '1.32', but cp2 is a member of the cluster with kubeadm 1.31.2" in c
               for c in comments), result
    assert not any(s.get("changes") for s in result.values())
    assert lab.machine("cp2").exec("dpkg-query", "-W", "-f=${Version}", "kubeadm").stdout == before


def test_losing_the_etcd_leader_keeps_the_api_answering_writes(lab):
    """The seed's goal: power off a control plane (the etcd leader, the worst one) while a
    client writes through the VIP at 10/s. The API keeps answering, etcd keeps its quorum,
    failed writes stay a handful; the machine then comes back and etcd has 3 members again."""
    leader = lab.salt("cp1", "etcd_cluster.leader")["cp1"]["name"]
    assert leader in CONTROL_PLANES
    box = lab.machine(leader)
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = admin_credentials(lab, tmp)
        probe = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{config.MASTER_NS}", "--", str(REPO / ".venv/bin/python"),
             str(REPO / "bench/probe.py"), "--host", VIP, "--port", str(API_PORT), "--duration", "30", "--interval", "0.1",
             "--timeout", "3", "--write", "lab-writes", "--cert", cert, "--key", key],
            stdout=subprocess.PIPE, text=True)
        time.sleep(8)
        killed_at = time.time()  # the kill itself takes a moment: writes may fail from here on
        box.kill()
        lost_at = time.time()
        results = json.loads(probe.communicate(timeout=120)[0])
    survivors = [n for n in CONTROL_PLANES if n != leader]
    try:
        failed = [r for r in results if not r[1]]
        after = [r for r in results if r[0] > lost_at + 10]
        print(f"\nwrites: {len(results)}, failed {len(failed)} ({[r[3] for r in failed][:10]}), leader {leader} lost")
        assert len(results) >= 280
        # Writes fail only while etcd elects a new leader: within 5 s of the loss (typically 2 writes;
        # once 18, when both survivors' /healthz failed 2 checks in a row during a slow election).
        # A write sent just before the kill and still in flight (r[2]: its duration) counts as during it.
        assert all(killed_at <= r[0] + r[2] and r[0] <= lost_at + 5 for r in failed), (killed_at, lost_at, failed[:10])
        assert after and all(r[1] for r in after), "writes through the VIP do not succeed after the loss"
        health = lab.salt(survivors[0], "etcd_cluster.health")[survivors[0]]
        assert sum(1 for h in health.values() if h["healthy"]) == 2, health
    finally:  # the machine comes back (same disk), whatever failed: the scenarios after it need it
        box.boot()
    lab.wait_for(lambda: sum(1 for h in lab.salt(survivors[0], "etcd_cluster.health")[survivors[0]].values()
                             if h["healthy"]) == 3, 120, f"{leader}'s etcd member healthy again", interval=2)
    lab.wait_for(lambda: master.salt_json("salt-run", "state.orch", "orch.verify")[1] == 0, 120,
                 "orch.verify to pass again", interval=5)
