"""
The rendered HAProxy config run by a real HAProxy on loopback, in front of TLS stand-ins
for three API servers: one healthy, one answering 500, one that completes the TLS
handshake but never answers HTTP. Only a real TLS `GET /healthz` check tells them apart
(an SSL-hello check would keep the last two in the pool). Read back through
lb_status.haproxy_backends from the stats socket.
"""

import shutil
import socket
import ssl
import subprocess
import time

import pytest
from helpers import salt_render
from helpers.tls_backends import ApiServerStandIn, self_signed

pytestmark = pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy not installed (make setup)")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def loopback_description(port):
    return salt_render.description(
        api={"vip": "127.0.0.100", "prefix": 8, "port": port},
        nodes=[
            {"name": "lb1", "role": "loadbalancer", "address": "127.0.0.11"},
            {"name": "lb2", "role": "loadbalancer", "address": "127.0.0.12"},
            {"name": "cp1", "role": "control_plane", "address": "127.0.0.21"},
            {"name": "cp2", "role": "control_plane", "address": "127.0.0.22"},
            {"name": "cp3", "role": "control_plane", "address": "127.0.0.23"},
        ],
    )


@pytest.fixture
def haproxy_in_front_of_three_api_servers(minion, safe_dir):
    port = free_port()
    socket_path = safe_dir / "admin.sock"
    lb = minion(loopback_description(port), lookup={"haproxy": {"stats_socket": str(socket_path)}})
    _, args = lb.managed_files("haproxy")["/etc/haproxy/haproxy.cfg"]
    config = safe_dir / "haproxy.cfg"
    config.write_text(lb.render_file(args))
    cert, key = self_signed(safe_dir)
    servers = {
        "cp1": ApiServerStandIn("127.0.0.21", port, 200, cert, key),
        "cp2": ApiServerStandIn("127.0.0.22", port, 500, cert, key),
        "cp3": ApiServerStandIn("127.0.0.23", port, None, cert, key),
    }
    # -db: foreground, whatever the config says about daemon mode.
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        yield lb, servers, port, proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for server in servers.values():
            server.close()


def wait_for_statuses(lb, expected, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        backends = lb.call("lb_status.haproxy_backends")
        statuses = {s["name"]: s["status"] for s in backends["servers"]}
        if statuses == expected or time.monotonic() > deadline:
            return backends, statuses
        time.sleep(0.25)


def test_only_a_healthy_api_server_stays_in_the_pool(haproxy_in_front_of_three_api_servers):
    lb, servers, port, proc = haproxy_in_front_of_three_api_servers
    backends, statuses = wait_for_statuses(lb, {"cp1": "UP", "cp2": "DOWN", "cp3": "DOWN"})
    assert statuses == {"cp1": "UP", "cp2": "DOWN", "cp3": "DOWN"}, backends
    assert backends["running"] and backends["up"] == 1 and backends["total"] == 3
    # The check really is an HTTP GET of /healthz, sent inside TLS.
    assert ("GET", "/healthz") in servers["cp1"].requests
    assert ("GET", "/healthz") in servers["cp2"].requests
    # A client through the VIP reaches the healthy server.
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.100", port), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            tls.sendall(b"GET /version HTTP/1.0\r\n\r\n")
            assert tls.recv(100).startswith(b"HTTP/1.0 200")
    assert ("GET", "/version") in servers["cp1"].requests


def test_a_recovered_api_server_returns_to_the_pool(haproxy_in_front_of_three_api_servers):
    lb, servers, port, proc = haproxy_in_front_of_three_api_servers
    _, statuses = wait_for_statuses(lb, {"cp1": "UP", "cp2": "DOWN", "cp3": "DOWN"})
    assert statuses["cp2"] == "DOWN"
    servers["cp2"].status = 200
    _, statuses = wait_for_statuses(lb, {"cp1": "UP", "cp2": "UP", "cp3": "DOWN"})
    assert statuses == {"cp1": "UP", "cp2": "UP", "cp3": "DOWN"}


def test_status_reports_a_stopped_haproxy(minion, safe_dir):
    lb = minion(lookup={"haproxy": {"stats_socket": str(safe_dir / "absent.sock")}})
    backends = lb.call("lb_status.haproxy_backends")
    assert backends["running"] is False and "does not exist" in backends["reason"]


def test_server_state_takes_an_api_server_out_of_the_pool_and_puts_it_back(haproxy_in_front_of_three_api_servers):
    """orch.remove_node's drain, on a real HAProxy: maint takes cp1 out (no request reaches it),
    ready brings it back through its health check; an unknown server is refused by HAProxy."""
    lb, servers, port, proc = haproxy_in_front_of_three_api_servers
    wait_for_statuses(lb, {"cp1": "UP", "cp2": "DOWN", "cp3": "DOWN"})
    done = lb.call("lb_status.server_state", "cp1", "maint")
    assert done == {"server": "cp1", "state": "maint", "sessions_left": 0}
    backends, statuses = wait_for_statuses(lb, {"cp1": "MAINT", "cp2": "DOWN", "cp3": "DOWN"})
    assert statuses["cp1"] == "MAINT", backends
    lb.call("lb_status.server_state", "cp1", "ready")
    backends, statuses = wait_for_statuses(lb, {"cp1": "UP", "cp2": "DOWN", "cp3": "DOWN"})
    assert statuses["cp1"] == "UP", backends
    with pytest.raises(Exception, match="refused"):
        lb.call("lb_status.server_state", "cp9", "maint")
    with pytest.raises(Exception, match="use one of"):
        lb.call("lb_status.server_state", "cp1", "off")
