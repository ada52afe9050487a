"""The cluster description's validation: one test per problem, each naming the field and the fix."""

import copy

import pytest
import yaml
from helpers import salt_render


def shipped():
    return copy.deepcopy(salt_render.description())


DEFAULTS = yaml.safe_load((salt_render.REPO / "salt" / "k8sha" / "defaults.yaml").read_text())["cluster"]


def with_defaults(desc):
    """What the states validate: defaults.yaml's `cluster` under the description."""
    return salt_render.merged(DEFAULTS, desc)


def nodes_without(desc, name):
    desc["nodes"] = [n for n in desc["nodes"] if n["name"] != name]
    return desc


def test_shipped_description_is_valid(rules):
    assert rules.problems_in(with_defaults(shipped())) == []


def test_shipped_description_with_vrrp2_and_a_real_secret_is_valid(rules):
    desc = with_defaults(shipped())
    desc["vrrp"].update(version=2, advert_interval=1, auth_pass="q7Zr2kP1")
    assert rules.problems_in(desc, require_secrets=True) == []


def _cp(n):
    return {"name": f"cp{n}", "role": "control_plane", "address": f"198.51.100.{20 + n}"}


def even_control_planes(d):
    d["nodes"].append(_cp(4))


def zero_control_planes(d):
    d["nodes"] = [n for n in d["nodes"] if n["role"] != "control_plane"]


def vip_outside_subnet(d):
    d["api"]["vip"] = "203.0.113.100"


def vip_is_a_node_address(d):
    d["api"]["vip"] = "198.51.100.21"


def vip_is_broadcast(d):
    d["api"]["vip"] = "198.51.100.255"


def duplicate_address(d):
    d["nodes"][3]["address"] = d["nodes"][2]["address"]


def duplicate_name(d):
    d["nodes"][3]["name"] = "cp1"


def invalid_name(d):
    d["nodes"][0]["name"] = "lb_1"


def one_load_balancer(d):
    nodes_without(d, "lb2")


def duplicate_priority(d):
    d["nodes"][1]["vrrp_priority"] = d["nodes"][0]["vrrp_priority"]


def priority_out_of_range(d):
    d["nodes"][1]["vrrp_priority"] = 255


def unknown_role(d):
    d["nodes"][5]["role"] = "etcd"


def bad_address(d):
    d["nodes"][5]["address"] = "198.51.100.300"


def no_nodes(d):
    d["nodes"] = []


def vrrp2_without_secret(d):
    d["vrrp"].update(version=2, advert_interval=1)


def vrrp2_seed_password(d):
    d["vrrp"].update(version=2, advert_interval=1, auth_pass="P@ssw0rd")


def vrrp2_example_placeholder(d):
    d["vrrp"].update(version=2, advert_interval=1, auth_pass="CHANGE-ME")


def vrrp2_secret_too_long(d):
    d["vrrp"].update(version=2, advert_interval=1, auth_pass="0123456789")


def vrrp3_with_secret(d):
    d["vrrp"]["auth_pass"] = "q7Zr2kP1"


def vrrp2_fractional_advert(d):
    d["vrrp"].update(version=2, auth_pass="q7Zr2kP1")  # advert 0.25 stays


def vrrp3_advert_too_fine(d):
    d["vrrp"]["advert_interval"] = 0.005


def unknown_vrrp_version(d):
    d["vrrp"]["version"] = 4


def unknown_vrrp_mode(d):
    d["vrrp"]["mode"] = "broadcast"


def router_id_out_of_range(d):
    d["vrrp"]["virtual_router_id"] = 256


def bad_port(d):
    d["api"]["port"] = 70000


def bad_prefix(d):
    d["api"]["prefix"] = 33


def pod_cidr_contains_nodes(d):
    d["kubernetes"]["pod_cidr"] = "198.51.100.0/24"


def overlapping_cidrs(d):
    d["kubernetes"]["service_cidr"] = "10.244.128.0/17"


def unquoted_kubernetes_version(d):
    d["kubernetes"]["version"] = 1.3


def bad_cluster_name(d):
    d["name"] = "My Cluster"


def misspelt_node_key(d):
    d["nodes"][0]["vrrp_priorty"] = 200


def misspelt_section_key(d):
    d["vrrp"]["advert_intervall"] = 1


def unknown_top_key(d):
    d["kubernets"] = {"version": "1.31"}


def unknown_key_far_from_any(d):
    d["api"]["zzz"] = 1


def preempt_as_a_string(d):
    d["vrrp"]["preempt"] = "false"


def priority_on_a_worker(d):
    d["nodes"][5]["vrrp_priority"] = 90


def interface_injection(d):
    d["vrrp"]["interface"] = "eth0; rm -rf /"


def interface_xml_injection(d):
    d["vrrp"]["interface"] = 'eth0"/><rule/>'


def interface_too_long(d):
    d["vrrp"]["interface"] = "a" * 16


def san_injection(d):
    d["kubernetes"]["extra_sans"] = ["api.example.com", "x\n  evil: true"]


def san_not_a_list(d):
    d["kubernetes"]["extra_sans"] = "api.example.com"


def secret_with_a_comment_character(d):
    d["vrrp"].update(version=2, advert_interval=1, auth_pass="ab#cd")


def secret_as_a_number(d):
    d["vrrp"].update(version=2, advert_interval=1, auth_pass=12345678)


def nodes_not_a_list(d):
    d["nodes"] = {"lb1": "198.51.100.11"}


def node_is_a_string(d):
    d["nodes"][2] = "cp1"


def nodes_missing(d):
    del d["nodes"]


def section_not_a_mapping(d):
    d["api"] = ["198.51.100.100"]


def address_with_a_blank(d):
    d["nodes"][5]["address"] = "198.51.100.31 "


def version_as_a_boolean(d):
    d["vrrp"]["version"] = True


CASES = [
    (even_control_planes, "cluster.nodes: 4 control_plane nodes", "use 3 or 5"),
    (zero_control_planes, "cluster.nodes: no control_plane node", "add 3"),
    (vip_outside_subnet, "cluster.api.vip: 203.0.113.100/24 is outside the subnet of loadbalancer lb1", "choose a VIP in"),
    (vip_is_a_node_address, "cluster.api.vip: 198.51.100.21 is also the address of node cp1", "no node owns"),
    (vip_is_broadcast, "cluster.api.vip: 198.51.100.255 is the network or broadcast address", "host address"),
    (duplicate_address, "cluster.nodes[3] (cp2).address: duplicate address 198.51.100.21", "its own address"),
    (duplicate_name, "cluster.nodes[3] (cp1).name: duplicate name 'cp1'", "its own minion id"),
    (invalid_name, "cluster.nodes[0] (lb_1).name", "lower-case letters"),
    (one_load_balancer, "cluster.nodes: 1 loadbalancer node(s)", "add a loadbalancer node"),
    (duplicate_priority, "cluster.nodes (lb2).vrrp_priority: 150 is also the priority of lb1", "different priority"),
    (priority_out_of_range, "cluster.nodes (lb2).vrrp_priority: 255", "use 1-254"),
    (unknown_role, "cluster.nodes[5] (worker1).role: unknown role 'etcd'", "loadbalancer, control_plane, worker"),
    (bad_address, "cluster.nodes[5] (worker1).address: '198.51.100.300' is not an IPv4 address", "set the node's address"),
    (no_nodes, "cluster.nodes: missing, empty or not a list", "list every node"),
    (vrrp2_without_secret, "cluster.vrrp.auth_pass: missing", "pillar/secrets/loadbalancer.sls"),
    (vrrp2_seed_password, "cluster.vrrp.auth_pass: a published default password", "at most 8 characters"),
    (vrrp2_example_placeholder, "cluster.vrrp.auth_pass: a published default password", "pillar/secrets/loadbalancer.sls"),
    (vrrp2_secret_too_long, "cluster.vrrp.auth_pass: 10 characters", "at most 8 characters"),
    (vrrp3_with_secret, "cluster.vrrp.auth_pass: VRRP version 3 has no authentication", "remove the secret"),
    (vrrp2_fractional_advert, "cluster.vrrp.advert_interval: 0.25; VRRP version 2 takes whole seconds", "version 3"),
    (vrrp3_advert_too_fine, "cluster.vrrp.advert_interval: 0.005", "0.01-40.95"),
    (unknown_vrrp_version, "cluster.vrrp.version: 4", "use 3"),
    (unknown_vrrp_mode, "cluster.vrrp.mode: 'broadcast'", "unicast"),
    (router_id_out_of_range, "cluster.vrrp.virtual_router_id: 256", "1-255"),
    (bad_port, "cluster.api.port: 70000", "1-65535"),
    (bad_prefix, "cluster.api.prefix: 33", "e.g. 24"),
    (pod_cidr_contains_nodes, "cluster.kubernetes.pod_cidr: 198.51.100.0/24 contains node lb1", "no node address"),
    (overlapping_cidrs, "cluster.kubernetes.service_cidr: overlaps pod_cidr", "separate ranges"),
    (unquoted_kubernetes_version, "cluster.kubernetes.version: 1.3", "quoted"),
    (bad_cluster_name, "cluster.name: 'My Cluster'", "lower-case"),
    (misspelt_node_key, "cluster.nodes[0] (lb1).vrrp_priorty: unknown key", "did you mean 'vrrp_priority'?"),
    (misspelt_section_key, "cluster.vrrp.advert_intervall: unknown key", "did you mean 'advert_interval'?"),
    (unknown_top_key, "cluster.kubernets: unknown key", "did you mean 'kubernetes'?"),
    (unknown_key_far_from_any, "cluster.api.zzz: unknown key", "the keys here are vip, prefix, port"),
    (preempt_as_a_string, "cluster.vrrp.preempt: 'false' is not a boolean", "without quotes"),
    (priority_on_a_worker, "cluster.nodes[5] (worker1).vrrp_priority: only load balancers", "remove it"),
    (interface_injection, "cluster.vrrp.interface: 'eth0; rm -rf /' is not an interface name", "e.g. eth0"),
    (interface_xml_injection, "cluster.vrrp.interface: 'eth0\"/><rule/>' is not an interface name", "at most 15"),
    (interface_too_long, "cluster.vrrp.interface: 'aaaaaaaaaaaaaaaa'", "at most 15"),
    (san_injection, "cluster.kubernetes.extra_sans[1]: 'x\\n  evil: true' is neither a DNS name", "fix or remove"),
    (san_not_a_list, "cluster.kubernetes.extra_sans: 'api.example.com'", "expected a list"),
    (secret_with_a_comment_character, "cluster.vrrp.auth_pass: not a quoted string", "'!' and '#'"),
    (secret_as_a_number, "cluster.vrrp.auth_pass: not a quoted string", "pillar/secrets/loadbalancer.sls"),
    (nodes_not_a_list, "cluster.nodes: missing, empty or not a list (got a mapping: {'lb1': '198.51.100.11'})",
     "list every node"),
    (node_is_a_string, "cluster.nodes[2]: 'cp1' is a string", "expected a mapping {name, role, address}"),
    (nodes_missing, "cluster.nodes: missing", "list every node"),
    (section_not_a_mapping, "cluster.api: a list (['198.51.100.100'])", "expected a mapping of vip, prefix, port"),
    (address_with_a_blank, "cluster.nodes[5] (worker1).address: '198.51.100.31 ' is not an IPv4 address",
     "set the node's address"),
    (version_as_a_boolean, "cluster.vrrp.version: True", "use 3"),
]


@pytest.mark.parametrize("breaks, field, fix", CASES, ids=[c[0].__name__ for c in CASES])
def test_each_problem_names_the_field_and_the_fix(rules, breaks, field, fix):
    desc = with_defaults(shipped())
    breaks(desc)
    problems = rules.problems_in(desc, require_secrets=True)
    matching = [p for p in problems if p.startswith(field)]
    assert matching, f"no problem starting with {field!r} in {problems}"
    assert fix in matching[0]


def test_every_problem_is_reported_at_once(rules):
    desc = with_defaults(shipped())
    even_control_planes(desc)
    vip_outside_subnet(desc)
    unknown_role(desc)
    problems = rules.problems_in(desc)
    assert len(problems) == 3, problems


def test_missing_description_says_where_it_belongs(rules):
    assert "pillar/cluster.sls" in rules.problems_in(None)[0]


def test_a_description_that_is_a_list_is_one_problem(rules):
    assert rules.problems_in([shipped()]) == [
        "cluster: a list; expected a mapping of name, api, vrrp, kubernetes, nodes (see pillar/cluster.sls)"]


def test_the_reader_merges_defaults_and_never_raises_on_a_broken_description(rules):
    read = rules.read(shipped(), DEFAULTS)
    assert read["problems"] == [] and read["cluster"]["api"]["port"] == 6443
    assert read["members"]["control_plane"] == ["cp1", "cp2", "cp3"]
    broken = shipped()
    broken["nodes"] = ["lb1", {"name": "lb2", "role": "loadbalancer"}, {"name": "x,*", "role": "worker"}, 7]
    read = rules.read(broken, DEFAULTS)
    assert read["problems"] and read["members"] == {"loadbalancer": ["lb2"], "control_plane": [], "worker": []}
    for raw in (None, [], "text", {"nodes": None}):
        assert rules.read(raw, DEFAULTS)["problems"], raw


def test_the_master_reads_the_file_pillar_roots_serve(rules, tmp_path):
    (tmp_path / "cluster.sls").write_text(yaml.safe_dump({"cluster": shipped()}))
    opts = {"pillar_roots": {"base": [str(tmp_path)]}, "file_roots": {"base": [str(salt_render.REPO / "salt")]}}
    assert rules.served(opts)["problems"] == []
    (tmp_path / "cluster.sls").write_text("cluster: [unclosed\n")
    problems = rules.served(opts)["problems"]
    assert len(problems) == 1 and problems[0].startswith("pillar/cluster.sls: not YAML") and "fix its syntax" in problems[0]


def test_secret_is_only_required_where_it_is_delivered(rules):
    desc = with_defaults(shipped())
    vrrp2_without_secret(desc)
    assert rules.problems_in(desc, require_secrets=False) == []


def test_view_derives_priorities_peers_and_initial_state(topology):
    desc = with_defaults(shipped())
    for node in desc["nodes"]:
        node.pop("vrrp_priority", None)
    lb1, lb2 = (topology.build_view(desc, name) for name in ("lb1", "lb2"))
    assert (lb1["vrrp"]["priority"], lb2["vrrp"]["priority"]) == (150, 149)
    assert lb1["vrrp"]["peers"] == ["198.51.100.12"] and lb2["vrrp"]["peers"] == ["198.51.100.11"]
    assert lb1["vrrp"]["state"] == lb2["vrrp"]["state"] == "BACKUP"
    assert lb1["vrrp"]["nopreempt"] is True


def test_view_with_preempt_makes_the_highest_priority_master(topology):
    desc = with_defaults(shipped())
    desc["vrrp"]["preempt"] = True
    assert topology.build_view(desc, "lb1")["vrrp"]["state"] == "MASTER"
    assert topology.build_view(desc, "lb2")["vrrp"]["state"] == "BACKUP"
    assert topology.build_view(desc, "lb1")["vrrp"]["nopreempt"] is False


def test_view_never_carries_the_secret(topology):
    desc = with_defaults(shipped())
    desc["vrrp"].update(version=2, advert_interval=1, auth_pass="q7Zr2kP1")
    view = topology.build_view(desc, "lb1")
    assert "q7Zr2kP1" not in repr(view)
    assert view["cluster"]["vrrp"]["authenticated"] is True
    assert desc["vrrp"]["auth_pass"] == "q7Zr2kP1"  # the caller's description is untouched
