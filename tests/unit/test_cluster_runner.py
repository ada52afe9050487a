"""cluster.status's table: what an operator reads."""

import importlib.util

import salt_render


def runner():
    spec = importlib.util.spec_from_file_location("cluster_runner", salt_render.REPO / "_runners" / "cluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lb(state, holds, servers, running=True):
    return {"vrrp": {"state": state, "holds_vip": holds},
            "haproxy": {"running": running, "servers": [{"name": n, "status": s} for n, s in servers],
                        "up": sum(s == "UP" for _, s in servers), "total": len(servers)}}


def test_table_shows_holder_backends_and_etcd():
    text = runner().table({
        "cluster": "k8sha-lab", "vip": "198.51.100.100", "vip_holders": ["lb2"],
        "api": {"healthy": True, "answer": "ok"},
        "load_balancers": {"lb1": lb("BACKUP", False, [("cp1", "UP"), ("cp2", "DOWN")]),
                           "lb2": lb("MASTER", True, [("cp1", "UP"), ("cp2", "DOWN")]),
                           "lb3": "did not answer"},
        "etcd": {"asked": "cp1", "leader": {"name": "cp2"},
                 "members": [{"name": "cp1", "peer_urls": ["https://a:2380"], "client_urls": ["https://a:2379"]},
                             {"name": "cp2", "peer_urls": ["https://b:2380"], "client_urls": ["https://b:2379"]}],
                 "health": {"https://a:2379": {"healthy": True}, "https://b:2379": {"healthy": False}}},
    })
    lines = text.splitlines()
    assert lines[0] == "cluster k8sha-lab   VIP 198.51.100.100 held by lb2"
    assert lines[1] == "API through the VIP: healthy (ok)"
    assert "lb2            MASTER   yes  1/2          cp1=UP cp2=DOWN" in lines
    assert any(line.startswith("lb3") and "did not answer" in line for line in lines)
    assert "etcd (asked cp1): 2 members, leader cp2" in lines
    assert any(line.split()[:2] == ["cp2", "UNHEALTHY"] for line in lines)


def test_table_says_when_nobody_holds_the_vip_and_etcd_is_unavailable():
    text = runner().table({"cluster": "c", "vip": "v", "vip_holders": [], "api": {"healthy": False, "answer": "timeout"},
                           "load_balancers": {}, "etcd": {"asked": None, "error": "no answer"}})
    assert "held by NOBODY" in text and "UNHEALTHY (timeout)" in text and "etcd: unavailable (no answer)" in text


def test_two_masters_or_two_vip_holders_are_a_split_brain_and_the_table_says_so():
    module = runner()
    split = module.split_brain_of({"lb1": lb("MASTER", True, []), "lb2": lb("MASTER", True, []), "lb3": "did not answer"})
    assert split == {"split": True, "masters": ["lb1", "lb2"], "holders": ["lb1", "lb2"]}
    healthy = module.split_brain_of({"lb1": lb("MASTER", True, []), "lb2": lb("BACKUP", False, [])})
    assert healthy["split"] is False
    text = module.table({"cluster": "c", "vip": "v", "vip_holders": ["lb1", "lb2"], "split_brain": split,
                         "api": {"healthy": True, "answer": "ok"}, "load_balancers": {},
                         "etcd": {"asked": None, "error": "x"}})
    assert text.splitlines()[1].startswith("SPLIT BRAIN: MASTER on lb1, lb2, VIP on lb1, lb2")
