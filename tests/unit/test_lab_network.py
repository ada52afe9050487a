"""The lab refuses to start when the host routes its range (no lab packet may leave the host)."""



from lablib import net


def test_default_route_and_other_networks_do_not_clash():
    routes = [{"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"},
              {"dst": "192.0.2.0/24", "dev": "eth0"}, {"dst": "127.0.0.0/8", "type": "local", "dev": "lo"}]
    assert net.routes_overlapping_lab(routes) == []


def test_a_host_route_into_the_lab_range_is_named():
    routes = [{"dst": "198.51.100.0/25", "dev": "eth1"}, {"dst": "198.51.100.7", "type": "local", "dev": "eth1"},
              {"dst": "198.51.0.0/16", "dev": "tun0"}]
    assert net.routes_overlapping_lab(routes) == [
        "198.51.100.0/25 (dev eth1)", "198.51.100.7 (dev eth1)", "198.51.0.0/16 (dev tun0)"]
