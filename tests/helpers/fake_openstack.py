"""
A small stateful OpenStack for tests (test-only): Keystone v3 (password auth, a catalog),
Nova (servers, flavors), Glance (images) and Neutron (networks, subnets, ports, security
groups and rules, floating IPs). Every write is recorded (`writes`).

It behaves as the OpenStack API reference describes the real services, not as our code
expects:
- Neutron allocates a port's address from the subnet's allocation pool unless a fixed IP is
  asked for; a taken address is 409 IpAddressInUse; an address outside the subnet, or a
  subnet that is not on the port's network, is 400; an unknown network is 404.
- A new security group comes with Neutron's two default egress rules (IPv4, IPv6).
- Nova creates (and on delete removes) a port for each `{"uuid": network}` it is given; a
  port given as `{"port": id}` must exist (400) and be free (409 PortInUse), is bound to the
  server, and on delete is only unbound: Nova deletes only what it created.
- Nova keeps the user data (OS-EXT-SRV-ATTR:user_data); an unknown security group is 400.
- Deleting a port disassociates its floating IPs (they stay allocated); a floating IP is
  released only by its own DELETE.

Two ways to use it: `mock(requests_mock_mocker)` for in-process tests, or `serve()` for a
real HTTP server on 127.0.0.1 (salt-cloud and the orchestration in another process).
All endpoints share one base URL: <base>/identity/v3, /compute/v2.1, /image, /network.
"""

import http.server
import ipaddress
import json
import re
import threading
import urllib.parse

MOCK_BASE = "https://cloud.example.test"


def neutron_error(kind, message):
    return {"NeutronError": {"type": kind, "message": message, "detail": ""}}


class FakeOpenStack:
    def __init__(self, base=MOCK_BASE):
        self.base = base
        self.writes = []       # (method, path, body) of every POST, PUT, DELETE but token requests
        self.requests = []     # (method, path) of every request
        self.count = 0
        self.fail_create = None          # (status, message): Nova refuses every server
        self.never_active = False
        self.objects = {"security-groups": [], "security-group-rules": [], "ports": [], "floatingips": [],
                        "networks": [{"id": "net-1", "name": "k8s-net"}, {"id": "ext-1", "name": "public",
                                                                          "router:external": True}],
                        "subnets": [{"id": "sub-1", "name": "k8s-subnet", "network_id": "net-1", "cidr": "198.51.100.0/24",
                                     "allocation_pools": [{"start": "198.51.100.150", "end": "198.51.100.249"}]},
                                    {"id": "sub-ext", "name": "public-subnet", "network_id": "ext-1", "cidr": "203.0.113.0/24",
                                     "allocation_pools": [{"start": "203.0.113.50", "end": "203.0.113.99"}]}]}
        self.servers = {}
        self.flavors = [{"id": f"f-{n}", "name": n, "vcpus": c, "ram": r, "disk": 20}
                        for n, c, r in (("m1.small", 1, 2048), ("m1.large", 4, 8192), ("m1.xxlarge", 16, 65536))]
        self.images = [{"id": "img-1", "name": "debian-12", "status": "active"},
                       {"id": "img-2", "name": "ubuntu-22.04", "status": "active"}]

    @property
    def auth_url(self):
        return f"{self.base}/identity/v3"

    def add_server_with_port(self, name, address):
        """An existing instance (what salt-cloud would have made) with its port on k8s-net."""
        self.servers[f"srv-{name}"] = {"id": f"srv-{name}", "name": name, "status": "ACTIVE", "request": {},
                                       "addresses": {"k8s-net": [{"addr": address, "OS-EXT-IPS:type": "fixed"}]},
                                       "flavor": {"original_name": "m1.small"}, "image": {"id": "img-1"}}
        self.objects["ports"].append(self.new_port(
            id=f"port-{name}", network_id="net-1", device_id=f"srv-{name}", device_owner="compute:nova",
            allowed_address_pairs=[{"ip_address": "10.9.9.9", "mac_address": "fa:16:3e:00:00:01"}],
            fixed_ips=[{"subnet_id": "sub-1", "ip_address": address}]))

    # --- Neutron's IPAM -------------------------------------------------------------------------

    @staticmethod
    def new_port(**fields):
        """A port as Neutron returns it: every attribute with its default."""
        return dict({"name": "", "description": "", "device_id": "", "device_owner": "", "port_security_enabled": True,
                     "allowed_address_pairs": [], "security_groups": [], "status": "DOWN", "admin_state_up": True,
                     "mac_address": "fa:16:3e:00:00:00"}, **fields)

    def used_addresses(self, subnet_id):
        used = {ip["ip_address"] for p in self.objects["ports"] for ip in p.get("fixed_ips", []) if ip["subnet_id"] == subnet_id}
        return used | {f["floating_ip_address"] for f in self.objects["floatingips"] if f.get("subnet_id") == subnet_id}

    def allocate(self, subnet):
        """The first free address of the subnet's allocation pools, or None when they are exhausted."""
        for pool in subnet["allocation_pools"]:
            start, end = ipaddress.IPv4Address(pool["start"]), ipaddress.IPv4Address(pool["end"])
            for value in range(int(start), int(end) + 1):
                address = str(ipaddress.IPv4Address(value))
                if address not in self.used_addresses(subnet["id"]):
                    return address
        return None

    def fixed_ips(self, network_id, wanted):
        """(status, error body or the port's fixed_ips) for a port request on `network_id`."""
        subnets = [s for s in self.objects["subnets"] if s["network_id"] == network_id]
        result = []
        for entry in wanted or [{}]:
            subnet = next((s for s in subnets if s["id"] == entry.get("subnet_id")), None) if entry.get("subnet_id") else None
            if entry.get("subnet_id") and subnet is None:
                return 400, neutron_error("InvalidInput", f"Invalid input for operation: Failed to create port on network "
                                          f"{network_id}, because fixed_ips included invalid subnet {entry['subnet_id']}.")
            address = entry.get("ip_address")
            if address:
                inside = [s for s in ([subnet] if subnet else subnets)
                          if ipaddress.IPv4Address(address) in ipaddress.IPv4Network(s["cidr"])]
                if not inside:
                    return 400, neutron_error("InvalidIpForNetwork", f"IP address {address} is not a valid IP for any of "
                                              "the subnets on the specified network.")
                subnet = inside[0]
                if address in self.used_addresses(subnet["id"]):
                    return 409, neutron_error("IpAddressInUse", f"Unable to complete operation for network {network_id}. "
                                              f"The IP address {address} is in use.")
            else:
                subnet = subnet or subnets[0]
                address = self.allocate(subnet)
                if address is None:
                    return 409, neutron_error("IpAddressGenerationFailure",
                                              f"No more IP addresses available on network {network_id}.")
            result.append({"subnet_id": subnet["id"], "ip_address": address})
        return 201, result

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
            return 200, {"servers": [self.server_view(s) for s in self.servers.values() if not wanted or s["name"] == wanted]}, {}
        server = self.servers.get(ident)
        if server is None:
            return 404, {"itemNotFound": {"message": f"server {ident} not found"}}, {}
        if method == "DELETE":
            del self.servers[ident]
            self.unbind_ports(ident)
            return 204, None, {}
        if not self.never_active and server["status"] == "BUILD":
            server["status"] = "ERROR" if server["name"] == "broken" else "ACTIVE"
            if server["status"] == "ERROR":
                server["fault"] = {"message": "No valid host was found. There are not enough hosts available."}
        return 200, {"server": self.server_view(server)}, {}

    def server_view(self, server):
        """The server with `addresses` from its ports, as Nova shows them."""
        addresses = {}
        for port in (p for p in self.objects["ports"] if p.get("device_id") == server["id"]):
            network = next(n["name"] for n in self.objects["networks"] if n["id"] == port["network_id"])
            addresses.setdefault(network, []).extend(
                {"addr": ip["ip_address"], "version": 4, "OS-EXT-IPS:type": "fixed"} for ip in port["fixed_ips"])
            for fip in (f for f in self.objects["floatingips"] if f.get("port_id") == port["id"]):
                addresses[network].append({"addr": fip["floating_ip_address"], "version": 4, "OS-EXT-IPS:type": "floating"})
        return dict(server, addresses=addresses or server.get("addresses", {}))

    def unbind_ports(self, server_id):
        """Nova on delete: the ports it created go, the ports it was given are only unbound."""
        for port in [p for p in self.objects["ports"] if p.get("device_id") == server_id]:
            if port.pop("created_by_nova", False):
                self.delete_port(port)
            else:
                port.update(device_id="", device_owner="", status="DOWN")

    def delete_port(self, port):
        self.objects["ports"].remove(port)
        for fip in self.objects["floatingips"]:  # Neutron disassociates, it does not release
            if fip.get("port_id") == port["id"]:
                fip.update(port_id=None, fixed_ip_address=None, status="DOWN")

    def create_server(self, request):
        if self.fail_create:
            return self.fail_create[0], {"forbidden": {"message": self.fail_create[1], "code": self.fail_create[0]}}, {}
        known = {g["name"] for g in self.objects["security-groups"]} | {"default"}
        unknown = [g["name"] for g in request.get("security_groups", []) if g["name"] not in known]
        if unknown:  # as Nova does
            return 400, {"badRequest": {"message": f"Security group {unknown[0]} not found for project p1.", "code": 400}}, {}
        ident = f"srv-{request['name']}"
        bound = []
        for network in request.get("networks", []):
            if "port" in network:
                port = next((p for p in self.objects["ports"] if p["id"] == network["port"]), None)
                if port is None:
                    return 400, {"badRequest": {"message": f"Port id {network['port']} could not be found.", "code": 400}}, {}
                if port["device_id"]:
                    return 409, {"conflictingRequest": {"message": f"Port {port['id']} is still in use.", "code": 409}}, {}
                bound.append(port)
            else:
                status, fixed = self.fixed_ips(network["uuid"], [])
                if status != 201:
                    return status, fixed, {}
                self.count += 1
                port = self.new_port(id=f"ports-{self.count}", network_id=network["uuid"], fixed_ips=fixed,
                                     created_by_nova=True,
                                     security_groups=[g["id"] for g in self.objects["security-groups"]
                                                      if g["name"] in {x["name"] for x in request.get("security_groups", [])}])
                self.objects["ports"].append(port)
                bound.append(port)
        for port in bound:
            port.update(device_id=ident, device_owner="compute:nova", status="ACTIVE")
        self.servers[ident] = {"id": ident, "name": request["name"], "status": "BUILD", "request": request,
                               "OS-EXT-SRV-ATTR:user_data": request.get("user_data"), "metadata": request.get("metadata", {}),
                               "flavor": {"original_name": request.get("flavorRef")}, "image": {"id": "img-1"}}
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
            return self.neutron_create(kind, singular, dict(body[singular]))
        obj = next((o for o in items if o["id"] == ident), None)
        if obj is None:
            return 404, neutron_error("NotFound", f"{singular} {ident} could not be found"), {}
        if method == "DELETE":
            if kind == "ports":
                self.delete_port(obj)
            else:
                items.remove(obj)
            return 204, None, {}
        if method == "PUT":
            if obj.get("port_security_enabled") is False and "allowed_address_pairs" in body[singular]:
                return 409, neutron_error("AddressPairAndPortSecurityRequired",
                                          "Port Security must be enabled in order to have allowed address pairs on a port."), {}
            obj.update(body[singular])
        return 200, {singular: obj}, {}

    def neutron_create(self, kind, singular, new):
        self.count += 1
        if kind == "ports":
            if not any(n["id"] == new.get("network_id") for n in self.objects["networks"]):
                return 404, neutron_error("NetworkNotFound", f"Network {new.get('network_id')} could not be found."), {}
            status, fixed = self.fixed_ips(new["network_id"], new.get("fixed_ips"))
            if status != 201:
                return status, fixed, {}
            new = self.new_port(**dict(new, fixed_ips=fixed))
        elif kind == "floatingips":
            subnet = next(s for s in self.objects["subnets"] if s["network_id"] == new["floating_network_id"])
            port = next((p for p in self.objects["ports"] if p["id"] == new.get("port_id")), None)
            new.update(floating_ip_address=self.allocate(subnet), subnet_id=subnet["id"], description=new.get("description", ""),
                       fixed_ip_address=port["fixed_ips"][0]["ip_address"] if port else None,
                       status="ACTIVE" if port else "DOWN")
        obj = dict(new, id=f"{kind}-{self.count}")
        self.objects[kind].append(obj)
        if kind == "security-groups":  # Neutron adds its default egress rules to every new group
            for ethertype in ("IPv4", "IPv6"):
                self.count += 1
                self.objects["security-group-rules"].append({
                    "id": f"security-group-rules-{self.count}", "security_group_id": obj["id"], "direction": "egress",
                    "ethertype": ethertype, "protocol": None, "port_range_min": None, "port_range_max": None,
                    "remote_ip_prefix": None})
        return 201, {singular: obj}, {}

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
