"""
Shared code of the lab's stand-in Kubernetes control plane (kubeadm, kubectl, kubelet and
kube-apiserver stand-ins). Kubernetes binaries cannot be had in the lab; these keep the
paths, files, flags and behaviour the Salt states rely on, on top of a real etcd.

Only the Python standard library, PyYAML and the openssl command are used.
"""

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

KUBE = "/etc/kubernetes"
PKI = f"{KUBE}/pki"
MANIFESTS = f"{KUBE}/manifests"
ADMIN_CONF = f"{KUBE}/admin.conf"
KUBELET_CONF = f"{KUBE}/kubelet.conf"
STANDIN_ENV = f"{KUBE}/standin"          # flags of the stand-in daemons (systemd EnvironmentFile)
ETCD_DATA = "/var/lib/etcd"
KUBELET_DIR = "/var/lib/kubelet"
TOKEN_PREFIX = "/registry/secrets/kube-system/bootstrap-token-"
CERTS_SECRET = "/registry/secrets/kube-system/kubeadm-certs"
CERTS_TTL = 2 * 3600                     # kubeadm deletes uploaded certificates after 2 hours
# The files kubeadm uploads for other control planes (kubeadm-certs secret).
SHARED_CERTS = ["ca.crt", "ca.key", "sa.key", "sa.pub", "front-proxy-ca.crt", "front-proxy-ca.key",
                "etcd/ca.crt", "etcd/ca.key"]


class Failure(Exception):
    """An error kubeadm/kubectl report and exit 1 on."""


def sh(*cmd, input=None):
    result = subprocess.run(cmd, capture_output=True, input=input)
    if result.returncode != 0:
        raise Failure(f"{cmd[0]} failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


# --- certificates ----------------------------------------------------------------------------

def make_ca(base, cn):
    os.makedirs(os.path.dirname(base), exist_ok=True)
    sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
       "-days", "3650", "-subj", f"/CN={cn}", "-keyout", f"{base}.key", "-out", f"{base}.crt",
       "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    os.chmod(f"{base}.key", 0o600)


CERT_DAYS = 365  # this run's certificate validity (kubeadm: ClusterConfiguration.certificateValidityPeriod)


def validity_days(cluster):
    """Days of certificateValidityPeriod (v1beta4; default 8760h, one year) in a ClusterConfiguration."""
    return max(1, parse_duration((cluster or {}).get("certificateValidityPeriod") or "8760h") // 86400)


def sign(ca_base, csr_pem, cn_check=None, sans=(), usage="clientAuth", days=None):
    """Sign a CSR with the CA at ca_base; returns the certificate (PEM bytes)."""
    days = days or CERT_DAYS
    with tempfile.TemporaryDirectory() as tmp:
        csr, ext = f"{tmp}/req.csr", f"{tmp}/ext.cnf"
        with open(csr, "wb") as handle:
            handle.write(csr_pem)
        lines = [f"extendedKeyUsage={usage}", "keyUsage=critical,digitalSignature,keyEncipherment"]
        if sans:
            lines.append("subjectAltName=" + ",".join(
                f"IP:{s}" if s.replace(".", "").isdigit() else f"DNS:{s}" for s in sans))
        with open(ext, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        return sh("openssl", "x509", "-req", "-in", csr, "-CA", f"{ca_base}.crt", "-CAkey", f"{ca_base}.key",
                  "-set_serial", str(secrets.randbits(63)),
                  "-days", str(days), "-extfile", ext)


def new_key_and_csr(key_path, subject):
    sh("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
       "-subj", subject, "-keyout", key_path, "-out", key_path + ".csr")
    os.chmod(key_path, 0o600)
    with open(key_path + ".csr", "rb") as handle:
        csr = handle.read()
    os.unlink(key_path + ".csr")
    return csr


def make_cert(base, ca_base, subject, sans=(), usage="clientAuth"):
    os.makedirs(os.path.dirname(base), exist_ok=True)
    csr = new_key_and_csr(f"{base}.key", subject)
    with open(f"{base}.crt", "wb") as handle:
        handle.write(sign(ca_base, csr, sans=sans, usage=usage))


def ca_cert_hash(cert_pem_path):
    """kubeadm's --discovery-token-ca-cert-hash: sha256 of the CA's SubjectPublicKeyInfo."""
    pub = sh("openssl", "x509", "-in", cert_pem_path, "-noout", "-pubkey")
    der = sh("openssl", "pkey", "-pubin", "-outform", "der", input=pub)
    return "sha256:" + hashlib.sha256(der).hexdigest()


# --- secrets: bootstrap tokens and the certificate key ----------------------------------------

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"


def new_token():
    pick = lambda n: "".join(secrets.choice(TOKEN_CHARS) for _ in range(n))  # noqa: E731
    return f"{pick(6)}.{pick(16)}"


def valid_token_format(token):
    parts = token.split(".")
    return (len(parts) == 2 and len(parts[0]) == 6 and len(parts[1]) == 16
            and all(c in TOKEN_CHARS for c in parts[0] + parts[1]))


def parse_duration(text):
    """kubeadm's --ttl: 24h0m0s, 2h, 15m, 90s; 0 means never expires."""
    text, total, number = str(text).strip(), 0, ""
    if text in ("0", "0s"):
        return 0
    for char in text:
        if char.isdigit():
            number += char
        elif char in "hms" and number:
            total += int(number) * {"h": 3600, "m": 60, "s": 1}[char]
            number = ""
        else:
            raise Failure(f"invalid duration {text!r}")
    if number:
        raise Failure(f"invalid duration {text!r}: missing unit")
    return total


def encrypt(key_hex, plaintext):
    """AES-256-CBC + HMAC-SHA256 with the 32-byte certificate key (kubeadm uses AES-GCM)."""
    key = bytes.fromhex(key_hex)
    iv = secrets.token_bytes(16)
    cipher = sh("openssl", "enc", "-aes-256-cbc", "-K", key.hex(), "-iv", iv.hex(), input=plaintext)
    mac = hmac.new(key, iv + cipher, hashlib.sha256).digest()
    return base64.b64encode(iv + mac + cipher).decode()


def decrypt(key_hex, blob):
    try:
        key = bytes.fromhex(key_hex)
        assert len(key) == 32
    except (ValueError, AssertionError):
        raise Failure("error decoding certificate key: it must be 64 hexadecimal characters") from None
    data = base64.b64decode(blob)
    iv, mac, cipher = data[:16], data[16:48], data[48:]
    if not hmac.compare_digest(mac, hmac.new(key, iv + cipher, hashlib.sha256).digest()):
        raise Failure("error decrypting the kubeadm-certs secret: message authentication failed "
                      "(wrong --certificate-key?)")
    return sh("openssl", "enc", "-d", "-aes-256-cbc", "-K", key.hex(), "-iv", iv.hex(), input=cipher)


# --- etcd through its gRPC gateway (JSON over HTTPS with kubeadm's client certificates) --------

def _b64(text):
    return base64.b64encode(text.encode()).decode()


class Etcd:
    def __init__(self, endpoints, ca, cert, key, timeout=5):
        self.endpoints = list(endpoints)
        self.context = ssl.create_default_context(cafile=ca)
        self.context.check_hostname = False
        self.context.load_cert_chain(cert, key)
        self.timeout = timeout

    def call(self, path, body=None, method="POST"):
        errors = []
        for endpoint in self.endpoints:
            data = None if body is None else json.dumps(body).encode()
            request = urllib.request.Request(endpoint + path, data=data, method=method)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as answer:
                    return json.loads(answer.read() or b"{}")
            except urllib.error.HTTPError as exc:
                errors.append(f"{endpoint}: {exc.code} {exc.read()[:200].decode(errors='replace')}")
            except OSError as exc:
                errors.append(f"{endpoint}: {exc}")
        raise Failure("etcd: " + "; ".join(errors))

    def get(self, key):
        kvs = self.call("/v3/kv/range", {"key": _b64(key)}).get("kvs", [])
        return json.loads(base64.b64decode(kvs[0]["value"])) if kvs else None

    def list(self, prefix):
        return [obj for obj, _ in self.range(prefix, prefix=True)[0]]

    def range(self, key, prefix=False):
        """([(object, its mod_revision)], the store's revision): what an API server needs for
        resourceVersion."""
        body = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _b64(key[:-1] + chr(ord(key[-1]) + 1))
        answer = self.call("/v3/kv/range", body)
        items = [(json.loads(base64.b64decode(kv["value"])), kv.get("mod_revision", "0")) for kv in answer.get("kvs", [])]
        return items, answer.get("header", {}).get("revision", "0")

    def put(self, key, value):
        self.call("/v3/kv/put", {"key": _b64(key), "value": _b64(json.dumps(value))})

    def delete(self, key):
        return int(self.call("/v3/kv/deleterange", {"key": _b64(key)}).get("deleted", 0))

    def members(self):
        return self.call("/v3/cluster/member/list", {}).get("members", [])

    def member_add(self, peer_url):
        return self.call("/v3/cluster/member/add", {"peerURLs": [peer_url]})

    def member_remove(self, member_id):
        self.call("/v3/cluster/member/remove", {"ID": member_id})

    def readable(self, key):
        """A linearizable read of ``key`` succeeds (what kube-apiserver's etcd check asks)."""
        try:
            self.call("/v3/kv/range", {"key": _b64(key), "keys_only": True})
            return True
        except Failure:
            return False

    def healthy(self):
        try:
            return self.call("/health", method="GET").get("health") == "true"
        except Failure:
            return False


def local_etcd(cert="apiserver-etcd-client", endpoints=("https://127.0.0.1:2379",)):
    return Etcd(endpoints, f"{PKI}/etcd/ca.crt", f"{PKI}/{cert}.crt", f"{PKI}/{cert}.key")


# --- the API (HTTPS, client certificates or bootstrap tokens) --------------------------------

class Api:
    def __init__(self, server, ca_pem=None, cert=None, key=None, token=None, timeout=10):
        self.server = server.rstrip("/")
        if ca_pem:
            self.context = ssl.create_default_context(cadata=ca_pem)
        else:  # discovery: the CA is verified by its pinned hash afterwards
            self.context = ssl.create_default_context()
            self.context.check_hostname = False
            self.context.verify_mode = ssl.CERT_NONE
        self.context.check_hostname = False
        if cert:
            self.context.load_cert_chain(cert, key)
        self.token, self.timeout = token, timeout

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.server + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as answer:
                return answer.status, _decode(answer.read())
        except urllib.error.HTTPError as exc:
            body = _decode(exc.read())
            return exc.code, body if isinstance(body, dict) else {"message": body}
        except OSError as exc:
            raise Failure(f"unable to reach the API server at {self.server}: {exc}") from None

    def ok(self, method, path, body=None):
        status, answer = self.call(method, path, body)
        if status >= 300:
            raise Failure(f"{method} {path}: {status} {answer.get('message', answer)}")
        return answer


def _decode(data):
    """JSON bodies as objects; plain text (/healthz answers "ok") as a string."""
    try:
        return json.loads(data or b"{}")
    except ValueError:
        return data.decode(errors="replace")


def kubeconfig(server, ca_crt, cert_pem, key_pem, user, cluster="kubernetes"):
    enc = lambda data: base64.b64encode(data).decode()  # noqa: E731
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": f"{user}@{cluster}",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority-data": enc(ca_crt)}}],
        "users": [{"name": user, "user": {"client-certificate-data": enc(cert_pem), "client-key-data": enc(key_pem)}}],
        "contexts": [{"name": f"{user}@{cluster}", "context": {"cluster": cluster, "user": user}}],
    }


@contextlib.contextmanager
def api_from_kubeconfig(path, server=None):
    """An Api client with the kubeconfig's credentials (written to a private temp dir)."""
    import yaml  # pylint: disable=import-outside-toplevel

    if not os.path.exists(path):
        raise Failure(f"{path} does not exist: is this node part of a cluster?")
    with open(path) as handle:
        config = yaml.safe_load(handle)
    cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    tmp = tempfile.mkdtemp(prefix="kubeconfig-")
    try:
        os.chmod(tmp, 0o700)
        for name in ("client-certificate-data", "client-key-data"):
            with open(f"{tmp}/{name}", "wb") as handle:
                handle.write(base64.b64decode(user[name]))
        yield Api(server or cluster["server"], base64.b64decode(cluster["certificate-authority-data"]).decode(),
                  f"{tmp}/client-certificate-data", f"{tmp}/client-key-data")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def pod_env(manifest):
    """The environment of the stand-in unit that runs a static pod: its command's flags, and its
    image, whose tag is the version the component reports (as a real image's binary would)."""
    container = manifest["spec"]["containers"][0]
    return f"FLAGS={' '.join(container['command'][1:])}\nIMAGE={container.get('image', '')}\n"


def write_private(path, data, mode=0o600):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data if isinstance(data, bytes) else data.encode())


def read(path, mode="rb"):
    with open(path, mode) as handle:
        return handle.read()


def now():
    return time.time()


def rfc3339(timestamp):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
