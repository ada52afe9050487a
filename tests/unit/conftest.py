import os
import shutil

import pytest
from helpers import salt_render


@pytest.fixture(scope="session")
def topology():
    return salt_render.load_module("cluster_topology")


@pytest.fixture(scope="session")
def rules():
    """The description's one reader and its validation (_utils/k8sha_description.py)."""
    return salt_render.load("_utils", "k8sha_description")


@pytest.fixture
def safe_dir(tmp_path):
    """A directory keepalived's script security accepts (root-owned, not group/world-writable)."""
    tmp_path.chmod(0o755)
    return tmp_path


@pytest.fixture
def minion(safe_dir):
    """Factory: a masterless minion rendering the project's states for a description.
    Helper scripts go to a private libexec directory so that keepalived can check them."""
    libexec = safe_dir / "libexec"
    libexec.mkdir(mode=0o755)

    def make(cluster=None, minion_id="lb1", secrets=None, lookup=None, opts=None):
        base_lookup = {"libexec_dir": str(libexec), "run_dir": str(safe_dir / "run")}
        if os.geteuid() == 0 and shutil.which("keepalived"):
            # keepalived -t refuses an unknown script user; the state creates it on real nodes.
            base_lookup["keepalived"] = {"script_user": "nobody"}
        lookup = salt_render.merged(base_lookup, lookup or {})
        return salt_render.RenderedMinion(
            safe_dir / f"minion-{minion_id}-{len(list(safe_dir.iterdir()))}",
            cluster if cluster is not None else salt_render.description(),
            minion_id=minion_id,
            secrets=secrets,
            lookup=lookup,
            opts=opts,
        )

    make.libexec = libexec
    return make
