"""Pure parts of the kubeadm membership module and of the orchestration's master-side states:
redaction of join material, half-joined detection, the JoinConfiguration, the machine map."""

import importlib.util

import pytest
from helpers import salt_render

kubeadm_member = salt_render.load_module("kubeadm_member")
kubeadm_documents = salt_render.load("_utils", "k8sha_kubeadm")


def load_state_module(name):
    spec = importlib.util.spec_from_file_location(name, salt_render.REPO / "_states" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_redaction_hides_tokens_certificate_keys_and_given_secrets():
    text = ("kubeadm join 198.51.100.100:6443 --token abcdef.0123456789abcdef "
            "--certificate-key " + "a1" * 32 + " password=hunter2 sha256:" + "0f" * 32)
    redacted = kubeadm_documents.redact(text, ["hunter2"])
    assert "abcdef.0123456789abcdef" not in redacted and "a1" * 32 not in redacted and "hunter2" not in redacted
    assert redacted.count("<redacted>") >= 3 and "198.51.100.100:6443" in redacted


@pytest.mark.parametrize("present, control_plane, state", [
    ({}, True, "absent"),
    ({"kubelet_conf": 1, "ca": 1, "etcd_manifest": 1, "apiserver_manifest": 1}, True, "member"),
    ({"kubelet_conf": 1, "ca": 1}, False, "member"),
    # A control-plane join that stopped after etcd: certificates and etcd, no kubelet.conf.
    ({"ca": 1, "etcd_manifest": 1}, True, "half-joined"),
    ({"etcd_data": 1}, True, "half-joined"),
    ({"kubelet_conf": 1, "ca": 1}, True, "half-joined"),
])
def test_membership_is_classified_from_kubeadms_files(present, control_plane, state):
    found, reason = kubeadm_member.classify(present, control_plane)
    assert found == state
    if state == "half-joined":
        assert "missing" in reason


def test_join_configuration_for_a_control_plane_and_a_worker():
    api = {"vip": "198.51.100.100", "port": 6443}
    material = {"token": "abcdef.0123456789abcdef", "ca_cert_hash": "sha256:" + "0" * 64,
                "control_plane": True, "certificate_key": "f" * 64}
    socket = "unix:///run/containerd/containerd.sock"
    settings = {"cri_socket": socket, "ignore_preflight_errors": ["SystemVerification"]}
    config = kubeadm_documents.join_configuration({"name": "cp2", "address": "198.51.100.22"}, material, api, "1.31",
                                                  settings)
    assert config["apiVersion"] == "kubeadm.k8s.io/v1beta4" and config["kind"] == "JoinConfiguration"
    assert config["discovery"]["bootstrapToken"] == {"apiServerEndpoint": "198.51.100.100:6443",
                                                     "token": material["token"], "caCertHashes": [material["ca_cert_hash"]]}
    assert config["controlPlane"] == {"localAPIEndpoint": {"advertiseAddress": "198.51.100.22", "bindPort": 6443},
                                      "certificateKey": "f" * 64}
    worker = kubeadm_documents.join_configuration({"name": "worker1", "address": "198.51.100.31"},
                                               dict(material, control_plane=False), api, "1.30.4",
                                               dict(settings, ignore_preflight_errors=[]))
    assert "controlPlane" not in worker and worker["apiVersion"] == "kubeadm.k8s.io/v1beta3"
    # The kubelet's node IP is the description's address; v1beta3 takes its arguments as a map.
    assert worker["nodeRegistration"] == {"name": "worker1", "criSocket": socket,
                                          "kubeletExtraArgs": {"node-ip": "198.51.100.31"}}
    assert config["nodeRegistration"] == {"name": "cp2", "criSocket": socket,
                                          "kubeletExtraArgs": [{"name": "node-ip", "value": "198.51.100.22"}],
                                          "ignorePreflightErrors": ["SystemVerification"]}


def test_machines_are_mapped_from_the_description_one_profile_per_role():
    machines = load_state_module("cluster_machines")
    profiles = {"loadbalancer": "lab-loadbalancer", "control_plane": "lab-control-plane", "worker": "lab-worker"}
    data = machines.machines_map(salt_render.description(), profiles)
    assert data["lab-loadbalancer"] == [{"lb1": {"address": "198.51.100.11"}}, {"lb2": {"address": "198.51.100.12"}}]
    assert [next(iter(m)) for m in data["lab-control-plane"]] == ["cp1", "cp2", "cp3"]
    assert data["lab-worker"] == [{"worker1": {"address": "198.51.100.31"}}]
    with pytest.raises(ValueError, match="no profile for role worker"):
        machines.machines_map(salt_render.description(), {k: v for k, v in profiles.items() if k != "worker"})


def test_a_version_change_on_a_member_is_refused_with_the_way_back():
    same = {"kubeadm": "1.31.2-1.1", "kubelet": "1.31.2-1.1", "kubectl": "1.31.2-1.1"}
    assert kubeadm_member.version_mismatch(same, "1.31", "cp1") is None
    assert kubeadm_member.version_mismatch(same, "1.31.2", "cp1") is None
    refusal = kubeadm_member.version_mismatch(same, "1.32", "cp1")
    assert refusal.startswith("cluster.kubernetes.version: '1.32', but cp1 is a member of the cluster with kubeadm 1.31.2, "
                              "kubectl 1.31.2, kubelet 1.31.2")
    assert "orch.upgrade" in refusal and "set cluster.kubernetes.version back to '1.31' or '1.31.2'" in refusal
    assert kubeadm_member.version_mismatch(same, "1.31.3", "cp1") is not None
    assert kubeadm_member.version_mismatch(same, "1.3", "cp1") is not None  # not a prefix of 1.31


def test_a_node_left_half_upgraded_is_refused_a_plain_state_apply():
    """kubeadm upgraded, the kubelet not yet (an upgrade stopped between the two): a highstate must
    not move the kubelet outside orch.upgrade's drain."""
    halfway = {"kubeadm": "1.32.0-1.1", "kubelet": "1.31.2-1.1", "kubectl": "1.31.2-1.1"}
    refusal = kubeadm_member.version_mismatch(halfway, "1.32", "cp2")
    assert "kubectl 1.31.2, kubelet 1.31.2" in refusal and "kubeadm 1.32" not in refusal
    assert "orch.upgrade" in refusal


def test_the_issuer_gets_token_and_certificate_key_in_a_config_document_not_arguments():
    managed = {"ClusterConfiguration": {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "ClusterConfiguration"},
               "InitConfiguration": {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "InitConfiguration",
                                     "localAPIEndpoint": {"advertiseAddress": "198.51.100.21", "bindPort": 6443}}}
    material = {"token": "abcdef.0123456789abcdef", "control_plane": True, "certificate_key": "f" * 64, "ttl": "1h"}
    cluster, init = kubeadm_documents.issuing_configuration(managed, "cp2", material)
    assert cluster is managed["ClusterConfiguration"]
    assert init["bootstrapTokens"] == [{"token": "abcdef.0123456789abcdef", "ttl": "1h", "description": "k8sha: join of cp2",
                                        "usages": ["signing", "authentication"],
                                        "groups": ["system:bootstrappers:kubeadm:default-node-token"]}]
    assert init["certificateKey"] == "f" * 64 and init["localAPIEndpoint"]["advertiseAddress"] == "198.51.100.21"
    assert "bootstrapTokens" not in managed["InitConfiguration"]  # the managed file is left as it is
    worker = kubeadm_documents.issuing_configuration(managed, "worker1", dict(material, control_plane=False))[1]
    assert "certificateKey" not in worker


def test_each_node_routes_every_other_nodes_pod_cidr_and_a_node_without_one_is_no_route():
    networks = {"cp1": {"cidr": "10.244.0.0/24", "address": "198.51.100.21"},
                "worker1": {"cidr": "10.244.3.0/24", "address": "198.51.100.31"},
                "worker2": {"cidr": None, "address": "198.51.100.32"}}     # not given one yet
    assert kubeadm_documents.pod_network_of(networks, "cp1") == {
        "cidr": "10.244.0.0/24", "routes": {"10.244.3.0/24": "198.51.100.31"}}
    assert kubeadm_documents.pod_network_of(networks, "worker2") == {
        "cidr": None, "routes": {"10.244.0.0/24": "198.51.100.21", "10.244.3.0/24": "198.51.100.31"}}
