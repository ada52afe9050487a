"""
The load-balancer role rendered by real Salt for several cluster descriptions, and every
rendered config validated by the daemon's own checker: haproxy -c, keepalived's config test
(through the check script the state uses) and firewall-offline-cmd --check-config.
"""

import json
import re
import shutil
import subprocess

import pytest
from helpers import salt_render
from helpers.salt_render import RenderError, description

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("haproxy", "keepalived", "firewall-offline-cmd")),
    reason="haproxy, keepalived and firewalld must be installed (make setup)",
)

SECRET = "q7Zr2kP1"


def five_control_planes():
    desc = description()
    desc["nodes"] += [
        {"name": "cp4", "role": "control_plane", "address": "198.51.100.24"},
        {"name": "cp5", "role": "control_plane", "address": "198.51.100.25"},
    ]
    return desc


DESCRIPTIONS = {
    "unicast": (description(), None),
    "multicast": (description(vrrp={"mode": "multicast"}), None),
    "five_control_planes": (five_control_planes(), None),
    "custom_ports": (description(api={"port": 16443}, vrrp={"virtual_router_id": 77}), None),
    "vrrp2_pass_auth": (
        description(vrrp={"version": 2, "advert_interval": 1}),
        {"cluster": {"vrrp": {"auth_pass": SECRET}}},
    ),
}


def run(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


def render_role(minion_factory, cluster, minion_id="lb1", secrets=None, mods=("keepalived", "haproxy", "firewall"), opts=None,
                lookup=None):
    """Render like state.apply would, write helper scripts where the states put them.
    Returns ({basename: text}, {basename: file.managed args}, minion)."""
    minion = minion_factory(cluster, minion_id=minion_id, secrets=secrets, opts=opts, lookup=lookup)
    files = minion.managed_files(*mods)
    rendered, args_by_name = {}, {}
    for path, (_, args) in files.items():
        text = minion.render_file(args)
        name = path.rsplit("/", 1)[-1]
        rendered[name], args_by_name[name] = text, args
        if path.startswith(str(minion_factory.libexec)):
            target = minion_factory.libexec / name
            target.write_text(text)
            target.chmod(0o755)
    return rendered, args_by_name, minion


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(params=sorted(DESCRIPTIONS))
def rendered(request, minion, tmp_path):
    cluster, secrets = DESCRIPTIONS[request.param]
    texts, args, _ = render_role(minion, cluster, secrets=secrets)
    return request.param, cluster, texts, args


def test_haproxy_config_passes_haproxy_check(rendered, tmp_path):
    name, cluster, texts, _ = rendered
    result = run("haproxy", "-c", "-f", str(write(tmp_path, "haproxy.cfg", texts["haproxy.cfg"])))
    assert result.returncode == 0, result.stdout + result.stderr
    servers = re.findall(r"^\s+server (\S+) (\S+) check verify none$", texts["haproxy.cfg"], re.M)
    port = cluster["api"].get("port", 6443)
    expected = [(n["name"], f"{n['address']}:{port}") for n in cluster["nodes"] if n["role"] == "control_plane"]
    assert servers == expected
    assert f"bind {cluster['api']['vip']}:{cluster['api'].get('port', 6443)}" in texts["haproxy.cfg"]


def test_keepalived_config_passes_keepalived_check(rendered, minion, tmp_path):
    name, cluster, texts, _ = rendered
    path = write(tmp_path, "keepalived.conf", texts["keepalived.conf"])
    result = run(str(minion.libexec / "check-keepalived-config"), str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    conf = texts["keepalived.conf"]
    assert f"virtual_router_id {cluster['vrrp'].get('virtual_router_id', 51)}" in conf
    assert "enable_script_security" in conf
    if cluster["vrrp"].get("mode", "unicast") == "unicast":
        assert re.search(r"unicast_src_ip 198\.51\.100\.11\n\s+unicast_peer \{\n\s+198\.51\.100\.12\n\s+\}", conf)
    else:
        assert "unicast_peer" not in conf
    if cluster["vrrp"].get("version") == 2:
        assert f"auth_pass {SECRET}" in conf and "version 2" in conf
    else:
        assert "authentication" not in conf and "version 3" in conf and "advert_int 0.25" in conf


def test_firewalld_zone_passes_firewalld_check(rendered, minion, tmp_path):
    name, cluster, texts, _ = rendered
    path = write(tmp_path, "k8sha.xml", texts["k8sha.xml"])
    result = run(str(minion.libexec / "check-firewalld-zone"), "k8sha", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    zone = texts["k8sha.xml"]
    assert f'<port protocol="tcp" port="{cluster["api"].get("port", 6443)}"/>' in zone
    assert re.search(r'<source address="198\.51\.100\.12/32"/>\s+'
                     r'(<destination address="224\.0\.0\.18"/>\s+)?<protocol value="vrrp"/>', zone)
    assert ('224.0.0.18' in zone) == (cluster["vrrp"].get("mode") == "multicast")


def test_checkers_reject_broken_configs(minion, tmp_path):
    """The checkers the states use really fail: a check that passes everything proves nothing."""
    texts, _, _ = render_role(minion, description())
    broken_haproxy = texts["haproxy.cfg"].replace("balance roundrobin", "balance nonsense")
    assert run("haproxy", "-c", "-f", str(write(tmp_path, "h.cfg", broken_haproxy))).returncode != 0
    broken_keepalived = texts["keepalived.conf"].replace("nopreempt", "nopreempt\n    no_such_keyword 1")
    result = run(str(minion.libexec / "check-keepalived-config"), str(write(tmp_path, "k.conf", broken_keepalived)))
    assert result.returncode != 0 and "no_such_keyword" in result.stderr
    broken_zone = texts["k8sha.xml"].replace('port="6443"', 'port="99999"')
    result = run(str(minion.libexec / "check-firewalld-zone"), "k8sha", str(write(tmp_path, "z.xml", broken_zone)))
    assert result.returncode != 0 and "99999" in result.stdout + result.stderr


def test_every_config_file_is_checked_before_it_replaces_the_live_one(minion):
    _, args, _ = render_role(minion, description())
    assert args["haproxy.cfg"]["check_cmd"] == "/usr/sbin/haproxy -c -f"
    assert args["keepalived.conf"]["check_cmd"].endswith("/check-keepalived-config")
    assert args["k8sha.xml"]["check_cmd"].endswith("/check-firewalld-zone k8sha")


def test_haproxy_checks_healthz_over_tls_never_ssl_hello(minion):
    """Seed notes: `option ssl-hello-chk` and `option httpchk` select the same thing and the
    last one wins silently. The backend must send a real GET /healthz over TLS."""
    texts, _, _ = render_role(minion, description())
    backend = texts["haproxy.cfg"].split("backend kube_apiserver_nodes", 1)[1]
    directives = [line.split("#")[0].strip() for line in backend.splitlines()]
    assert "option ssl-hello-chk" not in directives
    assert "option httpchk" in directives
    assert "http-check connect ssl" in directives
    assert "http-check send meth GET uri /healthz" in directives
    assert "http-check expect status 200" in directives
    assert directives.index("http-check connect ssl") < directives.index("http-check send meth GET uri /healthz")
    assert "default-server inter 1s fall 2 rise 2" in directives
    assert "retries 1" in texts["haproxy.cfg"] and "option redispatch" in texts["haproxy.cfg"]


def test_metrics_ports_open_only_to_the_metrics_sources(minion, tmp_path):
    """HAProxy's exporter and node-exporter: rich rules for the sources, not open ports."""
    texts, _, lb = render_role(minion, description(), mods=("firewall", "haproxy"),
                               lookup={"metrics": {"sources": ["192.0.2.10", "192.0.2.128/25"]}})
    zone = texts["k8sha.xml"]
    assert '\n  <port protocol="tcp" port="8405"/>' not in zone and '\n  <port protocol="tcp" port="9100"/>' not in zone
    for source in ("192.0.2.10/32", "192.0.2.128/25"):
        for port in ("8405", "9100"):
            assert f'<source address="{source}"/>\n    <port protocol="tcp" port="{port}"/>' in zone
    result = run(str(minion.libexec / "check-firewalld-zone"), "k8sha", str(write(tmp_path, "lb.xml", zone)))
    assert result.returncode == 0, result.stdout + result.stderr
    states = lb.show_sls("metrics")
    arguments = [a for a in states["metrics-node-exporter-arguments"]["file"] if isinstance(a, dict) and "contents" in a]
    assert "--web.listen-address=198.51.100.11:9100" in arguments[0]["contents"]
    assert "--collector.textfile.directory=/var/lib/prometheus/node-exporter" in arguments[0]["contents"]
    exporter = texts["haproxy.cfg"].split("frontend prometheus", 1)[1].split("\n\n", 1)[0]
    assert "bind 198.51.100.11:8405" in exporter and "use-service prometheus-exporter" in exporter


def test_control_plane_zone_opens_the_ports_kubeadm_documents(minion, tmp_path):
    texts, _, _ = render_role(minion, description(), minion_id="cp1", mods=("firewall",))
    zone = texts["k8sha.xml"]
    for port in ("6443", "2379-2380", "10250", "10257", "10259"):
        assert f'<port protocol="tcp" port="{port}"/>' in zone
    assert "vrrp" not in zone
    result = run(str(minion.libexec / "check-firewalld-zone"), "k8sha", str(write(tmp_path, "cp.xml", zone)))
    assert result.returncode == 0, result.stdout + result.stderr


REFUSALS = {
    "even_control_planes": (
        description(nodes=description()["nodes"] + [{"name": "cp4", "role": "control_plane", "address": "198.51.100.24"}]),
        None,
        "cluster.nodes: 4 control_plane nodes",
    ),
    "vip_outside_subnet": (description(api={"vip": "203.0.113.100"}), None, "cluster.api.vip: 203.0.113.100/24 is outside"),
    "vrrp2_seed_password": (
        description(vrrp={"version": 2, "advert_interval": 1}),
        {"cluster": {"vrrp": {"auth_pass": "P@ssw0rd"}}},
        "cluster.vrrp.auth_pass: a published default password",
    ),
    "vrrp2_no_password": (description(vrrp={"version": 2, "advert_interval": 1}), None, "cluster.vrrp.auth_pass: missing"),
    # Structurally broken descriptions: the pillar top survives them, the states refuse with the list.
    "nodes_not_a_list": (description(nodes={"lb1": "198.51.100.11"}), None, "cluster.nodes: missing, empty or not a list"),
    "node_is_a_string": (description(nodes=["lb1", *description()["nodes"][1:]]), None,
                         "cluster.nodes[0]: 'lb1' is a string; expected a mapping"),
    "nodes_missing": ({k: v for k, v in description().items() if k != "nodes"}, None, "cluster.nodes: missing"),
    "cluster_is_a_list": ([description()], None, "cluster: a list; expected a mapping"),
    "two_nodes_one_name": (description(nodes=[dict(n, name="cp1") if n["name"] == "cp2" else n
                                              for n in description()["nodes"]]), None, "duplicate name 'cp1'"),
    "interface_injection": (description(vrrp={"interface": "eth0; rm -rf /"}), None,
                            "cluster.vrrp.interface: 'eth0; rm -rf /' is not an interface name"),
    "misspelt_key": (description(nodes=[dict(description()["nodes"][0], vrrp_priorty=200), *description()["nodes"][1:]]),
                     None, "cluster.nodes[0] (lb1).vrrp_priorty: unknown key; did you mean 'vrrp_priority'?"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_load_balancer_states_refuse_to_render_an_invalid_description(minion, case):
    cluster, secrets, field = REFUSALS[case]
    lb = minion(cluster, secrets=secrets)
    with pytest.raises(RenderError) as refused:
        lb.show_sls("keepalived", "haproxy", "firewall")
    message = str(refused.value)
    assert field in message
    assert "invalid cluster description (pillar 'cluster'), nothing was changed" in message
    assert "Traceback" not in message


def test_vrrp_secret_reaches_only_the_load_balancers(minion):
    secrets = {"cluster": {"vrrp": {"auth_pass": SECRET}}}
    cluster = description(vrrp={"version": 2, "advert_interval": 1})
    lb = minion(cluster, minion_id="lb1", secrets=secrets)
    cp = minion(cluster, minion_id="cp1", secrets=secrets)
    assert lb.call("pillar.get", "cluster:vrrp:auth_pass", unmask=True) == SECRET
    assert cp.call("pillar.get", "cluster:vrrp:auth_pass", unmask=True) == ""
    assert SECRET not in json.dumps(cp.call("pillar.items", unmask=True))


def test_vrrp_secret_never_appears_in_state_data_or_diffs(minion):
    cluster = description(vrrp={"version": 2, "advert_interval": 1})
    lb = minion(cluster, secrets={"cluster": {"vrrp": {"auth_pass": SECRET}}})
    # json.dumps, not repr: Salt masks pillar values in repr(), which would hide a leak.
    assert SECRET in json.dumps(lb.call("pillar.items", unmask=True))
    assert SECRET not in json.dumps(lb.show_sls("keepalived", "haproxy", "firewall"))
    assert SECRET not in json.dumps(lb.call("cluster_topology.view"))
    _, args, _ = render_role(minion, cluster, secrets={"cluster": {"vrrp": {"auth_pass": SECRET}}})
    assert args["keepalived.conf"]["show_changes"] is False


def test_top_file_maps_roles_to_states(minion):
    def states_of(minion_id):
        top = minion(description(), minion_id=minion_id).call("state.show_top")
        return top.get("base", [])

    assert states_of("lb1") == ["base", "firewall", "haproxy", "keepalived", "metrics", "beacons"]
    assert states_of("cp1") == ["base", "firewall", "kubernetes.control_plane", "beacons"]
    assert states_of("worker1") == ["base", "firewall", "kubernetes", "beacons"]
    assert states_of("stranger") == []


def test_zone_keeps_salts_own_connections_open(minion, tmp_path):
    """firewalld's first start must not cut the minion's connections to its master: they were
    opened before conntrack tracked anything, so the master's packets look new to it."""
    texts, _, _ = render_role(minion, description(), mods=("firewall",), opts={"master": "198.51.100.5"})
    zone = texts["k8sha.xml"]
    for port in (4505, 4506):
        assert re.search(
            rf'<source address="198\.51\.100\.5/32"/>\s+<source-port port="{port}" protocol="tcp"/>\s+<accept/>', zone
        ), zone
    result = run(str(minion.libexec / "check-firewalld-zone"), "k8sha", str(write(tmp_path, "m.xml", zone)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_custom_api_port_reaches_the_control_planes_zone_and_the_security_groups(minion, tmp_path):
    """One source for the API port (cluster:api:port): a control plane's zone and its security
    group open 16443, not kubeadm's default; HAProxy sends there (test_haproxy_backends_...)."""
    custom = description(api={"port": 16443})
    texts, _, _ = render_role(minion, custom, minion_id="cp1", mods=("firewall",))
    zone = texts["k8sha.xml"]
    assert '<port protocol="tcp" port="16443"/>' in zone and 'port="6443"' not in zone
    groups = salt_render.load_module("openstack_net").cluster_rules(custom, [], salt_render.flows(custom))
    api = [r for r in groups["k8sha-control-plane"] if r["port_range_min"] in (6443, 16443)]
    assert {r["port_range_min"] for r in api} == {16443}
    ports = salt_render.load_module("cluster_ports")
    assert ports.zone_ports_of(salt_render.flows(custom), "worker") == ["10250/tcp", "30000-32767/tcp"]


def test_the_pod_network_is_open_to_the_pod_cidr_on_kubernetes_nodes_and_closed_to_load_balancers():
    ports = salt_render.load_module("cluster_ports")
    desc = salt_render.description()
    flows = salt_render.flows(desc)
    assert ports.pod_network_sources_of(flows, "worker", desc) == ["10.244.0.0/16"]
    assert ports.pod_network_sources_of(flows, "loadbalancer", desc) == []
    # The zone's port list stays what kubeadm documents (the pod network is its trusted sources).
    assert ports.zone_ports_of(flows, "worker") == ["10250/tcp", "30000-32767/tcp"]
