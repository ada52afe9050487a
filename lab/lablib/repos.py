"""The lab's package repositories, made from the binaries lab/lablib/gobuild.py builds, and laid out
as production's are, so the production states install from them unchanged (only the URL differs):

  $LAB_DIR/repos/kubernetes/v1.36/   pkgs.k8s.io's layout: one flat repository per minor version
                                     (kubeadm, kubelet, kubectl, cri-tools, kubernetes-cni)
  $LAB_DIR/repos/debian/             the machines' Debian mirror: the Debian packages the states
                                     install (lab/image/build), and containerd 2 and runc, which
                                     production takes from its distribution or containerd's packages

Every lab machine sees $LAB_DIR/repos read-only at /opt/k8sha-lab (lab/machine-launcher).
"""

import hashlib
import pathlib
import shutil
import subprocess
import tempfile

from . import config, gobuild
from .run import LabError

REPOS = config.LAB_DIR / "repos"
KUBERNETES_REPOS = REPOS / "kubernetes"
DEBIAN_REPO = REPOS / "debian"
PACKAGE_REVISION = "1.1"          # pkgs.k8s.io's revision suffix: 1.36.3-1.1

UNITS = pathlib.Path(__file__).resolve().parents[1] / "build" / "units"


def _deb(repo, name, version, files, *, depends="", description="", conffiles=()):
    """One binary package: files maps its path in the package to (source, mode)."""
    with tempfile.TemporaryDirectory() as work:
        root = pathlib.Path(work) / name
        (root / "DEBIAN").mkdir(parents=True)
        for path, (source, mode) in files.items():
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            target.chmod(mode)
        control = [f"Package: {name}", f"Version: {version}", "Architecture: amd64",
                   "Maintainer: k8sha lab <root@localhost>"]
        control += [f"Depends: {depends}"] if depends else []
        control += [f"Description: {description}", " Built from its Go module for the k8sha one-machine lab."]
        (root / "DEBIAN" / "control").write_text("\n".join(control) + "\n")
        if conffiles:
            (root / "DEBIAN" / "conffiles").write_text("".join(f"{c}\n" for c in conffiles))
        target = repo / f"{name}_{version}_amd64.deb"
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", str(root), str(target)],
                       check=True, capture_output=True)
    return target


def _index(repo, label):
    """Packages and Release, as apt reads a flat repository (`deb [trusted=yes] URL /`)."""
    packages = subprocess.run(["dpkg-scanpackages", "-m", "."], cwd=repo, capture_output=True, text=True,
                              check=True).stdout
    (repo / "Packages").write_text(packages)
    digest = subprocess.run(["sha256sum", "Packages"], cwd=repo, capture_output=True, text=True,
                            check=True).stdout.split()[0]
    (repo / "Release").write_text(f"Origin: k8sha-lab\nLabel: {label}\nDate: Thu, 01 Jan 2026 00:00:00 UTC\n"
                                  f"SHA256:\n {digest} {(repo / 'Packages').stat().st_size} Packages\n")


def _inputs(*bin_dirs):
    """What a repository is made of: the builds' stamps (lab/lablib/gobuild.py) and this file."""
    digest = hashlib.sha256(pathlib.Path(__file__).read_bytes())
    for directory in bin_dirs:
        digest.update(" ".join(sorted(p.name for p in directory.parent.glob("built-*"))).encode())
    return digest.hexdigest()[:16]


def kubernetes_repo(version, runtime_bins):
    """pkgs.k8s.io's v<minor> repository with this release's packages (one release per minor)."""
    bins = gobuild.COMPONENTS["kubernetes"].out_dir(version) / "bin"
    minor = ".".join(version.lstrip("v").split(".")[:2])
    repo = KUBERNETES_REPOS / f"v{minor}"
    inputs = _inputs(bins, runtime_bins["cri-tools"], runtime_bins["cni-plugins"])
    if (repo / "inputs").exists() and (repo / "inputs").read_text() == inputs:
        return repo
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    pkg_version = f"{version.lstrip('v')}-{PACKAGE_REVISION}"
    cri_version = f"{gobuild.RUNTIME_VERSIONS['cri-tools'].lstrip('v')}-{PACKAGE_REVISION}"
    cni_version = f"{gobuild.RUNTIME_VERSIONS['cni-plugins'].lstrip('v')}-{PACKAGE_REVISION}"
    _deb(repo, "cri-tools", cri_version, {"/usr/bin/crictl": (runtime_bins["cri-tools"] / "crictl", 0o755)},
         description="crictl, the CRI command line")
    _deb(repo, "kubernetes-cni", cni_version,
         {f"/opt/cni/bin/{p.name}": (p, 0o755) for p in sorted(runtime_bins["cni-plugins"].iterdir())},
         description="the CNI plugins (containernetworking/plugins)")
    # As pkgs.k8s.io's: the kubelet unit and kubeadm's drop-in come with the kubelet and kubeadm.
    _deb(repo, "kubelet", pkg_version,
         {"/usr/bin/kubelet": (bins / "kubelet", 0o755),
          "/usr/lib/systemd/system/kubelet.service": (UNITS / "kubelet.service", 0o644)},
         depends=f"kubernetes-cni (>= {cni_version.split('-')[0]})", description="the Kubernetes node agent")
    _deb(repo, "kubectl", pkg_version, {"/usr/bin/kubectl": (bins / "kubectl", 0o755)},
         description="the Kubernetes command line")
    _deb(repo, "kubeadm", pkg_version,
         {"/usr/bin/kubeadm": (bins / "kubeadm", 0o755),
          "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf": (UNITS / "10-kubeadm.conf", 0o644)},
         depends="cri-tools (>= 1.30.0)", description="the Kubernetes cluster bootstrapping tool")
    _index(repo, f"k8sha lab: pkgs.k8s.io v{minor}, built from k8s.io/kubernetes {version}")
    (repo / "inputs").write_text(inputs)
    return repo


def runtime_debs(runtime_bins):
    """containerd 2 and runc into the lab's Debian mirror (its other packages: lab/image/build)."""
    DEBIAN_REPO.mkdir(parents=True, exist_ok=True)
    inputs = _inputs(runtime_bins["containerd"], runtime_bins["runc"])
    stamp = DEBIAN_REPO / "inputs-runtime"
    if stamp.exists() and stamp.read_text() == inputs and list(DEBIAN_REPO.glob("containerd_*.deb")):
        return
    for old in [*DEBIAN_REPO.glob("containerd_*.deb"), *DEBIAN_REPO.glob("runc_*.deb")]:
        old.unlink()
    containerd = runtime_bins["containerd"]
    _deb(DEBIAN_REPO, "runc", gobuild.RUNTIME_VERSIONS["runc"].lstrip("v") + "-0k8shalab1",
         {"/usr/sbin/runc": (runtime_bins["runc"] / "runc", 0o755)}, description="the OCI container runtime")
    _deb(DEBIAN_REPO, "containerd", gobuild.RUNTIME_VERSIONS["containerd"].lstrip("v") + "-0k8shalab1",
         {**{f"/usr/bin/{b}": (containerd / b, 0o755) for b in ("containerd", "containerd-shim-runc-v2", "ctr")},
          "/usr/lib/systemd/system/containerd.service": (UNITS / "containerd.service", 0o644)},
         # The runc built beside it (the image's Debian runc is older).
         depends=f"runc (>= {gobuild.RUNTIME_VERSIONS['runc'].lstrip('v')})", description="containerd 2, the container runtime")
    _index(DEBIAN_REPO, "k8sha lab: the machines' Debian mirror")
    stamp.write_text(inputs)


def check_built(version, repos=None):
    """A description naming a Kubernetes release the lab has not built gets the command that
    builds it (and pins it first, when it is not pinned in lab/build/kubernetes/)."""
    version = str(version).lstrip("v")
    minor = ".".join(version.split(".")[:2])
    packages = (repos or KUBERNETES_REPOS) / f"v{minor}" / "Packages"
    release = f"v{version}" if version.count(".") == 2 else f"v{minor}.PATCH"
    if not packages.exists() or (version.count(".") == 2 and f"Version: {version}-" not in packages.read_text()):
        pinned = f"v{version}" in gobuild.pinned_versions("kubernetes")
        how = f"`lab/lab build {release}`" if pinned else f"`lab/lab pin kubernetes {release}`, then `lab/lab build {release}`"
        raise LabError(f"cluster.kubernetes.version: the lab has not built Kubernetes {version}; build it with {how}")
