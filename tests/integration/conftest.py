"""A real salt-master and minions (pytest-salt-factories) over the project's tree."""

import shutil

import pytest
import yaml
from helpers import salt_render

REPO = salt_render.REPO
HEALING = salt_render.load("_utils", "k8sha_heal")

SECRET = "v2Kp9xQe"


@pytest.fixture(scope="package")
def vrrp_secret():
    return SECRET


@pytest.fixture(scope="package")
def heal_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("heal")


KUBEADM_FILES = ("kubelet.conf", "pki/ca.crt", "manifests/etcd.yaml", "manifests/kube-apiserver.yaml")


@pytest.fixture(scope="package")
def kube_dir(tmp_path_factory):
    """kubeadm's files of a control-plane member (empty files: kubeadm_member.status only
    looks for them), in place of /etc/kubernetes for the minions on this host."""
    root = tmp_path_factory.mktemp("kubernetes")
    for name in KUBEADM_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).touch()
    return root


@pytest.fixture(scope="package")
def pillar_root(tmp_path_factory, heal_dir, kube_dir):
    """The project's pillar/top.sls over a VRRPv2 description with a secret for the LBs.
    Addresses are on loopback: the healing orchestrations' checks (HTTPS to a node) must
    never leave this host. Repairs here only append to a file (heal_dir/restarts)."""
    root = tmp_path_factory.mktemp("pillar")
    shutil.copy(REPO / "pillar" / "top.sls", root / "top.sls")
    cluster = salt_render.description(
        vrrp={"version": 2, "advert_interval": 1}, api={"vip": "127.0.0.100", "prefix": 8},
        nodes=[{"name": "lb1", "role": "loadbalancer", "address": "127.0.0.11"},
               {"name": "lb2", "role": "loadbalancer", "address": "127.0.0.12"},
               {"name": "cp1", "role": "control_plane", "address": "127.0.0.21"},
               {"name": "cp2", "role": "control_plane", "address": "127.0.0.22"},
               {"name": "cp3", "role": "control_plane", "address": "127.0.0.23"},
               {"name": "worker1", "role": "worker", "address": "127.0.0.31"}])
    lookup = {"heal": {"state_dir": str(heal_dir), "verify_timeout": 2, "max_attempts": 3, "window": 900},
              "kubernetes": {"apiserver_restart": f"echo restarted >> {heal_dir}/restarts", "config_dir": str(kube_dir)}}
    (root / "cluster.sls").write_text(yaml.safe_dump({"cluster": cluster, "k8sha": {"lookup": lookup}}))
    (root / "secrets").mkdir()
    (root / "secrets" / "loadbalancer.sls").write_text(
        yaml.safe_dump({"cluster": {"vrrp": {"auth_pass": SECRET}}})
    )
    return root


@pytest.fixture(scope="package")
def master(salt_factories, pillar_root):
    overrides = {
        "file_roots": {"base": [str(REPO / "salt"), str(REPO / "srv")]},
        "pillar_roots": {"base": [str(pillar_root)]},
        "module_dirs": [str(REPO)],
        "loop_interval": 1,
        "reactor": HEALING.master_reactors(HEALING.catalogue()),  # the reactions a production master has
    }
    factory = salt_factories.salt_master_daemon("k8sha-master", overrides=overrides)
    with factory.started():
        yield factory


@pytest.fixture(scope="package")
def minions(master):
    started = {}
    factories = {
        minion_id: master.salt_minion_daemon(minion_id, overrides={"module_dirs": [str(REPO)], "loop_interval": 1})
        for minion_id in ("lb1", "cp1", "worker1")
    }
    try:
        for minion_id, factory in factories.items():
            factory.start()
            started[minion_id] = factory
        yield started
    finally:
        for factory in started.values():
            factory.terminate()


@pytest.fixture(scope="package")
def salt_cli(master, minions):
    return master.salt_cli(timeout=60)
