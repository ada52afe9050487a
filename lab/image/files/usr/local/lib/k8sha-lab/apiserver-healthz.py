#!/usr/bin/python3
"""
Lab stand-in for a kube-apiserver's health endpoints (issue 3; the full stand-in control
plane replaces it). HTTPS on :6443 with a self-signed certificate. /healthz, /readyz and
/livez answer 200 "ok", or the status code written in /run/k8sha-lab/healthz-status
(e.g. 500) so that tests can make this API server unhealthy without stopping it.
"""
import http.server
import os
import ssl
import subprocess

STATE = "/run/k8sha-lab/healthz-status"
CERT_DIR = "/var/lib/k8sha-lab"
PORT = int(os.environ.get("PORT", "6443"))


def certificate():
    cert, key = f"{CERT_DIR}/apiserver.crt", f"{CERT_DIR}/apiserver.key"
    if not os.path.exists(cert):
        os.makedirs(CERT_DIR, exist_ok=True)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "3650", "-subj", "/CN=kube-apiserver", "-keyout", key, "-out", cert],
            check=True, capture_output=True,
        )
    return cert, key


def wanted_status():
    try:
        with open(STATE) as handle:
            return int(handle.read().strip() or 200)
    except (OSError, ValueError):
        return 200


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        status = wanted_status() if self.path.split("?")[0] in ("/healthz", "/readyz", "/livez") else 200
        body = (b"ok" if status == 200 else b"unhealthy") if self.path != "/version" else \
            b'{"major":"1","minor":"31","gitVersion":"v1.31.0-k8sha-lab"}'
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Served-By", os.uname().nodename)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    cert, key = certificate()
    server = http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
