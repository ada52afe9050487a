"""Names, addresses and paths of the lab. Everything the lab creates carries PREFIX."""

import ipaddress
import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]
LAB_DIR = pathlib.Path(os.environ.get("LAB_DIR", "/var/lib/k8sha-lab"))
PREFIX = os.environ.get("LAB_PREFIX", "k8shalab")

# A documentation range: never routed anywhere, and the bridge lives in its own namespace.
NETWORK = ipaddress.IPv4Network("198.51.100.0/24")
GATEWAY = "198.51.100.1"        # the bridge itself, inside the switch namespace
BRIDGE = "br0"


def _provider_masters():
    """The salt-masters every lab machine connects to: the lab provider's ``minion: master``
    (cloud/lab.providers.conf), the one place that names them."""
    import yaml  # pylint: disable=import-outside-toplevel

    masters = yaml.safe_load((REPO / "cloud" / "lab.providers.conf").read_text())["k8sha-lab"]["minion"]["master"]
    return [masters] if isinstance(masters, str) else list(masters)


# The first master serves the lab from `lab up`; the second only with `lab up --second-master`
# (issue 16: hot multi-master, shared keys, the same roots). Minions connect to both.
MASTER_ADDRESS, SECOND_MASTER_ADDRESS = _provider_masters()[:2]

SWITCH_NS = f"{PREFIX}-sw"
MASTER_NS = f"{PREFIX}-master"
SECOND_MASTER_NS = f"{PREFIX}-master-b"
MACHINES_DIR = LAB_DIR / "machines"
MASTER_DIR = LAB_DIR / "master"
SECOND_MASTER_DIR = LAB_DIR / "master-b"
SALT_CONFIG_DIR = MASTER_DIR / "etc" / "salt"
# Which Kubernetes the lab's nodes run: "real" (built from its modules: lab/lablib/gobuild.py) or,
# until every lab test runs on it, "standin" (lab/standin). `lab up --kubernetes real` records it here.
KUBERNETES_MODE_FILE = LAB_DIR / "kubernetes-mode"


def kubernetes_mode():
    mode = os.environ.get("LAB_KUBERNETES") or (
        KUBERNETES_MODE_FILE.read_text().strip() if KUBERNETES_MODE_FILE.exists() else "standin")
    if mode not in ("real", "standin"):
        raise ValueError(f"LAB_KUBERNETES={mode!r}: 'real' or 'standin'")
    return mode
VENV_BIN = REPO / ".venv" / "bin"


class MasterSite:
    """One lab salt-master: its namespace (its minion id too), address and directory."""

    def __init__(self, name, ns, address, directory):
        self.name, self.ns, self.address, self.dir = name, ns, address, directory
        self.config_dir = directory / "etc" / "salt"
        self.minion_id = ns


MASTERS = {"a": MasterSite("a", MASTER_NS, MASTER_ADDRESS, MASTER_DIR),
           "b": MasterSite("b", SECOND_MASTER_NS, SECOND_MASTER_ADDRESS, SECOND_MASTER_DIR)}


def machine_ns(name):
    return f"{PREFIX}-{name}"


def machine_name(name):
    """The nspawn machine name (the guest's hostname is the plain minion id)."""
    return f"{PREFIX}-{name}"


def _reader():
    """_utils/k8sha_description.py: the project's one reader of the description and defaults."""
    import importlib.util  # pylint: disable=import-outside-toplevel

    spec = importlib.util.spec_from_file_location("k8sha_description", REPO / "_utils" / "k8sha_description.py")
    reader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reader)
    return reader


def _served_opts(pillar_dir=None):
    return {"pillar_roots": {"base": [str(pillar_dir or REPO / "pillar")]}, "file_roots": {"base": [str(REPO / "salt")]}}


def defaults():
    """salt/k8sha/defaults.yaml, as the lab's master serves it."""
    return _reader().defaults(_served_opts())


def description(pillar_dir=None):
    """The cluster description the lab's master serves (pillar/cluster.sls over the defaults),
    through the project's one reader (_utils/k8sha_description.py); raises on an invalid one."""
    read = _reader().served(_served_opts(pillar_dir))
    if read["problems"]:
        raise ValueError("invalid cluster description:\n  - " + "\n  - ".join(read["problems"]))
    return read["cluster"]
