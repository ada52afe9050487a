"""
A client of the API through the VIP, as the benchmarks see it: every INTERVAL seconds a
new TCP + TLS connection and GET /healthz, TIMEOUT seconds at most each. Runs inside the
lab (the master's network namespace); prints one JSON list [sent_at, ok, seconds, error].
Bounded: it stops by itself after DURATION seconds (or at SIGTERM, printing what it has).

With --write NAME (and a client certificate of the cluster, --cert/--key) each request is
instead a write: PUT of the config map NAME in namespace default, with a counter (the config
map is created first, as the API server updates only what exists).
"""

import argparse
import json
import signal
import socket
import ssl
import threading
import time


def request_bytes(write, number, create=False):
    if not write:
        return b"GET /healthz HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n"
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": write, "namespace": "default"},
                       "data": {"counter": str(number)}}).encode()
    line = ("POST /api/v1/namespaces/default/configmaps" if create
            else f"PUT /api/v1/namespaces/default/configmaps/{write}")
    return (f"{line} HTTP/1.1\r\nHost: api\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def one_request(host, port, timeout, context, payload=None):
    started = time.time()
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            raw.settimeout(max(0.05, timeout - (time.time() - started)))
            with context.wrap_socket(raw, server_hostname=host) as tls:
                tls.sendall(payload or request_bytes(None, 0))
                head = tls.recv(64)
        ok = head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200")
        return [started, ok, round(time.time() - started, 4), None if ok else head[:20].decode(errors="replace")]
    except OSError as exc:
        return [started, False, round(time.time() - started, 4), type(exc).__name__]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=6443)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--write", metavar="NAME", help="PUT config map NAME instead of GET /healthz")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    if args.cert:
        context.load_cert_chain(args.cert, args.key)
    results, lock, threads = [], threading.Lock(), []

    def worker(number):
        result = one_request(args.host, args.port, args.timeout, context, request_bytes(args.write, number))
        with lock:
            results.append(result)

    if args.write:  # created once (201, or 409 when it exists), not counted
        one_request(args.host, args.port, args.timeout, context, request_bytes(args.write, 0, create=True))
    stop = threading.Event()  # SIGTERM: stop sending, print what was measured
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    start = time.time()
    tick = 0
    while time.time() - start < args.duration and not stop.is_set():
        thread = threading.Thread(target=worker, args=(tick,))
        thread.start()
        threads.append(thread)
        tick += 1
        time.sleep(max(0.0, start + tick * args.interval - time.time()))
    for thread in threads:
        thread.join()
    print(json.dumps(sorted(results)))


if __name__ == "__main__":
    main()
