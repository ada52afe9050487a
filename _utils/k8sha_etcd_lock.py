"""
Locks in the cluster's own etcd, for repairs coordinated by more than one salt-master (issue 16):
etcd's v3 API through its JSON gateway on the control planes' client port, with client TLS.

A lock is a key created only if it does not exist (one transaction), attached to a lease: the
holder keeps the lease alive while it works (a thread), and a holder that dies, or a master that
is cut off, loses the lock when its lease runs out. The value names the holder; only the holder
(same value) releases it. Without a quorum etcd grants no lease and commits no transaction: no
lock, so no membership change starts (that case belongs to orch.etcd_restore).

How the master's repairs use it (take): every lock the heal file takes is also taken here, so
that of several masters that see one fault, one repairs it.
- Before this master has etcd client credentials (no cluster yet: the first orch.cluster), the
  heal file alone.
- etcd unavailable (no quorum, no control plane reachable): the control-plane lock (a membership
  change) is refused; orch.etcd_restore, which runs precisely then, takes the file lock only.
  Other locks (a load balancer's repair) go on with the file lock: two masters may then both
  repair one load balancer, which is harmless (a state apply), rather than leave it broken.

Attempt windows (how many repairs of a fault on a node failed lately) are kept here too, under
/k8sha/attempts/, so that the masters share one count: each outcome is appended by
compare-and-swap on the key's revision. Without etcd a master counts its own (the heal file).

Only the Python standard library: the master's Salt runs it as it is.
"""

import base64
import contextlib
import json
import os
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request

PREFIX = "/k8sha/locks/"
ATTEMPTS = "/k8sha/attempts/"             # <fault>:<node> -> [[unix time, ok], ...] within the window
MEMBERSHIP = "control_plane"              # the lock of etcd's membership changes (joins, rejoins, removals)
CN_PREFIX = "k8sha-salt-master:"          # what etcd_cluster.sign_client signs, and nothing else


class EtcdUnavailable(Exception):
    """No endpoint answered, or etcd refused (no quorum, no leader): nothing was changed."""


def _b64(text):
    return base64.b64encode(text.encode()).decode()


def _text(b64):
    return base64.b64decode(b64).decode()


class Etcd:
    """The etcd v3 JSON gateway at ``endpoints`` (https://host:2379), with client TLS."""

    def __init__(self, endpoints, ca, cert, key, timeout=3):
        self.endpoints, self.timeout = list(endpoints), timeout
        self.context = ssl.create_default_context(cafile=ca)
        self.context.load_cert_chain(cert, key)

    def call(self, path, body):
        """The first endpoint's answer to POST /v3/``path``; EtcdUnavailable if none answers."""
        errors = []
        for endpoint in self.endpoints:
            request = urllib.request.Request(f"{endpoint}/v3/{path}", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as answer:
                    return json.loads(answer.read() or b"{}")
            except urllib.error.HTTPError as exc:
                errors.append(f"{endpoint}: {exc.code} {exc.read()[:200].decode(errors='replace')}")
            except (OSError, ValueError) as exc:
                errors.append(f"{endpoint}: {exc}")
        raise EtcdUnavailable("etcd did not answer " + path + ": " + "; ".join(errors))

    def grant(self, ttl):
        return self.call("lease/grant", {"TTL": int(ttl)})["ID"]

    def keepalive(self, lease):
        """The lease's remaining seconds after a keepalive; 0 when it had expired."""
        answer = self.call("lease/keepalive", {"ID": lease})
        return int(answer.get("result", {}).get("TTL", 0))

    def time_to_live(self, lease):
        """Seconds left on the lease; -1 when it has expired (or never existed)."""
        return int(self.call("lease/timetolive", {"ID": lease}).get("TTL", -1))

    def revoke(self, lease):
        with contextlib.suppress(EtcdUnavailable):
            self.call("lease/revoke", {"ID": lease})

    def get(self, key):
        kvs = self.call("kv/range", {"key": _b64(key)}).get("kvs", [])
        return {"value": _text(kvs[0].get("value", "")), "lease": kvs[0].get("lease")} if kvs else None

    def versioned(self, key):
        """(the value of ``key`` or None, its mod revision: "0" when absent)."""
        kvs = self.call("kv/range", {"key": _b64(key)}).get("kvs", [])
        return (_text(kvs[0].get("value", "")), kvs[0].get("mod_revision", "0")) if kvs else (None, "0")

    def put_if_unchanged(self, key, value, mod_revision):
        """``key`` = ``value`` only if its mod revision is still ``mod_revision``: whether it was."""
        answer = self.call("kv/txn", {
            "compare": [{"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}],
            "success": [{"request_put": {"key": _b64(key), "value": _b64(value)}}]})
        return bool(answer.get("succeeded"))

    def listing(self, prefix):
        """{key: {value, lease}} of every key under ``prefix``."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        kvs = self.call("kv/range", {"key": _b64(prefix), "range_end": _b64(end)}).get("kvs", [])
        return {_text(kv["key"]): {"value": _text(kv.get("value", "")), "lease": kv.get("lease")} for kv in kvs}

    def create(self, key, value, lease):
        """``key`` = ``value`` on ``lease`` if the key does not exist: (True, None) or (False, the holder's value)."""
        answer = self.call("kv/txn", {
            "compare": [{"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": {"key": _b64(key), "value": _b64(value), "lease": lease}}],
            "failure": [{"request_range": {"key": _b64(key)}}]})
        if answer.get("succeeded"):
            return True, None
        kvs = answer.get("responses", [{}])[0].get("response_range", {}).get("kvs", [])
        return False, _text(kvs[0]["value"]) if kvs else None

    def delete_if(self, key, value):
        """``key`` deleted only while it holds ``value``: whether it was."""
        answer = self.call("kv/txn", {
            "compare": [{"key": _b64(key), "target": "VALUE", "result": "EQUAL", "value": _b64(value)}],
            "success": [{"request_delete_range": {"key": _b64(key)}}]})
        return bool(answer.get("succeeded"))


class Lock:
    """One lock: ``held = lock.acquire()``; ``lock.release()``. While held, a thread keeps its
    lease alive every ttl/3 s; if etcd stops renewing it (the lease ran out), ``lost`` is set."""

    def __init__(self, etcd, name, holder, ttl=30):
        self.etcd, self.key, self.holder, self.ttl = etcd, PREFIX + name, holder, int(ttl)
        self.lease, self.lost, self._stop = None, threading.Event(), threading.Event()
        self._thread = None

    def acquire(self):
        """(True, None) when taken, (False, the holder's value) when another holds it."""
        self.lease = self.etcd.grant(self.ttl)
        taken, other = self.etcd.create(self.key, self.holder, self.lease)
        if not taken:
            self.etcd.revoke(self.lease)
            self.lease = None
            return False, other
        self._thread = threading.Thread(target=self._keep_alive, daemon=True, name=f"k8sha-lock-{self.key}")
        self._thread.start()
        return True, None

    def _keep_alive(self):
        while not self._stop.wait(max(self.ttl / 3, 1)):
            try:
                if self.etcd.keepalive(self.lease) <= 0:
                    self.lost.set()
                    return
            except EtcdUnavailable:
                continue  # the lease may still run; the next keepalive tells

    def release(self):
        """The key deleted (only while it is still ours) and the lease revoked."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=self.etcd.timeout * len(self.etcd.endpoints) + 1)
        if self.lease is None:
            return False
        try:
            released = self.etcd.delete_if(self.key, self.holder)
        finally:
            self.etcd.revoke(self.lease)
            self.lease = None
        return released


def holders(etcd):
    """{lock name: {holder, lease, ttl_left}}: the lock records as etcd keeps them."""
    return {key[len(PREFIX):]: {"holder": entry["value"], "lease": entry["lease"],
                                "ttl_left": etcd.time_to_live(entry["lease"]) if entry["lease"] else None}
            for key, entry in etcd.listing(PREFIX).items()}


def _attempts(text, now, window):
    try:
        found = json.loads(text or "[]")
    except ValueError:
        found = []
    return [a for a in found if isinstance(a, list) and len(a) == 2 and now - a[0] < window]


def shared_attempts(etcd, pair, now, window):
    """The attempts at ``pair`` (<fault>:<node>) within ``window`` s, as every master recorded
    them; None without etcd (no credentials, or it does not answer): the caller counts its own."""
    if etcd is None:
        return None
    try:
        return _attempts(etcd.versioned(ATTEMPTS + pair)[0], now, window)
    except EtcdUnavailable:
        return None


def record_attempt(etcd, pair, at, ok, window, tries=5):
    """The outcome appended to ``pair``'s attempts in etcd (older than ``window`` dropped), by
    compare-and-swap: two masters recording at once both count. Whether it was recorded."""
    if etcd is None:
        return False
    try:
        for _ in range(tries):
            text, revision = etcd.versioned(ATTEMPTS + pair)
            attempts = _attempts(text, at, window) + [[at, bool(ok)]]
            if etcd.put_if_unchanged(ATTEMPTS + pair, json.dumps(attempts), revision):
                return True
    except EtcdUnavailable:
        return False
    return False


def records(etcd):
    """holders(etcd), or why etcd could not say."""
    try:
        return holders(etcd)
    except EtcdUnavailable as exc:
        return f"etcd is unavailable: {exc}"


# --- the master's client credentials --------------------------------------------------------------

def credential_paths(directory):
    """Where this master keeps its etcd client key, certificate and etcd's CA."""
    return {"key": os.path.join(directory, "client.key"), "cert": os.path.join(directory, "client.crt"),
            "ca": os.path.join(directory, "etcd-ca.crt")}


def _openssl(*args, data=None):
    result = subprocess.run(["openssl", *args], input=data, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ValueError(f"openssl {args[0]}: {result.stderr.strip()}")
    return result.stdout


def issue(salt_cmd, directory, master_id, signers):
    """This master's etcd client key (made here, 0600, never sent) and certificate (signed by the
    first control plane of ``signers`` that answers etcd_cluster.sign_client): (True, paths) or
    (False, why). The certificate must be for our key and chain to the CA that came with it."""
    paths = credential_paths(directory)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if not os.path.exists(paths["key"]):
        key = _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256")
        fd = os.open(paths["key"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key)
    csr = _openssl("req", "-new", "-key", paths["key"], "-subj", f"/CN={CN_PREFIX}{master_id}")
    ours = _openssl("pkey", "-in", paths["key"], "-pubout")
    why = "no control plane answered"
    for signer in signers:
        answer = salt_cmd([signer], "etcd_cluster.sign_client", arg=[csr], tgt_type="list", timeout=60).get(signer) or {}
        signed = answer.get("ret")
        if answer.get("retcode", 0) != 0 or not isinstance(signed, dict):
            why = f"{signer}: {signed}"
            continue
        try:
            if _openssl("x509", "-noout", "-pubkey", data=signed["certificate"]) != ours:
                raise ValueError("the certificate is not for this master's key")
            with open(paths["ca"] + ".new", "w") as handle:
                handle.write(signed["ca"])
            _openssl("verify", "-CAfile", paths["ca"] + ".new", data=signed["certificate"])
        except (ValueError, KeyError) as exc:
            why = f"{signer}: {exc}"
            continue
        with open(paths["cert"], "w") as handle:
            handle.write(signed["certificate"])
        os.replace(paths["ca"] + ".new", paths["ca"])
        return True, paths
    return False, why


def credentials_directory(cachedir):
    return os.path.join(cachedir, "k8sha-etcd-client")


def cluster_etcd(cachedir, description, settings):
    """The cluster's etcd through every control plane's client port, with this master's
    credentials; None before it has them."""
    paths = credential_paths(credentials_directory(cachedir))
    if not all(os.path.exists(p) for p in paths.values()):
        return None
    port = settings["ports"]["etcd_client"]
    endpoints = [f"https://{n['address']}:{port}" for n in description.get("nodes", []) if n.get("role") == "control_plane"]
    return Etcd(endpoints, paths["ca"], paths["cert"], paths["key"], timeout=settings["etcd"]["timeout"])


def _process_start(pid):
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[19])  # noqa: SIM115
    except (OSError, ValueError, IndexError):
        return None


def holder_name(master, what, token):
    """Who holds a lock: this master, what for, the run's token, and its process (pid:start)."""
    return f"{master}/{what}/{token} pid {os.getpid()}:{_process_start(os.getpid())}"


def _dead_here(holder, master):
    """Whether ``holder`` was a process of this master that is gone (its lease is still running)."""
    if not holder or not holder.startswith(f"{master}/") or " pid " not in holder:
        return False
    pid, _, start = holder.rsplit(" pid ", 1)[1].partition(":")
    return not pid.isdigit() or str(_process_start(int(pid))) != start


def take(etcd, key, master, what, token, ttl, wait=0, poll=1.0):
    """(Lock, None) when ``key`` is ours in etcd too; (None, why) when refused: another master
    holds it, or etcd is unavailable for the membership lock; (None, None) without etcd
    credentials, or etcd unavailable for another lock (see the module). A lock left by a dead
    process of this same master (a restart) is not waited for: its lease is revoked.
    With ``wait`` seconds, another master's lock is waited for (polled every ``poll`` s) and
    taken once it is released or its lease runs out: that master finished, or died mid-way."""
    if etcd is None:
        return None, None
    lock = Lock(etcd, key, holder_name(master, what, token), ttl)
    deadline = time.monotonic() + wait
    try:
        while True:
            taken, other = lock.acquire()
            if not taken and _dead_here(other, master):
                left = etcd.get(PREFIX + key)
                if left and left.get("lease"):
                    etcd.revoke(left["lease"])
                taken, other = lock.acquire()
            if taken or time.monotonic() + poll > deadline:
                break
            time.sleep(poll)
    except EtcdUnavailable as exc:
        if key == MEMBERSHIP:
            return None, f"etcd is unavailable ({exc}): no membership change starts without it (orch.etcd_restore " \
                         "is the procedure for a lost quorum)"
        return None, None
    return (lock, None) if taken else (None, f"{other} holds {key} in etcd")


def give_back(lock):
    if lock is not None:
        with contextlib.suppress(EtcdUnavailable):
            lock.release()
