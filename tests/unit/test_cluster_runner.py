"""cluster.status: its verdict, and the table (outputter k8sha_status) an operator reads."""

import copy

from helpers import salt_render


def runner():
    return salt_render.load("_runners", "cluster")


def outputter():
    return salt_render.load("_output", "k8sha_status")


def lb(state, holds, servers, running=True):
    return {"vrrp": {"state": state, "holds_vip": holds},
            "haproxy": {"running": running, "servers": [{"name": n, "status": s} for n, s in servers],
                        "up": sum(s == "UP" for _, s in servers), "total": len(servers)}}


def member(name, url):
    return {"name": name, "peer_urls": [f"https://{url}:2380"], "client_urls": [f"https://{url}:2379"]}


def healthy_status():
    servers = [("cp1", "UP"), ("cp2", "UP"), ("cp3", "UP")]
    return {
        "cluster": "k8sha-lab", "vip": "198.51.100.100", "vip_holders": ["lb1"],
        "api": {"healthy": True, "answer": "200 ok"},
        "load_balancers": {"lb1": lb("MASTER", True, servers), "lb2": lb("BACKUP", False, servers)},
        "split_brain": {"split": False, "masters": ["lb1"], "holders": ["lb1"]},
        "etcd": {"asked": "cp1", "leader": {"name": "cp2"},
                 "members": [member("cp1", "a"), member("cp2", "b"), member("cp3", "c")],
                 "health": {f"https://{x}:2379": {"healthy": True} for x in "abc"}, "problems": []},
        "nodes": {"cp1": "Ready", "cp2": "Ready", "cp3": "Ready", "worker1": "Ready"},
        "control_planes": ["cp1", "cp2", "cp3"],
    }


def test_a_healthy_cluster_is_healthy_with_no_reason():
    assert runner().verdict(healthy_status()) == ("healthy", [])


def test_less_redundancy_than_described_is_degraded_and_each_loss_is_named():
    status = healthy_status()
    status["load_balancers"]["lb2"] = "did not answer"
    status["load_balancers"]["lb1"]["haproxy"]["servers"][2]["status"] = "DOWN"
    status["load_balancers"]["lb1"]["haproxy"]["up"] = 2
    status["etcd"]["health"]["https://c:2379"]["healthy"] = False
    status["nodes"]["worker1"] = "NotReady"
    verdict, reasons = runner().verdict(status)
    assert verdict == "degraded"
    assert reasons == ["etcd: 2 of 3 members healthy", "lb1: 2/3 API servers UP", "lb2: did not answer",
                       "worker1: NotReady"]


def test_a_missing_etcd_member_is_degraded():
    status = healthy_status()
    status["etcd"]["members"].pop()
    del status["etcd"]["health"]["https://c:2379"]
    assert runner().verdict(status) == ("degraded", ["etcd: cp3 is no member"])


def test_no_vip_no_api_or_no_quorum_is_down():
    module = runner()
    for breaks, reason in [
        (lambda s: s.update(vip_holders=[]), "no load balancer holds the VIP 198.51.100.100"),
        (lambda s: s["api"].update(healthy=False, answer="timed out"), "the API does not answer through the VIP"),
        (lambda s: [s["etcd"]["health"][u].update(healthy=False) for u in ("https://a:2379", "https://b:2379")],
         "etcd: 1 of 3 members healthy, no quorum"),
    ]:
        status = copy.deepcopy(healthy_status())
        breaks(status)
        verdict, reasons = module.verdict(status)
        assert verdict == "down" and reasons[0].startswith(reason), (verdict, reasons)


def test_table_starts_with_the_verdict_then_holder_backends_and_etcd():
    status = healthy_status()
    status["load_balancers"]["lb1"]["haproxy"]["servers"][1]["status"] = "DOWN"
    status["load_balancers"]["lb1"]["haproxy"]["up"] = 2
    status["load_balancers"]["lb3"] = "did not answer"
    status["etcd"]["health"]["https://b:2379"]["healthy"] = False
    status["verdict"], status["reasons"] = runner().verdict(status)
    lines = outputter().output(status).splitlines()
    assert lines[0] == "DEGRADED: etcd: 2 of 3 members healthy; lb1: 2/3 API servers UP; lb3: did not answer"
    assert lines[2] == "cluster k8sha-lab   VIP 198.51.100.100 held by lb1"
    assert lines[3] == "API through the VIP: healthy (200 ok)"
    assert "lb1            MASTER   yes  2/3          cp1=UP cp2=DOWN cp3=UP" in lines
    assert any(line.startswith("lb3") and "did not answer" in line for line in lines)
    assert "etcd (asked cp1): 3 members, leader cp2" in lines
    assert any(line.split()[:2] == ["cp2", "UNHEALTHY"] for line in lines)


def test_table_says_when_nobody_holds_the_vip_and_etcd_is_unavailable():
    status = {"cluster": "c", "vip": "v", "vip_holders": [], "api": {"healthy": False, "answer": "timeout"},
              "load_balancers": {}, "etcd": {"asked": None, "error": "no answer"}}
    text = "\n".join(outputter().table(status))
    assert "held by NOBODY" in text and "UNHEALTHY (timeout)" in text and "etcd: unavailable (no answer)" in text


def test_an_invalid_description_is_shown_as_its_problems():
    text = outputter().output({"cluster": None, "verdict": "down", "reasons": ["invalid cluster description",
                                                                             "cluster.nodes: missing"]})
    assert text == "DOWN: invalid cluster description; cluster.nodes: missing"


def test_two_masters_or_two_vip_holders_are_a_split_brain_and_the_table_says_so():
    module = runner()
    split = module.split_brain_of({"lb1": lb("MASTER", True, []), "lb2": lb("MASTER", True, []), "lb3": "did not answer"})
    assert split == {"split": True, "masters": ["lb1", "lb2"], "holders": ["lb1", "lb2"]}
    healthy = module.split_brain_of({"lb1": lb("MASTER", True, []), "lb2": lb("BACKUP", False, [])})
    assert healthy["split"] is False
    lines = outputter().table({"cluster": "c", "vip": "v", "vip_holders": ["lb1", "lb2"], "split_brain": split,
                               "api": {"healthy": True, "answer": "ok"}, "load_balancers": {},
                               "etcd": {"asked": None, "error": "x"}})
    assert lines[1].startswith("SPLIT BRAIN: MASTER on lb1, lb2, VIP on lb1, lb2")
