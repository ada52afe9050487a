"""
Status of a load balancer, for operators and for the orchestrations: which VRRP
state keepalived is in, whether this node holds the VIP, and each HAProxy
backend server's state from the stats socket. Read-only, but for one run-time change:
``server_state`` takes an API server out of HAProxy's pool before it is taken down (orch.remove_node)
and puts it back; it lasts until HAProxy restarts or reloads.

CLI examples::

    salt -C 'lb*' lb_status.summary
    salt-call lb_status.vrrp
    salt-call lb_status.haproxy_backends
    salt -C 'lb*' lb_status.server_state cp3 maint
"""

import csv
import io
import json
import os
import socket
import subprocess
import time

__virtualname__ = "lb_status"

API_BACKEND = "kube_apiserver_nodes"


def __virtual__():
    return __virtualname__


def _settings():
    return __salt__["cluster_topology.settings"]()


def _vip():
    return str(__salt__["cluster_topology.description"]()["api"]["vip"])


def local_addresses():
    """IPv4 addresses configured on this node's interfaces."""
    out = subprocess.run(
        ["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    return sorted(
        info["local"] for link in json.loads(out or "[]") for info in link.get("addr_info", [])
    )


def vrrp(state_file=None):
    """
    The VRRP state recorded by keepalived's notify script, and whether the VIP
    is configured here. ``consistent`` is False when the two disagree (MASTER
    without the VIP, or the VIP on a node that is not MASTER).

    CLI example: ``salt-call lb_status.vrrp``
    """
    state_file = state_file or _settings()["keepalived"]["state_file"]
    vip = _vip()
    holds_vip = vip in local_addresses()
    try:
        with open(state_file, encoding="utf-8") as handle:
            record = json.load(handle)
    except FileNotFoundError:
        record = {"state": "UNKNOWN", "reason": f"{state_file} does not exist: keepalived has not reported a state"}
    except ValueError as exc:
        record = {"state": "UNKNOWN", "reason": f"{state_file} is not valid JSON: {exc}"}
    result = {
        "state": record.get("state", "UNKNOWN"),
        "previous": record.get("previous"),
        "priority": record.get("priority"),
        "instance": record.get("instance"),
        "since": record.get("since"),
        "seconds_in_state": round(time.time() - record["since"]) if record.get("since") else None,
        "vip": vip,
        "holds_vip": holds_vip,
    }
    if "reason" in record:
        result["reason"] = record["reason"]
    result["consistent"] = (result["state"] == "MASTER") == holds_vip
    return result


def _stats_socket_command(path, command, timeout=2.0):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks).decode()


def parse_show_stat(text, backend=API_BACKEND):
    """Servers of ``backend`` from HAProxy's ``show stat`` CSV."""
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    servers = []
    for row in rows:
        if row.get("pxname") != backend or row.get("svname") in ("FRONTEND", "BACKEND"):
            continue
        servers.append(
            {
                "name": row["svname"],
                "address": row.get("addr", ""),
                "status": row["status"],  # UP, DOWN, UP 1/2 (going down), NOLB, MAINT
                "check": row.get("check_status", ""),
                "check_ms": int(row["check_duration"]) if row.get("check_duration") else None,
                "seconds_in_status": int(row["lastchg"]) if row.get("lastchg") else None,
                "sessions": int(row.get("scur") or 0),
            }
        )
    return servers


def haproxy_backends(socket_path=None):
    """
    Each API server as HAProxy sees it: ``{'running': bool, 'servers': [...], 'up': n, 'total': n}``.

    CLI example: ``salt-call lb_status.haproxy_backends``
    """
    socket_path = socket_path or _settings()["haproxy"]["stats_socket"]
    if not os.path.exists(socket_path):
        return {"running": False, "reason": f"stats socket {socket_path} does not exist", "servers": []}
    try:
        servers = parse_show_stat(_stats_socket_command(socket_path, "show stat"))
    except OSError as exc:
        return {"running": False, "reason": f"stats socket {socket_path}: {exc}", "servers": []}
    up = sum(1 for s in servers if s["status"].startswith("UP"))
    return {"running": True, "servers": servers, "up": up, "total": len(servers)}


def summary():
    """
    Everything an operator asks a load balancer: VRRP state, VIP, HAProxy backends.

    CLI example: ``salt -C 'lb*' lb_status.summary``
    """
    return {"vrrp": vrrp(), "haproxy": haproxy_backends()}


SERVER_STATES = ("ready", "drain", "maint")


def server_state(server, state, drain_seconds=10):
    """
    Set the API server ``server``'s state in HAProxy (stats socket, level admin): ``ready`` (in the
    pool), ``drain`` (no new connection) or ``maint`` (out of the pool). ``maint`` drains first: new
    connections go elsewhere while the open ones finish, up to ``drain_seconds``.
    Returns ``{'server', 'state', 'sessions_left'}``.

    CLI example: ``salt -C 'lb*' lb_status.server_state cp3 maint``
    """
    if state not in SERVER_STATES:
        raise ValueError(f"state {state!r}: use one of {', '.join(SERVER_STATES)}")
    socket_path = _settings()["haproxy"]["stats_socket"]

    def set_to(wanted):
        answer = _stats_socket_command(socket_path, f"set server {API_BACKEND}/{server} state {wanted}").strip()
        if answer:  # HAProxy answers nothing on success
            raise ValueError(f"HAProxy refused 'set server {API_BACKEND}/{server} state {wanted}': {answer}")

    def sessions():
        found = [s for s in haproxy_backends(socket_path)["servers"] if s["name"] == server]
        return found[0]["sessions"] if found else 0

    if state == "maint":
        set_to("drain")
        deadline = time.monotonic() + drain_seconds
        while sessions() and time.monotonic() < deadline:
            time.sleep(0.5)
    set_to(state)
    return {"server": server, "state": state, "sessions_left": sessions()}
