"""
etcd_cluster against a real three-member etcd 3.4 on loopback with client TLS, the way
kubeadm's stacked etcd runs: membership, health, leader, and removal that refuses to
break quorum.
"""

import datetime
import hashlib
import ipaddress
import pathlib
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from helpers import salt_render

pytestmark = pytest.mark.skipif(not (shutil.which("etcd") and shutil.which("etcdctl")),
                                reason="etcd and etcdctl not installed (make setup)")
ADDRESSES = ("127.0.0.21", "127.0.0.22", "127.0.0.23")


def _key_and_cert(name, issuer=None, issuer_key=None, ca=False, ips=()):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer or subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    if ips:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]), critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return key, cert


def _write(path, key, cert):
    path.with_suffix(".key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def etcd_members(safe_dir, minion):
    pki = safe_dir / "pki"
    pki.mkdir()
    ca_key, ca_cert = _key_and_cert("etcd-ca", ca=True)
    _write(pki / "ca", ca_key, ca_cert)
    server_key, server_cert = _key_and_cert("etcd", ca_cert.subject, ca_key, ips=ADDRESSES)
    _write(pki / "server", server_key, server_cert)
    client_key, client_cert = _key_and_cert("kube-etcd-healthcheck-client", ca_cert.subject, ca_key)
    _write(pki / "healthcheck-client", client_key, client_cert)
    port = _free_port()
    names = [f"cp{i}" for i in (1, 2, 3)]
    initial = ",".join(f"{n}=http://{a}:{port + 1}" for n, a in zip(names, ADDRESSES, strict=True))
    procs = {}
    for name, address in zip(names, ADDRESSES, strict=True):
        procs[name] = subprocess.Popen(
            ["etcd", "--name", name, "--data-dir", str(safe_dir / f"etcd-{name}"),
             "--listen-client-urls", f"https://{address}:{port}", "--advertise-client-urls", f"https://{address}:{port}",
             "--listen-peer-urls", f"http://{address}:{port + 1}",
             "--initial-advertise-peer-urls", f"http://{address}:{port + 1}",
             "--initial-cluster", initial, "--initial-cluster-state", "new",
             "--cert-file", str(pki / "server.crt"), "--key-file", str(pki / "server.key"),
             "--trusted-ca-file", str(pki / "ca.crt"), "--client-cert-auth"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cluster = salt_render.description(nodes=[
        {"name": "lb1", "role": "loadbalancer", "address": "127.0.0.11"},
        {"name": "lb2", "role": "loadbalancer", "address": "127.0.0.12"},
        *[{"name": n, "role": "control_plane", "address": a} for n, a in zip(names, ADDRESSES, strict=True)],
    ], api={"vip": "127.0.0.100", "prefix": 8})
    node = minion(cluster, minion_id="cp1", lookup={"ports": {"etcd_client": port, "etcd_peer": port + 1}, "etcd": {
        "ca": str(pki / "ca.crt"), "cert": str(pki / "healthcheck-client.crt"),
        "key": str(pki / "healthcheck-client.key"), "timeout": 1}})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        health = node.call("etcd_cluster.health")
        if len(health) == 3 and all(h["healthy"] for h in health.values()):
            break
        time.sleep(0.3)
    try:
        yield node, procs, port
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=10)


def test_members_health_and_leader_over_tls(etcd_members):
    node, procs, port = etcd_members
    members = node.call("etcd_cluster.members")
    assert sorted(m["name"] for m in members) == ["cp1", "cp2", "cp3"]
    assert {m["peer_urls"][0] for m in members} == {f"http://{a}:{port + 1}" for a in ADDRESSES}
    health = node.call("etcd_cluster.health")
    assert {url: h["healthy"] for url, h in health.items()} == {f"https://{a}:{port}": True for a in ADDRESSES}
    assert node.call("etcd_cluster.leader")["name"] in ("cp1", "cp2", "cp3")


def test_a_snapshot_is_saved_from_the_nodes_own_member_and_checked(etcd_members, tmp_path):
    node, _, _ = etcd_members
    snap = node.call("etcd_cluster.snapshot", str(tmp_path / "snapshots"))
    data = pathlib.Path(snap["path"]).read_bytes()
    assert snap["path"].startswith(str(tmp_path / "snapshots")) and snap["path"].endswith("-cp1.db")
    assert snap["sha256"] == hashlib.sha256(data).hexdigest() and snap["size"] == len(data)
    assert snap["keys"] > 0 and isinstance(snap["revision"], int)


def test_removal_that_would_break_quorum_is_refused_and_a_dead_member_is_removed(etcd_members):
    node, procs, port = etcd_members
    procs["cp3"].kill()
    procs["cp3"].wait()
    # If cp3 led, the survivors hold an election first: until it ends they fail health too.
    survivors = {f"https://{a}:{port}" for a in ADDRESSES[:2]}
    deadline = time.monotonic() + 20
    while True:
        health = node.call("etcd_cluster.health")
        if all(health.get(url, {}).get("healthy") for url in survivors) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert health[f"https://127.0.0.23:{port}"]["healthy"] is False
    assert all(health[url]["healthy"] for url in survivors), health
    problems = node.call("etcd_cluster.membership")["problems"]
    assert len(problems) == 1 and problems[0].startswith(f"etcd member cp3 (http://127.0.0.23:{port + 1}) is not healthy")
    # Removing a healthy member now would leave 1 healthy of 2: refused, nothing changes.
    with pytest.raises(Exception) as refused:
        node.call("etcd_cluster.remove_member", f"http://127.0.0.22:{port + 1}")
    assert "below the quorum of 2: nothing was removed" in str(refused.value)
    assert len(node.call("etcd_cluster.members")) == 3
    # Removing the dead one leaves 2 healthy of 2.
    removed = node.call("etcd_cluster.remove_member", f"http://127.0.0.23:{port + 1}")
    assert removed["removed"] is True
    assert sorted(m["name"] for m in node.call("etcd_cluster.members")) == ["cp1", "cp2"]
    again = node.call("etcd_cluster.remove_member", f"http://127.0.0.23:{port + 1}")
    assert again["removed"] is False and "nothing to remove" in again["comment"]


def _members(n):
    return [{"peer_urls": [f"p{i}"], "client_urls": [f"c{i}"]} for i in range(n)]


@pytest.mark.parametrize("size, healthy, target, safe", [
    (3, {"c0", "c1", "c2"}, "p2", True),   # healthy 3-member cluster: 2 of 2 remain
    (3, {"c0", "c1"}, "p2", True),         # remove the dead one: 2 of 2
    (3, {"c0", "c1"}, "p1", False),        # remove a live one while one is dead: 1 of 2
    (5, {"c0", "c1", "c2"}, "p4", True),   # 5 members, 2 dead: 3 of 4 remain, quorum 3
    (5, {"c0", "c1", "c2"}, "p0", False),  # 2 of 4 remain healthy: below 3
    (1, {"c0"}, "p0", False),              # the last member is never removed
])
def test_quorum_rule(size, healthy, target, safe):
    etcd = salt_render.load_module("etcd_cluster")
    assert etcd.quorum_after_removal(_members(size), healthy, target)[0] is safe


def test_a_fourth_unknown_member_and_a_missing_control_plane_are_named_with_the_safe_removal():
    etcd = salt_render.load_module("etcd_cluster")
    control_planes = [{"name": f"cp{i}", "address": f"198.51.100.2{i}"} for i in (1, 2, 3)]
    members = [{"id": f"{i}", "name": f"cp{i}", "peer_urls": [f"https://198.51.100.2{i}:2380"],
                "client_urls": [f"https://198.51.100.2{i}:2379"]} for i in (1, 2)]
    members.append({"id": "9f", "name": "old-cp", "peer_urls": ["https://198.51.100.29:2380"],
                    "client_urls": ["https://198.51.100.29:2379"]})
    health = {f"https://198.51.100.2{i}:2379": {"healthy": True} for i in (1, 2)}
    problems = etcd.membership_problems(members, health, control_planes, 2380)
    assert problems == [
        "etcd member old-cp (https://198.51.100.29:2380) is no control plane of the description: remove it with "
        "`salt <a healthy control plane> etcd_cluster.remove_member https://198.51.100.29:2380` (refused if the "
        "remaining members would lose quorum)",
        "cp3 is no etcd member: orch.cluster joins it"]
    assert etcd.membership_problems(members[:2], health, control_planes[:2], 2380) == []


@pytest.mark.parametrize("stderr, cause", [
    ("Error: context deadline exceeded", "no answer in time: the endpoints are down or etcd has no quorum"),
    ("x509: certificate signed by unknown authority", "TLS failed"),
    ("dial tcp 127.0.0.1:2379: connect: connection refused", "nothing listens on the endpoints"),
    ("open /etc/kubernetes/pki/etcd/ca.crt: no such file or directory", "a certificate file is missing"),
])
def test_etcdctl_failures_are_explained(stderr, cause):
    assert salt_render.load_module("etcd_cluster").explain(stderr).startswith(cause)


def test_a_missing_etcdctl_names_the_node_and_the_state_that_installs_it(minion):
    node = minion(salt_render.description(), minion_id="cp1", lookup={"etcd": {"etcdctl": "/nonexistent/etcdctl"}})
    with pytest.raises(Exception, match=r"/nonexistent/etcdctl is not installed on cp1; the control-plane state "
                                        r"installs it: salt cp1 state.apply kubernetes.etcd_client"):
        node.call("etcd_cluster.members")


def test_snapshots_beyond_the_retention_are_pruned_oldest_first(tmp_path):
    snapshots = salt_render.load("_utils", "k8sha_snapshot")
    for stamp in ("20261130T100000Z", "20261130T110000Z", "20261130T120000Z"):
        (tmp_path / f"{stamp}-cp1.db").write_bytes(b"x")
    assert snapshots.kept(tmp_path, 2) == ["20261130T100000Z-cp1.db"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20261130T110000Z-cp1.db", "20261130T120000Z-cp1.db"]


def test_removing_the_leaders_member_hands_leadership_over_first(etcd_members):
    """A removed leader makes the others elect one, and API servers answer "leader changed" meanwhile
    (seen in the lab): leadership moves to a healthy member before the removal."""
    node, _, port = etcd_members
    led = node.call("etcd_cluster.leader")
    address = ADDRESSES[int(led["name"][-1]) - 1]
    removed = node.call("etcd_cluster.remove_member", f"http://{address}:{port + 1}")
    assert removed["removed"] is True and "leadership handed to" in removed["comment"], removed
    survivors = [f"https://{a}:{port}" for a in ADDRESSES if a != address]
    now = node.call("etcd_cluster.leader", survivors)
    assert now["name"] not in (None, led["name"]), now


# --- the salt-masters' repair locks in this etcd (issue 16, _utils/k8sha_etcd_lock.py) -------------

LOCKS = salt_render.load("_utils", "k8sha_etcd_lock")


def _master_etcd(node, port, directory, master_id):
    """A master's etcd client: its key made in ``directory``, its certificate signed by the
    control plane ``node`` (etcd_cluster.sign_client), as heal.etcd_client_ready does."""
    def salt_cmd(targets, fun, arg, **_):
        return {targets[0]: {"ret": node.call(fun, *arg), "retcode": 0}}

    ok, paths = LOCKS.issue(salt_cmd, str(directory), master_id, ["cp1"])
    assert ok, paths
    return LOCKS.Etcd([f"https://{a}:{port}" for a in ADDRESSES], paths["ca"], paths["cert"], paths["key"], timeout=2)


def test_a_master_key_stays_private_and_only_a_salt_master_request_is_signed(etcd_members, tmp_path):
    node, _, port = etcd_members
    etcd = _master_etcd(node, port, tmp_path / "m1", "master-1")
    assert (tmp_path / "m1" / "client.key").stat().st_mode & 0o777 == 0o600
    subject = subprocess.run(["openssl", "x509", "-noout", "-subject", "-ext", "extendedKeyUsage", "-in",
                              str(tmp_path / "m1" / "client.crt")], capture_output=True, text=True, check=True).stdout
    assert "CN = k8sha-salt-master:master-1" in subject and "TLS Web Client Authentication" in subject
    assert "Server" not in subject
    assert LOCKS.holders(etcd) == {}  # the certificate works: etcd answers
    other = tmp_path / "admin.key"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(other)],
                   check=True, capture_output=True)
    for cn in ("admin", "k8sha-salt-master:m/O=system:masters"):
        csr = subprocess.run(["openssl", "req", "-new", "-key", str(other), "-subj", f"/CN={cn}"],
                             capture_output=True, text=True, check=True).stdout
        with pytest.raises(Exception, match="refused to sign"):
            node.call("etcd_cluster.sign_client", csr)


def test_one_master_holds_a_lock_the_other_is_refused_and_the_record_names_the_holder(etcd_members, tmp_path):
    node, _, port = etcd_members
    first, second = (_master_etcd(node, port, tmp_path / m, m) for m in ("master-a", "master-b"))
    lock, why = LOCKS.take(first, "control_plane", "master-a", "cp2", "t0k3n", ttl=15)
    assert lock is not None and why is None
    record = LOCKS.holders(second)["control_plane"]
    assert record["holder"].startswith("master-a/cp2/t0k3n pid ") and 0 < record["ttl_left"] <= 15
    refused, why = LOCKS.take(second, "control_plane", "master-b", "cp2", "other", ttl=15)
    assert refused is None and why.startswith("master-a/cp2/t0k3n") and why.endswith("holds control_plane in etcd")
    assert LOCKS.take(second, "lb1:haproxy", "master-b", "lb1", "x", ttl=15)[0] is not None  # another lock is free
    LOCKS.give_back(lock)
    assert "control_plane" not in LOCKS.holders(second)
    assert LOCKS.take(second, "control_plane", "master-b", "cp2", "other", ttl=15)[0] is not None


def test_a_waiting_master_takes_the_lock_when_the_other_releases_it_or_dies(etcd_members, tmp_path):
    node, _, port = etcd_members
    first, second = (_master_etcd(node, port, tmp_path / m, m) for m in ("master-a", "master-b"))
    lock, _ = LOCKS.take(first, "control_plane", "master-a", "cp2", "one", ttl=15)
    threading.Timer(1.5, LOCKS.give_back, [lock]).start()
    started = time.monotonic()
    taken, why = LOCKS.take(second, "control_plane", "master-b", "cp2", "two", ttl=15, wait=30, poll=0.3)
    assert taken is not None and why is None and 1.0 < time.monotonic() - started < 10
    LOCKS.give_back(taken)
    # A master that dies renews its lease no more: the lock goes with the lease (ttl 3 s here).
    dying, _ = LOCKS.take(first, "control_plane", "master-a", "cp2", "three", ttl=3)
    dying._stop.set()  # noqa: SLF001 -- the keepalive thread stops as the process would die
    started = time.monotonic()
    taken, why = LOCKS.take(second, "control_plane", "master-b", "cp2", "four", ttl=15, wait=30, poll=0.3)
    assert taken is not None and why is None and 1.0 < time.monotonic() - started < 15
    assert LOCKS.holders(second)["control_plane"]["holder"].startswith("master-b/cp2/four")
    # Without the wait, a held lock is refused at once.
    assert LOCKS.take(first, "control_plane", "master-a", "cp2", "five", ttl=15)[0] is None


def test_a_lock_left_by_a_dead_run_of_the_same_master_is_taken_at_once(etcd_members, tmp_path):
    node, _, port = etcd_members
    etcd = _master_etcd(node, port, tmp_path / "m", "master-a")
    orphan = LOCKS.Lock(etcd, "control_plane", "master-a/cp2/old pid 999999999:1", ttl=60)
    assert orphan.acquire() == (True, None)
    orphan._stop.set()  # noqa: SLF001
    lock, why = LOCKS.take(etcd, "control_plane", "master-a", "cp2", "new", ttl=15)
    assert lock is not None and why is None


def test_without_etcd_no_membership_change_starts_but_a_load_balancer_repair_goes_on(etcd_members, tmp_path):
    node, procs, port = etcd_members
    etcd = _master_etcd(node, port, tmp_path / "m", "master-a")
    for proc in procs.values():
        proc.kill()
        proc.wait()
    lock, why = LOCKS.take(etcd, "control_plane", "master-a", "cp2", "t", ttl=15)
    assert lock is None and why.startswith("etcd is unavailable") and "orch.etcd_restore" in why
    assert LOCKS.take(etcd, "lb1:haproxy", "master-a", "lb1", "t", ttl=15) == (None, None)
    assert LOCKS.records(etcd).startswith("etcd is unavailable")
    # Before a master has credentials (no cluster yet), the heal file alone decides.
    assert LOCKS.cluster_etcd(str(tmp_path / "empty"), {"nodes": []}, {}) is None
    assert LOCKS.take(None, "control_plane", "master-a", "cp2", "t", ttl=15) == (None, None)


def test_the_masters_share_one_attempt_window_and_concurrent_outcomes_all_count(etcd_members, tmp_path):
    node, procs, port = etcd_members
    first, second = (_master_etcd(node, port, tmp_path / m, m) for m in ("master-a", "master-b"))
    now, window = time.time(), 900
    assert LOCKS.shared_attempts(first, "haproxy:lb1", now, window) == []
    assert LOCKS.record_attempt(first, "haproxy:lb1", now - 1000, False, window)  # outside the window
    assert LOCKS.record_attempt(first, "haproxy:lb1", now - 10, False, window)
    assert LOCKS.record_attempt(second, "haproxy:lb1", now - 5, True, window)
    # Both masters at once: compare-and-swap retries, neither outcome is lost.
    threads = [threading.Thread(target=LOCKS.record_attempt, args=(etcd, "haproxy:lb1", now, False, window))
               for etcd in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seen = LOCKS.shared_attempts(second, "haproxy:lb1", now, window)
    assert sorted(ok for _, ok in seen) == [False, False, False, True] and all(now - at < window for at, _ in seen)
    assert LOCKS.shared_attempts(first, "keepalived:lb1", now, window) == []  # one window per fault and node
    # Without etcd each master counts its own (the heal file): nothing shared is claimed.
    for proc in procs.values():
        proc.kill()
        proc.wait()
    assert LOCKS.shared_attempts(first, "haproxy:lb1", now, window) is None
    assert LOCKS.record_attempt(first, "haproxy:lb1", now, False, window) is False
    assert LOCKS.shared_attempts(None, "haproxy:lb1", now, window) is None
