"""The lab's Kubernetes build (lab/lablib): a description naming a release the lab has not built
is refused with the command that builds it; the pinned modules require each staging module at
the release's own version."""

import pytest

from lablib import gobuild, repos
from lablib.run import LabError


def test_a_release_the_lab_has_not_built_names_the_command_that_builds_it(tmp_path):
    (tmp_path / "v1.36").mkdir()
    (tmp_path / "v1.36" / "Packages").write_text("Package: kubeadm\nVersion: 1.36.3-1.1\n")
    repos.check_built("1.36.3", tmp_path)
    repos.check_built("1.36", tmp_path)
    with pytest.raises(LabError, match=r"cluster.kubernetes.version: .* 1.37.2; build it with `lab/lab build v1.37.2`"):
        repos.check_built("1.37.2", tmp_path)
    with pytest.raises(LabError, match=r"`lab/lab pin kubernetes v1.36.9`, then `lab/lab build v1.36.9`"):
        repos.check_built("1.36.9", tmp_path)


@pytest.mark.parametrize("version", gobuild.pinned_versions("kubernetes"))
def test_each_pinned_release_requires_and_replaces_its_staging_modules_at_its_own_version(version):
    gomod = (gobuild.COMPONENTS["kubernetes"].pin_dir(version) / "go.mod").read_text()
    staging = "v0." + version.split(".", 1)[1]
    assert f"\tk8s.io/kubernetes {version}" in gomod
    for module in ("k8s.io/api", "k8s.io/client-go", "k8s.io/component-base", "k8s.io/kubelet"):
        assert f"\t{module} {staging}" in gomod and f"\t{module} => {module} {staging}" in gomod
    assert all(f"\tk8s.io/kubernetes/cmd/{cmd}" in gomod for cmd in gobuild.KUBERNETES_COMMANDS)
    assert (gobuild.COMPONENTS["kubernetes"].pin_dir(version) / "go.sum").stat().st_size > 0


def test_the_version_is_stamped_where_kubectl_and_kubeadm_read_it():
    flags = gobuild._kubernetes_ldflags("v1.36.3")  # pylint: disable=protected-access
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {package}.gitVersion=v1.36.3" in flags and f"-X {package}.gitMinor=36" in flags


def test_an_image_is_one_deterministic_layer_whose_digests_match_its_config(tmp_path, monkeypatch):
    import hashlib
    import json

    from lablib import images  # pylint: disable=import-outside-toplevel

    monkeypatch.setattr(images, "OCI_DIR", tmp_path)
    binary = tmp_path / "kube-apiserver"
    binary.write_bytes(b"\x7fELF not really")
    first = images.oci_layout("registry.k8s.io/kube-apiserver:v1.36.3", {"usr/local/bin/kube-apiserver": binary},
                              ["/usr/local/bin/kube-apiserver"])
    index = json.loads((first / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((first / "blobs" / "sha256" / manifest_digest).read_text())
    layer = (first / "blobs" / "sha256" / manifest["layers"][0]["digest"].split(":")[1]).read_bytes()
    config = json.loads((first / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]).read_text())
    assert config["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(layer).hexdigest()}"]
    assert config["config"]["Entrypoint"] == ["/usr/local/bin/kube-apiserver"]
    # The same inputs make the same image: a rebuild pushes nothing new.
    again = images.oci_layout("registry.k8s.io/kube-apiserver:v1.36.3", {"usr/local/bin/kube-apiserver": binary},
                              ["/usr/local/bin/kube-apiserver"])
    assert json.loads((again / "index.json").read_text()) == index
