"""The load-balancer role applied by Salt in lab machines: VIP, failover, health checks,
firewall, unicast VRRP, events. The timings are measured in bench/, not asserted here;
the timeouts below only bound how long a broken system is waited for."""

import subprocess
import time

from helpers.lab_session import API_PORT, LOAD_BALANCERS, VIP, master, monitoring, net, secgroups


def test_exactly_one_load_balancer_holds_the_vip(lab):
    holder = lab.one_holder()
    status = lab.salt("-L", ",".join(LOAD_BALANCERS), "lb_status.vrrp")
    assert status[holder]["state"] == "MASTER" and status[holder]["holds_vip"]
    other = lab.other(holder)
    assert status[other]["state"] == "BACKUP" and not status[other]["holds_vip"]
    assert all(s["consistent"] for s in status.values())


def test_a_client_reaches_the_api_through_the_vip(lab):
    lab.one_holder()
    assert lab.through_vip("/healthz") == "ok"
    backends = lab.salt("-L", ",".join(LOAD_BALANCERS), "lb_status.haproxy_backends")
    for lb in LOAD_BALANCERS:
        assert backends[lb]["up"] == 3, backends[lb]


def test_killing_haproxy_on_the_holder_moves_the_vip(lab):
    holder = lab.one_holder()
    lab.machine(holder).exec("systemctl", "kill", "--signal=KILL", "haproxy")
    lab.wait_for(lambda: lab.vip_holders() == [lab.other(holder)], 10, f"the VIP to move from {holder}")
    # systemd restarts HAProxy; the old holder stays BACKUP (nopreempt): no second move.
    lab.wait_for(lambda: lab.machine(holder).exec("systemctl", "is-active", "haproxy", check=False).stdout.strip() == "active",
                 10, f"HAProxy restarted on {holder}")
    assert lab.one_holder() == lab.other(holder)
    assert lab.through_vip() == "ok"


def test_stopping_keepalived_moves_the_vip_and_reports_the_transition(lab):
    holder = lab.one_holder()
    other = lab.other(holder)
    # Listen on the master's event bus for the new holder's notify event.
    listener = subprocess.Popen(
        master.salt_command("salt-run", "state.event", "tagmatch=k8sha/keepalived/state", "count=-1", "--out=json"),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        time.sleep(1)
        stopped = time.time()
        lab.machine(holder).exec("systemctl", "stop", "keepalived")
        lab.wait_for(lambda: lab.vip_holders() == [other], 10, f"the VIP to move from {holder}")
        time.sleep(8)  # salt-call in the notify script takes a few seconds
    finally:
        listener.terminate()
        events, _ = listener.communicate(timeout=10)
        lab.machine(holder).exec("systemctl", "start", "keepalived")
    assert f'"id": "{other}"' in events and '"state": "MASTER"' in events, events
    assert lab.one_holder() == other
    # The master asked the load balancers (the events only made it look) and recorded the move.
    history, _ = master.salt_json("salt-run", "cluster.history")
    moves = [r for r in history if r["kind"] == "vip" and r["at"] >= stopped]
    assert moves and moves[0]["holders"] == [other], history[:5]


def test_prometheus_sees_each_load_balancers_backends_and_vrrp_state_and_a_failover(lab):
    """A real Prometheus (the lab's, in the master's namespace) scrapes HAProxy's exporter and
    node-exporter on each load balancer; the VRRP state comes from the notify script's textfile."""
    def up_backends():
        found = monitoring.query('haproxy_backend_active_servers{proxy="kube_apiserver_nodes"}')
        return {r["metric"]["node"]: r["value"] for r in found}

    def vrrp_masters():
        return sorted(r["metric"]["node"] for r in monitoring.query('k8sha_vrrp_state{state="MASTER"} == 1'))

    lab.wait_for(lambda: up_backends() == {"lb1": 3.0, "lb2": 3.0}, 30, "Prometheus: 3 UP backends on each LB")
    holder = lab.one_holder()
    other = lab.other(holder)
    lab.wait_for(lambda: vrrp_masters() == [holder], 30, f"Prometheus: {holder} MASTER")
    before = {"up_backends": up_backends(), "vrrp_masters": vrrp_masters()}
    def faults():
        return sorted(r["metric"]["node"] for r in monitoring.query('k8sha_vrrp_state{state="FAULT"} == 1'))

    lab.machine(holder).exec("systemctl", "stop", "haproxy")
    try:
        lab.wait_for(lambda: vrrp_masters() == [other], 30, f"Prometheus: {other} MASTER after the failover")
        # The exporters are scraped apart: the stopped HAProxy's series goes stale at its next
        # scrape, which may come after the VRRP textfile's (one scrape interval at most).
        lab.wait_for(lambda: faults() == [holder] and list(up_backends()) == [other], 30,
                     f"Prometheus: {holder} FAULT and only {other}'s HAProxy scraped")
        after = {"up_backends": up_backends(), "vrrp_masters": vrrp_masters(), "fault": faults()}
    finally:
        lab.machine(holder).exec("systemctl", "start", "haproxy")
    print(f"\nPrometheus before the failover: {before}\nafter HAProxy stopped on {holder}: {after}")
    assert after["fault"] == [holder] and list(after["up_backends"]) == [other]
    lab.wait_for(lambda: vrrp_masters() == [other] and not monitoring.query('k8sha_vrrp_state{state="FAULT"} == 1'),
                 30, f"{holder} BACKUP again, {other} still MASTER")


def test_powering_off_the_holder_moves_the_vip(lab):
    holder = lab.one_holder()
    box = lab.machine(holder)
    box.stop()
    try:
        lab.wait_for(lambda: lab.vip_holders() == [lab.other(holder)], 15, f"the VIP to move from {holder}")
        assert lab.through_vip() == "ok"
    finally:
        box.boot()
    lab.wait_for(lambda: lab.salt(holder, "test.ping", timeout=10).get(holder) is True, 90, f"{holder}'s minion back", interval=1)
    assert lab.one_holder(timeout=30) == lab.other(holder)
    # After a reboot keepalived still watches HAProxy's down flag (its directory is on tmpfs).
    log = box.exec("journalctl", "--no-pager", "-b", "-t", "Keepalived_vrrp").stdout
    assert "Track file directory for haproxy_down does not exist" not in log, log


def test_an_api_server_answering_500_leaves_the_pool_and_returns(lab):
    cp2 = lab.machine("cp2")
    cp2.exec("sh", "-c", "mkdir -p /run/k8sha-lab && echo 500 > /run/k8sha-lab/healthz-status")

    def cp2_status(wanted):
        backends = lab.salt("-L", ",".join(LOAD_BALANCERS), "lb_status.haproxy_backends")
        states = {lb: {s["name"]: s["status"] for s in backends[lb]["servers"]}["cp2"] for lb in LOAD_BALANCERS}
        return all(state == wanted for state in states.values())

    try:
        lab.wait_for(lambda: cp2_status("DOWN"), 15, "cp2 marked DOWN on both load balancers", interval=0.5)
        for _ in range(6):  # the pool serves only healthy servers now
            assert lab.through_vip("/healthz") == "ok"
    finally:
        cp2.exec("rm", "-f", "/run/k8sha-lab/healthz-status")
    lab.wait_for(lambda: cp2_status("UP"), 15, "cp2 back UP on both load balancers", interval=0.5)


def test_security_groups_drop_what_they_do_not_allow_and_firewalld_rejects_behind_them(lab):
    """Two layers, as on OpenStack: the port's security groups (the lab switch) drop a flow
    they do not allow; a flow they allow but the node's firewalld zone does not is rejected."""
    lb1, cp1 = lab.machine("lb1"), lab.machine("cp1")
    assert "k8sha" in lb1.exec("firewall-cmd", "--get-active-zones").stdout
    lb1.exec("systemd-run", "--unit=k8sha-test-listener", "python3", "-m", "http.server", "8080")
    groups = secgroups.load()["groups"]
    try:
        lab.wait_for(lambda: lb1.exec("curl", "-s", "-o", "/dev/null", "http://127.0.0.1:8080/", check=False).returncode == 0,
                     10, "the test listener on lb1")
        before = secgroups.dropped("lb1")
        dropped = cp1.exec("curl", "-s", "--max-time", "3", "http://198.51.100.11:8080/", check=False)
        assert dropped.returncode == 28, dropped  # 28: timed out (the switch drops it, no answer)
        assert secgroups.dropped("lb1") > before
        print(f"\ncp1 -> lb1:8080: curl exit {dropped.returncode} (timed out); lb1's port dropped "
              f"{secgroups.dropped('lb1') - before} packets")
        allowed = cp1.exec("curl", "-sk", "--max-time", "3", f"https://{VIP}:{API_PORT}/healthz", check=False)
        assert allowed.stdout == "ok", allowed
        # An operator opens 8080 in the group: firewalld on lb1 still rejects it.
        opened = dict(groups, **{"k8sha-loadbalancer": groups["k8sha-loadbalancer"] + [
            {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 8080,
             "port_range_max": 8080, "remote_ip_prefix": "198.51.100.21/32"}]})
        secgroups.set_groups(opened)
        refused = cp1.exec("curl", "-s", "--max-time", "3", "http://198.51.100.11:8080/", check=False)
        assert refused.returncode == 7, refused  # 7: connection refused (firewalld rejects)
    finally:
        secgroups.set_groups(groups)
        lb1.exec("systemctl", "stop", "k8sha-test-listener", check=False)


def test_a_worker_cannot_reach_etcd_and_the_master_reaches_only_what_the_groups_open(lab):
    worker1 = lab.machine("worker1")
    before = secgroups.dropped("cp1")
    etcd = worker1.exec("curl", "-sk", "--max-time", "3", "https://198.51.100.21:2379/health", check=False)
    assert etcd.returncode == 28, etcd
    assert secgroups.dropped("cp1") > before
    # From the master's address: SSH is open (sshd need not listen: refused, not dropped), the API
    # server of a control plane is not (only the load balancers and control planes reach it).
    ssh = master.in_master_ns("curl", "-s", "--max-time", "3", "telnet://198.51.100.21:22", check=False)
    assert ssh.returncode in (7, 56), ssh
    api = master.in_master_ns("curl", "-sk", "--max-time", "3", f"https://198.51.100.21:{API_PORT}/healthz", check=False)
    assert api.returncode == 28, api


def test_cut_vrrp_makes_two_masters_and_the_master_reports_the_split_brain(lab):
    lab.one_holder()
    listener = subprocess.Popen(
        master.salt_command("salt-run", "state.event", "tagmatch=k8sha/keepalived/split_brain", "count=1", "--out=json"),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(1)
        net.drop_vrrp(True)
        lab.wait_for(lambda: sorted(lab.vip_holders()) == list(LOAD_BALANCERS), 15, "both load balancers to take the VIP")
        events, _ = listener.communicate(timeout=60)
        status, _ = master.salt_json("salt-run", "cluster.status")
        print(f"\nsplit brain event: {events.strip()}\ncluster.status: {status['split_brain']}")
        assert "k8sha/keepalived/split_brain" in events and '"split": true' in events, events
        assert '"lb1"' in events and '"lb2"' in events, events
        assert status["split_brain"]["split"] is True and status["split_brain"]["masters"] == list(LOAD_BALANCERS)
    finally:
        listener.kill()
        net.drop_vrrp(False)
    assert lab.one_holder(timeout=30) in LOAD_BALANCERS
    assert master.salt_json("salt-run", "cluster.status")[0]["split_brain"]["split"] is False


def test_unicast_vrrp_keeps_working_when_the_network_drops_multicast(lab):
    net.drop_multicast(True)
    try:
        holder = lab.one_holder()
        # With multicast VRRP both nodes would stop hearing each other and both take the VIP.
        for _ in range(15):
            assert len(lab.vip_holders()) == 1
            time.sleep(0.2)
        lab.machine(holder).exec("systemctl", "stop", "keepalived")
        lab.wait_for(lambda: lab.vip_holders() == [lab.other(holder)], 10, "failover with multicast dropped")
        lab.machine(holder).exec("systemctl", "start", "keepalived")
        assert lab.one_holder() == lab.other(holder)
    finally:
        net.drop_multicast(False)


def test_reapplying_the_role_changes_nothing(lab):
    results = lab.salt("-L", ",".join(LOAD_BALANCERS), "state.apply", timeout=600)
    changed = {
        minion: sorted(s["__id__"] for s in states.values() if s["changes"])
        for minion, states in results.items()
    }
    assert changed == {lb: [] for lb in LOAD_BALANCERS}
    assert all(s["result"] for states in results.values() for s in states.values())


def test_cluster_status_runner_agrees_with_the_machines(lab):
    holder = lab.one_holder()
    status, code = master.salt_json("salt-run", "cluster.status")
    assert status["vip_holders"] == [holder]
    assert status["api"]["healthy"] is True
    for lb in LOAD_BALANCERS:
        assert status["load_balancers"][lb]["haproxy"]["up"] == 3
    assert (status["verdict"], status["reasons"], code) == ("healthy", [], 0)
    table, code = master.salt_text("salt-run", "cluster.status")
    assert table.startswith("HEALTHY\n") and f"held by {holder}" in table and code == 0


def test_lab_namespaces_reach_only_the_lab_subnet(lab):
    # Route lookups only: nothing is sent. Outside the lab subnet there is no route at all.
    def lookup(run, address):
        out = run("ip", "route", "get", address, check=False)
        return out.returncode, (out.stdout + out.stderr).lower()

    for run in (lab.machine("lb1").exec, lab.machine("cp1").exec, master.in_master_ns):
        code, text = lookup(run, "203.0.113.1")
        assert code != 0 and "no route to host" in text, text
        code, text = lookup(run, "198.51.100.12")  # lb2, from none of these three
        assert code == 0 and "dev eth0" in text, text
