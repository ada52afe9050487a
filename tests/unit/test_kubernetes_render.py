"""
The Kubernetes node states (production: pkgs.k8s.io) rendered by real Salt: containerd's
config checked by containerd itself, kubeadm's configuration parsed and its contents
checked, the packages pinned and held; the lab's variant (local stand-in repository, the
host's kernel); the join states; join material in pillar only where it is needed.
"""

import shutil
import subprocess

import pytest
import yaml
from helpers.salt_render import description


def node(minion, cluster, minion_id, mods, lookup=None):
    rendered = minion(cluster, minion_id=minion_id, lookup=lookup)
    return rendered, rendered.show_sls(*mods)


def state_args(states, state_id):
    module = next(k for k in states[state_id] if not k.startswith("__"))
    args = {}
    for item in states[state_id][module]:
        if isinstance(item, dict):
            args.update(item)
    return args


@pytest.mark.skipif(not shutil.which("containerd"), reason="containerd not installed (make setup)")
def test_containerd_config_passes_containerd_and_uses_the_systemd_cgroup_driver(minion, tmp_path):
    cp, states = node(minion, description(), "cp1", ["containerd"])
    args = state_args(states, "containerd-config")
    assert args["check_cmd"].endswith("/check-containerd-config")
    config = tmp_path / "config.toml"
    config.write_text(cp.render_file(args))
    checker = minion.libexec / "check-containerd-config"
    checker.write_text(cp.render_file(state_args(states, "containerd-config-checker")))
    checker.chmod(0o755)
    assert subprocess.run([str(checker), str(config)], capture_output=True).returncode == 0
    dump = subprocess.run(["containerd", "--config", str(config), "config", "dump"], capture_output=True, text=True).stdout
    assert "SystemdCgroup = true" in dump
    broken = tmp_path / "broken.toml"
    broken.write_text(config.read_text().replace("SystemdCgroup = true", "SystemdCgroup = "))
    assert subprocess.run([str(checker), str(broken)], capture_output=True).returncode != 0


def kubeadm_documents(minion, cluster, minion_id="cp1", lookup=None):
    cp, states = node(minion, cluster, minion_id, ["kubernetes.control_plane"], lookup)
    return {doc["kind"]: doc for doc in yaml.safe_load_all(cp.render_file(state_args(states, "kubernetes-kubeadm-config")))}


def test_kubeadm_configuration_puts_the_api_behind_the_vip(minion):
    docs = kubeadm_documents(minion, description(kubernetes={"extra_sans": ["api.example.org"]}))
    cluster = docs["ClusterConfiguration"]
    assert cluster["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert cluster["controlPlaneEndpoint"] == "198.51.100.100:6443"
    assert cluster["apiServer"]["certSANs"] == [
        "198.51.100.100", "lb1", "lb2", "198.51.100.11", "198.51.100.12", "api.example.org"]
    assert cluster["networking"] == {"podSubnet": "10.244.0.0/16", "serviceSubnet": "10.96.0.0/12"}
    assert "kubernetesVersion" not in cluster  # a minor version only: kubeadm's own
    init = docs["InitConfiguration"]
    assert init["localAPIEndpoint"] == {"advertiseAddress": "198.51.100.21", "bindPort": 6443}
    assert init["nodeRegistration"]["name"] == "cp1"
    assert docs["KubeletConfiguration"]["cgroupDriver"] == "systemd"


def test_kubeadm_configuration_follows_the_version(minion):
    patch = kubeadm_documents(minion, description(kubernetes={"version": "1.31.2"}))["ClusterConfiguration"]
    assert patch["kubernetesVersion"] == "v1.31.2"
    older = kubeadm_documents(minion, description(kubernetes={"version": "1.30"}))["ClusterConfiguration"]
    assert older["apiVersion"] == "kubeadm.k8s.io/v1beta3"


def test_a_certificate_validity_reaches_kubeadm_only_where_kubeadm_reads_it(minion):
    assert "certificateValidityPeriod" not in kubeadm_documents(minion, description())["ClusterConfiguration"]
    lookup = {"kubernetes": {"certificate_validity": "4380h"}}
    cluster = kubeadm_documents(minion, description(), lookup=lookup)["ClusterConfiguration"]
    assert cluster["certificateValidityPeriod"] == "4380h"
    older = kubeadm_documents(minion, description(kubernetes={"version": "1.30"}), lookup=lookup)["ClusterConfiguration"]
    assert "certificateValidityPeriod" not in older  # v1beta3 has no such field


@pytest.mark.parametrize("version, pin", [("1.31", "1.31.*"), ("1.31.2", "1.31.2-*")])
def test_packages_are_pinned_to_the_description_and_held(minion, version, pin):
    _, states = node(minion, description(kubernetes={"version": version}), "worker1", ["kubernetes"])
    packages = state_args(states, "kubernetes-packages")
    assert packages["pkgs"] == [{"kubelet": pin}, {"kubeadm": pin}, {"kubectl": pin}]
    assert packages["hold"] is True
    repo = state_args(states, "kubernetes-apt-repository")
    assert repo["name"] == ("deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] "
                            "https://pkgs.k8s.io/core:/stable:/v1.31/deb/ /")


def test_node_prerequisites_follow_kubeadms_preflight(minion):
    _, states = node(minion, description(), "worker1", ["kubernetes"])
    assert {state_args(states, f"kubernetes-kernel-module-{m}")["name"] for m in ("overlay", "br_netfilter")} == {
        "overlay", "br_netfilter"}
    sysctls = {state_args(states, s)["name"]: state_args(states, s)["value"]
               for s in states if s.startswith("kubernetes-sysctl-")}
    assert sysctls == {"net.bridge.bridge-nf-call-iptables": 1, "net.bridge.bridge-nf-call-ip6tables": 1,
                       "net.ipv4.ip_forward": 1}
    assert "kubernetes-swap-off" in states and "kubernetes-swap-off-at-boot" in states
    # Workers get no kubeadm configuration file: they join with fresh join material only.
    assert "kubernetes-kubeadm-config" not in states


def test_swap_is_disabled_in_fstab_once(minion, tmp_path):
    worker, states = node(minion, description(), "worker1", ["kubernetes"])
    args = state_args(states, "kubernetes-swap-off-at-boot")
    fstab = tmp_path / "fstab"
    fstab.write_text("UUID=1 / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n# /old none swap sw 0 0\n")
    args = {k: v for k, v in args.items() if k not in ("name", "order")}
    first = worker.call("state.single", "file.replace", name=str(fstab), **args)
    second = worker.call("state.single", "file.replace", name=str(fstab), **args)
    assert fstab.read_text().splitlines() == [
        "UUID=1 / ext4 defaults 0 1",
        "# disabled by Salt (kubelet needs swap off): /swapfile none swap sw 0 0",
        "# /old none swap sw 0 0",
    ]
    assert next(iter(first.values()))["changes"] and not next(iter(second.values()))["changes"]


LAB_LOOKUP = {"kubernetes": {"repo_url": "file:/opt/k8sha-lab/apt/v{minor}/", "repo_trusted": True,
                             "kernel_prerequisites": False}}


def test_the_lab_installs_the_same_packages_from_its_local_repository(minion):
    states = minion(description(), minion_id="worker1", lookup=LAB_LOOKUP).show_sls("kubernetes")
    assert state_args(states, "kubernetes-apt-repository")["name"] == "deb [trusted=yes] file:/opt/k8sha-lab/apt/v1.31/ /"
    assert "kubernetes-apt-keyring-directory" not in states
    assert state_args(states, "kubernetes-packages")["hold"] is True
    # The lab's machines share the host's kernel: no modules or swap changes; the sysctls belong to
    # the machine's own network namespace and are set (kubeadm's preflight checks ip_forward).
    assert not [s for s in states if s.startswith(("kubernetes-kernel-module", "kubernetes-swap"))]
    assert state_args(states, "kubernetes-sysctl-net.ipv4.ip_forward")["value"] == 1
    assert "require" not in state_args(states, "kubernetes-sysctl-net.ipv4.ip_forward")
    assert "kubernetes-kernel-prerequisites-left-to-the-host" in states
    assert "containerd-service" in states


def test_join_material_reaches_only_the_joining_node_and_the_control_planes(minion):
    cluster = description(nodes=description()["nodes"] + [
        {"name": "worker2", "role": "worker", "address": "198.51.100.32"}])
    seen = {}
    for minion_id in ("worker1", "worker2", "cp2", "lb1"):
        node = minion(cluster, minion_id=minion_id)
        join_dir = node.root / "pillar" / "secrets" / "join"
        join_dir.mkdir(parents=True)
        (join_dir / "worker1.sls").write_text(yaml.safe_dump(
            {"k8sha_join": {"worker1": {"token": "abcdef.0123456789abcdef"}}}))
        seen[minion_id] = sorted(node.call("pillar.items", unmask=True).get("k8sha_join", {}))
    assert seen == {"worker1": ["worker1"], "worker2": [], "cp2": ["worker1"], "lb1": []}


def test_an_etcd_restores_snapshot_reaches_only_its_survivor(minion):
    seen = {}
    for minion_id in ("cp1", "cp2", "worker1", "lb1"):
        node = minion(description(), minion_id=minion_id)
        restore_dir = node.root / "pillar" / "secrets" / "etcd_restore"
        restore_dir.mkdir(parents=True)
        (restore_dir / "cp1.sls").write_text(yaml.safe_dump({"k8sha_etcd_restore": {"cp1": {"snapshot": "c25hcA=="}}}))
        seen[minion_id] = sorted(node.call("pillar.items", unmask=True).get("k8sha_etcd_restore", {}))
    assert seen == {"cp1": ["cp1"], "cp2": [], "worker1": [], "lb1": []}


def test_kubeadm_configuration_takes_every_port_from_the_settings(minion):
    """kubeadm's defaults render nothing extra; other ports reach etcd, the controller manager,
    the scheduler and the kubelet (k8sha:ports, the same numbers the firewall opens)."""
    docs = kubeadm_documents(minion, description())
    assert "extraArgs" not in docs["ClusterConfiguration"]["etcd"]["local"]
    assert docs["KubeletConfiguration"]["port"] == 10250
    ports = {"etcd_client": 12379, "etcd_peer": 12380, "kubelet": 11250, "controller_manager": 11257, "scheduler": 11259}
    docs = kubeadm_documents(minion, description(), lookup={"ports": ports})
    cluster = docs["ClusterConfiguration"]
    args = {a["name"]: a["value"] for a in cluster["etcd"]["local"]["extraArgs"]}
    assert args["listen-client-urls"] == "https://127.0.0.1:12379,https://198.51.100.21:12379"
    assert args["advertise-client-urls"] == "https://198.51.100.21:12379"
    assert args["listen-peer-urls"] == "https://198.51.100.21:12380"
    assert args["initial-advertise-peer-urls"] == "https://198.51.100.21:12380"
    assert cluster["controllerManager"]["extraArgs"] == [{"name": "secure-port", "value": "11257"}]
    assert cluster["scheduler"]["extraArgs"] == [{"name": "secure-port", "value": "11259"}]
    assert docs["KubeletConfiguration"]["port"] == 11250


def _lab_kubernetes_lookup():
    """pillar/lab_kubernetes.sls's lookup: the lab on the real Kubernetes."""
    import pathlib  # pylint: disable=import-outside-toplevel

    pillar = pathlib.Path(__file__).resolve().parents[2] / "pillar" / "lab_kubernetes.sls"
    return yaml.safe_load(pillar.read_text())["k8sha"]["lookup"]


def test_the_real_kubernetes_lab_renders_kubeadms_documents_with_each_lab_difference(minion):
    docs = kubeadm_documents(minion, description(kubernetes={"version": "1.36.3"}), lookup=_lab_kubernetes_lookup())
    init, cluster = docs["InitConfiguration"], docs["ClusterConfiguration"]
    assert cluster["kubernetesVersion"] == "v1.36.3" and cluster["dns"] == {"imageTag": "v1.14.6"}
    assert init["nodeRegistration"] == {"name": "cp1", "criSocket": "unix:///run/containerd/containerd.sock",
                                        "kubeletExtraArgs": [{"name": "node-ip", "value": "198.51.100.21"}],
                                        "ignorePreflightErrors": ["SystemVerification"]}
    assert docs["KubeletConfiguration"]["failCgroupV1"] is False
    assert docs["KubeProxyConfiguration"] == {"apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                                              "kind": "KubeProxyConfiguration", "mode": "nftables",
                                              "conntrack": {"maxPerCore": 0}}


def test_production_keeps_kubeadms_own_choices(minion):
    docs = kubeadm_documents(minion, description())
    assert "dns" not in docs["ClusterConfiguration"] and "KubeProxyConfiguration" not in docs
    assert "failCgroupV1" not in docs["KubeletConfiguration"]
    assert "ignorePreflightErrors" not in docs["InitConfiguration"]["nodeRegistration"]


def test_containerd_2_gets_a_version_3_configuration_and_one_hosts_file_per_mirror(minion):
    lookup = _lab_kubernetes_lookup()
    rendered = minion(description(), minion_id="worker1", lookup=lookup)
    states = rendered.show_sls("containerd")
    config = rendered.render_file(state_args(states, "containerd-config"))
    assert config.splitlines()[1] == "version = 3"
    assert 'sandbox = "registry.k8s.io/pause:3.10.2"' in config and "restrict_oom_score_adj = true" in config
    assert 'config_path = "/etc/containerd/certs.d"' in config
    assert state_args(states, "containerd-package")["version"] == lookup["containerd"]["version"]
    mirror = state_args(states, "containerd-mirror-registry.k8s.io")
    assert mirror["name"] == "/etc/containerd/certs.d/registry.k8s.io/hosts.toml"
    hosts = rendered.render_file(mirror)
    assert 'server = "https://registry.k8s.io"' in hosts and '[host."http://198.51.100.5:5000"]' in hosts


def test_the_pod_network_state_waits_for_orch_pod_network_then_routes_every_other_node(minion):
    rendered = minion(description(), minion_id="worker1")
    assert "kubernetes-pod-network-from-orch" in rendered.show_sls("kubernetes.network")
    pillar = {"k8sha_pod_network": {"cidr": "10.244.3.0/24", "routes": {"10.244.0.0/24": "198.51.100.21"}}}
    states = rendered.show_sls("kubernetes.network", pillar=pillar)
    assert '"subnet": "10.244.3.0/24"' in rendered.render_file(state_args(states, "kubernetes-cni-config"))
    assert "10.244.0.0/24 via 198.51.100.21" in state_args(states, "kubernetes-pod-routes")["contents"]
