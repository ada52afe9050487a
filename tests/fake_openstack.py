"""
A small stateful OpenStack for tests (test-only): Keystone v3 (password auth, a catalog),
Nova (servers, flavors), Glance (images) and Neutron (networks, subnets, ports, security
groups and rules, floating IPs), as far as _clouds/k8sha_openstack.py and
_modules/openstack_net.py use them. Every write is recorded (`writes`).

Two ways to use it: `mock(requests_mock_mocker)` for in-process tests, or `serve()` for a
real HTTP server on 127.0.0.1 (salt-cloud and the orchestration in another process).
All endpoints share one base URL: <base>/identity/v3, /compute/v2.1, /image, /network.
"""

import http.server
import json
import re
import threading
import urllib.parse

MOCK_BASE = "https://cloud.example.test"


class FakeOpenStack:
    def __init__(self, base=MOCK_BASE):
        self.base = base
        self.writes = []       # (method, path, body) of every POST, PUT, DELETE but token requests
        self.requests = []     # (method, path) of every request
        self.count = 0
        self.fail_create = None          # (status, message): Nova refuses every server
        self.never_active = False
        self.objects = {"security-groups": [], "security-group-rules": [], "ports": [], "floatingips": [],
                        "networks": [{"id": "net-1", "name": "k8s-net"}, {"id": "ext-1", "name": "public"}],
                        "subnets": [{"id": "sub-1", "name": "k8s-subnet", "network_id": "net-1"}]}
        self.servers = {}
        self.flavors = [{"id": f"f-{n}", "name": n, "vcpus": c, "ram": r, "disk": 20}
                        for n, c, r in (("m1.small", 1, 2048), ("m1.large", 4, 8192), ("m1.xxlarge", 16, 65536))]
        self.images = [{"id": "img-1", "name": "debian-12", "status": "active"},
                       {"id": "img-2", "name": "ubuntu-22.04", "status": "active"}]
        self.addresses = iter(f"198.51.100.{i}" for i in range(150, 250))

    @property
    def auth_url(self):
        return f"{self.base}/identity/v3"

    def add_server_with_port(self, name, address):
        """An existing instance (what salt-cloud would have made) with its port on k8s-net."""
        self.servers[f"srv-{name}"] = {"id": f"srv-{name}", "name": name, "status": "ACTIVE", "request": {},
                                       "addresses": {"k8s-net": [{"addr": address, "OS-EXT-IPS:type": "fixed"}]},
                                       "flavor": {"original_name": "m1.small"}, "image": {"id": "img-1"}}
        self.objects["ports"].append({"id": f"port-{name}", "name": "", "network_id": "net-1", "device_id": f"srv-{name}",
                                      "device_owner": "compute:nova", "port_security_enabled": True,
                                      "allowed_address_pairs": [{"ip_address": "10.9.9.9", "mac_address": "fa:16:3e:00:00:01"}],
                                      "fixed_ips": [{"subnet_id": "sub-1", "ip_address": address}]})

    # --- dispatch ---------------------------------------------------------------------------------

    def handle(self, method, url, body):
        """(status, JSON-able body, headers) for one request."""
        parsed = urllib.parse.urlparse(url)
        path, query = parsed.path, urllib.parse.parse_qs(parsed.query)
        self.requests.append((method, path))
        if method in ("POST", "PUT", "DELETE") and not path.endswith("/auth/tokens"):
            self.writes.append((method, path, body))
        for prefix, handler in (("/identity", self.keystone), ("/compute", self.nova), ("/image", self.glance),
                                ("/network", self.neutron)):
            if path.startswith(prefix):
                return handler(method, path[len(prefix):], query, body)
        return 404, {"message": f"no service at {path}"}, {}

    def keystone(self, method, path, query, body):
        if method == "GET":
            return 200, {"version": {"id": "v3.14", "status": "stable",
                                     "links": [{"rel": "self", "href": self.auth_url + "/"}]}}, {}
        catalog = [{"type": t, "name": t, "endpoints": [{"interface": "public", "region": "RegionOne",
                                                         "region_id": "RegionOne", "url": f"{self.base}{p}"}]}
                   for t, p in (("compute", "/compute/v2.1"), ("image", "/image"), ("network", "/network"))]
        token = {"token": {"methods": ["password"], "expires_at": "2099-01-01T00:00:00.000000Z", "catalog": catalog,
                           "project": {"id": "p1", "name": "k8sha", "domain": {"id": "default", "name": "Default"}},
                           "user": {"id": "u1", "name": "admin", "domain": {"id": "default", "name": "Default"}}}}
        return 201, token, {"X-Subject-Token": "tok"}

    def glance(self, method, path, query, body):
        if path in ("", "/"):
            return 200, {"versions": [{"id": "v2.9", "status": "CURRENT",
                                       "links": [{"rel": "self", "href": f"{self.base}/image/v2/"}]}]}, {}
        if path.rstrip("/").endswith("/images"):
            return 200, {"images": [i for i in self.images if query.get("name", [i["name"]])[0] == i["name"]]}, {}
        found = [i for i in self.images if i["id"] == path.rsplit("/", 1)[1]]
        return (200, found[0], {}) if found else (404, {"message": "not found"}, {})

    def nova(self, method, path, query, body):
        path = path.removeprefix("/v2.1")
        if path in ("", "/"):
            return 200, {"version": {"id": "v2.1", "status": "CURRENT",
                                     "links": [{"rel": "self", "href": f"{self.base}/compute/v2.1/"}]}}, {}
        parts = path.strip("/").split("/")
        if parts[0] == "flavors":
            if len(parts) > 1 and parts[1] != "detail":
                found = [f for f in self.flavors if f["id"] == parts[1]]
                return (200, {"flavor": found[0]}, {}) if found else (404, {"itemNotFound": {"message": "nf"}}, {})
            return 200, {"flavors": [f for f in self.flavors if query.get("name", [f["name"]])[0] == f["name"]]}, {}
        if method == "POST":
            return self.create_server(body["server"])
        ident = parts[1] if len(parts) > 1 else ""
        if ident in ("", "detail"):
            wanted = query.get("name", [""])[0].strip("^$")
            return 200, {"servers": [s for s in self.servers.values() if not wanted or s["name"] == wanted]}, {}
        server = self.servers.get(ident)
        if server is None:
            return 404, {"itemNotFound": {"message": f"server {ident} not found"}}, {}
        if method == "DELETE":
            del self.servers[ident]
            self.objects["ports"] = [p for p in self.objects["ports"] if p.get("device_id") != ident]
            return 204, None, {}
        if not self.never_active and server["status"] == "BUILD":
            server["status"] = "ERROR" if server["name"] == "broken" else "ACTIVE"
            if server["status"] == "ERROR":
                server["fault"] = {"message": "No valid host was found. There are not enough hosts available."}
        return 200, {"server": server}, {}

    def create_server(self, request):
        if self.fail_create:
            return self.fail_create[0], {"forbidden": {"message": self.fail_create[1], "code": self.fail_create[0]}}, {}
        known = {g["name"] for g in self.objects["security-groups"]} | {"default"}
        unknown = [g["name"] for g in request.get("security_groups", []) if g["name"] not in known]
        if unknown:  # as Nova does
            return 400, {"badRequest": {"message": f"Security group {unknown[0]} not found for project p1.", "code": 400}}, {}
        address = next(self.addresses)
        ident = f"srv-{request['name']}"
        self.servers[ident] = {"id": ident, "name": request["name"], "status": "BUILD", "request": request,
                               "addresses": {"k8s-net": [{"addr": address, "OS-EXT-IPS:type": "fixed"}]},
                               "flavor": {"original_name": request.get("flavorRef")}, "image": {"id": "img-1"}}
        self.objects["ports"].append({"id": f"port-{request['name']}", "name": "", "network_id": "net-1",
                                      "device_id": ident, "device_owner": "compute:nova", "port_security_enabled": True,
                                      "allowed_address_pairs": [], "fixed_ips": [{"subnet_id": "sub-1", "ip_address": address}]})
        return 202, {"server": {"id": ident}}, {}

    def neutron(self, method, path, query, body):
        if path in ("", "/"):
            return 200, {"versions": [{"id": "v2.0", "status": "CURRENT",
                                       "links": [{"rel": "self", "href": f"{self.base}/network/v2.0/"}]}]}, {}
        kind, _, ident = path.split("/v2.0/")[1].removesuffix(".json").partition("/")
        singular = {"security-groups": "security_group", "security-group-rules": "security_group_rule",
                    "ports": "port", "floatingips": "floatingip", "networks": "network", "subnets": "subnet"}[kind]
        plural = "floatingips" if kind == "floatingips" else singular + "s"
        items = self.objects[kind]
        if method == "GET" and not ident:
            return 200, {plural: [o for o in items if all(self.matches(o, k, v[0]) for k, v in query.items())]}, {}
        if method == "POST":
            new = body[singular]
            if kind == "ports" and any(ip["ip_address"] == f["ip_address"] for p in items
                                       for ip in p["fixed_ips"] for f in new.get("fixed_ips", [])):
                return 409, {"NeutronError": {"type": "IpAddressInUse", "message": "IP address already allocated"}}, {}
            self.count += 1
            obj = dict(new, id=f"{kind}-{self.count}")
            if kind == "floatingips":
                obj["floating_ip_address"] = "203.0.113.50"
            items.append(obj)
            return 201, {singular: obj}, {}
        obj = next((o for o in items if o["id"] == ident), None)
        if obj is None:
            return 404, {"NeutronError": {"type": "NotFound", "message": f"{singular} {ident} could not be found"}}, {}
        if method == "PUT":
            if obj.get("port_security_enabled") is False:
                return 409, {"NeutronError": {"type": "PortSecurityAndIPRequiredForSecurityGroups",
                                              "message": "Port Security must be enabled to have allowed address pairs"}}, {}
            obj.update(body[singular])
        return 200, {singular: obj}, {}

    @staticmethod
    def matches(obj, key, value):
        if key == "fixed_ips":
            return any(f"ip_address={ip['ip_address']}" == value for ip in obj.get("fixed_ips", []))
        if key in obj:
            return str(obj[key]) == value
        return True  # filters the fake does not know (fields, limits) do not exclude anything

    # --- transports ----------------------------------------------------------------------------------

    def mock(self, mocker):
        import requests_mock  # pylint: disable=import-outside-toplevel

        def callback(request, context):
            body = request.json() if request.body else None
            status, answer, headers = self.handle(request.method, request.url, body)
            context.status_code = status
            context.headers.update(headers)
            return answer
        mocker.register_uri(requests_mock.ANY, re.compile(re.escape(self.base) + r"/.*"), json=callback)
        return self

    def serve(self):
        """A real HTTP server on 127.0.0.1 (a free port); returns it (shutdown() to stop)."""
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                status, answer, headers = fake.handle(self.command, f"{fake.base}{self.path}", body)
                data = b"" if answer is None else json.dumps(answer).encode()
                self.send_response(status)
                for key, value in dict(headers, **{"Content-Type": "application/json"}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _any

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server
