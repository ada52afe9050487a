"""A real salt-master and minions (pytest-salt-factories) over the project's tree."""

import shutil

import pytest
import yaml

import salt_render

REPO = salt_render.REPO
SECRET = "v2Kp9xQe"


@pytest.fixture(scope="package")
def vrrp_secret():
    return SECRET


@pytest.fixture(scope="package")
def pillar_root(tmp_path_factory):
    """The project's pillar/top.sls over a VRRPv2 description with a secret for the LBs."""
    root = tmp_path_factory.mktemp("pillar")
    shutil.copy(REPO / "pillar" / "top.sls", root / "top.sls")
    cluster = salt_render.description(vrrp={"version": 2, "advert_interval": 1})
    (root / "cluster.sls").write_text(yaml.safe_dump({"cluster": cluster}))
    (root / "secrets").mkdir()
    (root / "secrets" / "loadbalancer.sls").write_text(
        yaml.safe_dump({"cluster": {"vrrp": {"auth_pass": SECRET}}})
    )
    return root


@pytest.fixture(scope="package")
def master(salt_factories, pillar_root):
    overrides = {
        "file_roots": {"base": [str(REPO / "salt")]},
        "pillar_roots": {"base": [str(pillar_root)]},
        "module_dirs": [str(REPO)],
        "loop_interval": 1,
    }
    factory = salt_factories.salt_master_daemon("k8sha-master", overrides=overrides)
    with factory.started():
        yield factory


@pytest.fixture(scope="package")
def minions(master):
    started = {}
    factories = {
        minion_id: master.salt_minion_daemon(minion_id, overrides={"module_dirs": [str(REPO)], "loop_interval": 1})
        for minion_id in ("lb1", "cp1")
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
