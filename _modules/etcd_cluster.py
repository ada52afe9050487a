"""
Stacked etcd membership, through etcdctl with kubeadm's certificate paths: members, health,
leader, and the removal of a member by peer URL that refuses to break quorum.

Endpoints default to every control plane of the cluster description (https://ADDRESS:<k8sha:ports:etcd_client>).

CLI examples::

    salt cp1 etcd_cluster.members
    salt cp1 etcd_cluster.health
    salt cp1 etcd_cluster.remove_member https://198.51.100.23:2380   (the peer port: k8sha:ports:etcd_peer)
"""

import hashlib
import json
import os
import subprocess
import tempfile
import time
import urllib.parse

from salt.exceptions import CommandExecutionError

__virtualname__ = "etcd_cluster"


def __virtual__():
    return __virtualname__


def _settings():
    return __salt__["cluster_topology.settings"]()["etcd"]


def default_endpoints():
    port = __salt__["cluster_topology.settings"]()["ports"]["etcd_client"]
    desc = __salt__["cluster_topology.description"]()
    return [
        f"https://{n['address']}:{port}"
        for n in desc.get("nodes", [])
        if n.get("role") == "control_plane"
    ]


# etcdctl's messages for the failures an operator meets, and what they mean.
CAUSES = (
    ("certificate", "TLS failed (check the CA and client certificate paths, k8sha:lookup:etcd)"),
    ("x509", "TLS failed (check the CA and client certificate paths, k8sha:lookup:etcd)"),
    ("no such file", "a certificate file is missing (is this node a kubeadm control plane?)"),
    ("context deadline exceeded", "no answer in time: the endpoints are down or etcd has no quorum"),
    ("connection refused", "nothing listens on the endpoints: etcd is not running there"),
    ("unhealthy cluster", "etcd refuses: the cluster is unhealthy (no quorum, or a member just joined)"),
)


def explain(stderr):
    """The cause of an etcdctl failure from its output (pure)."""
    last = (stderr.strip().splitlines() or ["no output"])[-1]
    cause = next((why for marker, why in CAUSES if marker in stderr.lower()), None)
    return f"{cause}: {last}" if cause else last


def _etcdctl(args, endpoints=None, tls=True, check=True):
    etcd = _settings()
    endpoints = endpoints or default_endpoints()
    if isinstance(endpoints, str):
        endpoints = endpoints.split(",")
    cmd = [etcd["etcdctl"], f"--endpoints={','.join(endpoints)}", f"--dial-timeout={etcd['timeout']}s",
           f"--command-timeout={etcd['timeout']}s", "-w", "json"]
    if tls:
        cmd += [f"--cacert={etcd['ca']}", f"--cert={etcd['cert']}", f"--key={etcd['key']}"]
    node, timeout = __opts__.get("id"), 4 * int(etcd["timeout"]) + 5
    where = f"etcdctl {' '.join(args)} on {node} (endpoints {','.join(endpoints)})"
    try:
        result = subprocess.run(cmd + list(args), capture_output=True, text=True,
                                env={"ETCDCTL_API": "3", "PATH": "/usr/local/bin:/usr/bin:/bin"}, timeout=timeout)
    except FileNotFoundError:
        raise CommandExecutionError(f"{where}: {etcd['etcdctl']} is not installed on {node}; the control-plane state "
                                    f"installs it: salt {node} state.apply kubernetes.etcd_client") from None
    except subprocess.TimeoutExpired:
        raise CommandExecutionError(f"{where}: no answer in {timeout} s: the endpoints are down or etcd has "
                                    "no quorum") from None
    if check and result.returncode != 0:
        raise CommandExecutionError(f"{where} failed: {explain(result.stderr)}")
    return result


def members(endpoints=None, tls=True):
    """Every member: id (hex, as etcdctl prints it), name, peer and client URLs."""
    data = json.loads(_etcdctl(["member", "list"], endpoints, tls).stdout)
    return [
        {
            "id": format(m["ID"], "x"),
            "name": m.get("name", ""),  # empty while a newly added member has not started
            "peer_urls": m.get("peerURLs", []),
            "client_urls": m.get("clientURLs", []),
            "learner": bool(m.get("isLearner")),
        }
        for m in data.get("members", [])
    ]


def health(endpoints=None, tls=True):
    """Health of every member's client URL: {url: {'healthy': bool, 'error': ...}}."""
    result = _etcdctl(["endpoint", "health", "--cluster"], endpoints, tls, check=False)
    try:
        entries = json.loads(result.stdout or "[]")
    except ValueError as exc:
        raise CommandExecutionError(f"etcdctl endpoint health: unreadable output: {result.stderr.strip()}") from exc
    return {e["endpoint"]: {"healthy": bool(e.get("health")), "error": e.get("error")} for e in entries}


def leader(endpoints=None, tls=True):
    """The leader's member id (hex) and name, as the reachable members report it."""
    result = _etcdctl(["endpoint", "status", "--cluster"], endpoints, tls, check=False)
    statuses = json.loads(result.stdout or "[]")
    leaders = {s["Status"]["leader"] for s in statuses if s.get("Status")}
    if len(leaders) != 1:
        return {"id": None, "name": None, "reason": f"members report {len(leaders)} leaders"}
    leader_id = format(leaders.pop(), "x")
    name = next((m["name"] for m in members(endpoints, tls) if m["id"] == leader_id), None)
    return {"id": leader_id, "name": name}


def membership_problems(member_list, health_by_url, control_planes, peer_port):
    """Every member compared with the description's control planes (pure): a member that is
    no control plane, or that does not answer healthy, and a control plane that is no member,
    each with the safe way out. ``control_planes``: [{name, address}]."""
    wanted = {f"{n['address']}:{peer_port}": n["name"] for n in control_planes}
    problems, seen = [], set()
    for member in member_list:
        label = member["name"] or f"(unstarted {member['id']})"
        peer = next(iter(member["peer_urls"]), "?")
        node = next((wanted[h] for h in map(_host_port, member["peer_urls"]) if h in wanted), None)
        healthy = any(health_by_url.get(u, {}).get("healthy") for u in member["client_urls"])
        remove = (f"remove it with `salt <a healthy control plane> etcd_cluster.remove_member {peer}` "
                  "(refused if the remaining members would lose quorum)")
        if node is None:
            problems.append(f"etcd member {label} ({peer}) is no control plane of the description: {remove}")
        elif not healthy:
            problems.append(f"etcd member {label} ({peer}) is not healthy: bring {node} back, or re-create it "
                            f"(salt-cloud -d {node}, then orch.cluster), or {remove}")
        seen.add(node)
    problems += [f"{name} is no etcd member: orch.cluster joins it" for name in wanted.values() if name not in seen]
    return problems


def _host_port(url):
    return urllib.parse.urlparse(url).netloc


def membership():
    """Every member with its health, and what is wrong with the membership (see
    membership_problems): asked from this control plane.

    CLI example: ``salt cp1 etcd_cluster.membership``"""
    member_list, health_by_url = members(), health()
    desc = __salt__["cluster_topology.description"]()
    control_planes = [n for n in desc.get("nodes", []) if n.get("role") == "control_plane"]
    peer_port = __salt__["cluster_topology.settings"]()["ports"]["etcd_peer"]
    for member in member_list:
        member["healthy"] = any(health_by_url.get(u, {}).get("healthy") for u in member["client_urls"])
    return {"members": member_list, "health": health_by_url,
            "problems": membership_problems(member_list, health_by_url, control_planes, peer_port)}


def snapshot(directory="/var/lib/k8sha/etcd-snapshots"):
    """On a control plane: ``etcdctl snapshot save`` from this node's own member, checked with
    ``snapshot status``. Returns its path, sha256, revision, keys and size.

    CLI example: ``salt cp1 etcd_cluster.snapshot``"""
    port = __salt__["cluster_topology.settings"]()["ports"]["etcd_client"]
    address = next(n["address"] for n in __salt__["cluster_topology.description"]()["nodes"]
                   if n["name"] == __opts__["id"])
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{__opts__['id']}.db")
    _etcdctl(["snapshot", "save", path], [f"https://{address}:{port}"])
    status = json.loads(_etcdctl(["snapshot", "status", path], [f"https://{address}:{port}"], tls=False).stdout)
    with open(path, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    return {"path": path, "sha256": digest, "revision": status.get("revision"), "keys": status.get("totalKey"),
            "size": os.path.getsize(path)}


def quorum_after_removal(member_list, healthy_client_urls, peer_url):
    """(safe, reason): whether removing the member with `peer_url` keeps a quorum of healthy
    members in the smaller cluster (pure function)."""
    remaining = [m for m in member_list if peer_url not in m["peer_urls"]]
    quorum = len(remaining) // 2 + 1
    healthy = sum(1 for m in remaining if any(u in healthy_client_urls for u in m["client_urls"]))
    if healthy < quorum:
        return False, (f"removing {peer_url} would leave {healthy} healthy of {len(remaining)} members, "
                       f"below the quorum of {quorum}: nothing was removed")
    return True, f"{healthy} healthy of {len(remaining)} members remain (quorum {quorum})"


def remove_member(peer_url, endpoints=None, tls=True):
    """
    Remove the member whose peer URL is ``peer_url``, only if the remaining members keep a
    healthy quorum. Returns ``{'removed': bool, 'id', 'comment'}``; absent is not an error.
    """
    member_list = members(endpoints, tls)
    target = next((m for m in member_list if peer_url in m["peer_urls"]), None)
    if target is None:
        return {"removed": False, "id": None, "comment": f"no member has peer URL {peer_url}: nothing to remove"}
    healthy_urls = {url for url, h in health(endpoints, tls).items() if h["healthy"]}
    safe, reason = quorum_after_removal(member_list, healthy_urls, peer_url)
    if not safe:
        raise CommandExecutionError(reason)
    # Ask only healthy members: a request routed to the member being removed could hang.
    remaining = [u for m in member_list if m is not target for u in m["client_urls"] if u in healthy_urls]
    moved = _leadership_moved_from(target, member_list, healthy_urls, tls)
    deadline = time.monotonic() + (15 if moved else 0)
    while True:  # a new leader refuses a removal ("unhealthy cluster") until it has seen its peers for 5 s
        removal = _etcdctl(["member", "remove", target["id"]], remaining, tls, check=False)
        if removal.returncode == 0 or "unhealthy cluster" not in removal.stderr or time.monotonic() > deadline:
            break
        time.sleep(1)
    if removal.returncode != 0:
        raise CommandExecutionError(f"etcdctl member remove {target['id']} failed: {explain(removal.stderr)}")
    return {"removed": True, "id": target["id"],
            "comment": f"removed {target['name'] or target['id']}; {moved}{reason}"}


def _leadership_moved_from(target, member_list, healthy_urls, tls):
    """When the member about to be removed leads, leadership is handed to a healthy member first
    (etcdctl move-leader, sent to the leader): removing a leader makes the others elect one, and
    the API servers answer errors ("leader changed") until they have. '' or what was done."""
    if not any(u in healthy_urls for u in target["client_urls"]):
        return ""
    try:
        if leader(target["client_urls"], tls).get("id") != target["id"]:
            return ""
    except (CommandExecutionError, ValueError):
        return ""
    heir = next((m for m in member_list if m is not target and any(u in healthy_urls for u in m["client_urls"])), None)
    if heir is None:
        return ""
    moved = _etcdctl(["move-leader", heir["id"]], target["client_urls"], tls, check=False)
    if moved.returncode != 0:
        return f"(leadership could not be handed over first: {explain(moved.stderr)}) "
    return f"leadership handed to {heir['name'] or heir['id']} first; "


MASTER_CN_PREFIX = "k8sha-salt-master:"


def sign_client(csr, days=365):
    """
    On a control plane: a client certificate for a salt-master's repair locks in etcd (issue 16),
    signed with etcd's CA (kubeadm's pki/etcd/ca.key, beside k8sha:lookup:etcd:ca). Only a CSR whose
    subject is exactly ``CN=k8sha-salt-master:<id>`` is signed, for client authentication only.
    The key never leaves the master: only the CSR and the certificate travel.
    Returns {certificate, ca} (PEM; public).

    CLI example: ``salt cp1 etcd_cluster.sign_client "$(cat master.csr)"``
    """
    ca = _settings()["ca"]
    ca_key = os.path.splitext(ca)[0] + ".key"
    with tempfile.TemporaryDirectory() as tmp:
        request = os.path.join(tmp, "client.csr")
        with open(request, "w") as handle:
            handle.write(csr)
        checked = subprocess.run(["openssl", "req", "-in", request, "-noout", "-verify", "-subject", "-nameopt", "RFC2253"],
                                 capture_output=True, text=True, check=False)
        subject = checked.stdout.strip().removeprefix("subject=")
        if checked.returncode != 0 or not subject.startswith("CN=" + MASTER_CN_PREFIX) or "," in subject:
            raise CommandExecutionError(f"refused to sign: the request's subject is {subject or 'unreadable'!r}, "
                                        f"not CN={MASTER_CN_PREFIX}<master id>")
        extensions = os.path.join(tmp, "client.ext")
        with open(extensions, "w") as handle:
            handle.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                         "extendedKeyUsage=clientAuth\n")
        signed = subprocess.run(["openssl", "x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key,
                                 "-CAcreateserial", "-CAserial", os.path.join(tmp, "ca.srl"), "-days", str(int(days)),
                                 "-sha256", "-extfile", extensions], capture_output=True, text=True, check=False)
    if signed.returncode != 0:
        raise CommandExecutionError(f"signing the salt-master's etcd client certificate failed: {signed.stderr.strip()}")
    with open(ca) as handle:
        return {"certificate": signed.stdout, "ca": handle.read()}
