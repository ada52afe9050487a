"""The lab's binaries, built from Go modules the module proxy serves (nothing else is reachable).

Each component has a small Go module of ours under lab/build/<component>/<version>/ (go.mod and
go.sum committed, written by `lab/lab pin`): it requires the upstream module at that version and
names the commands to build as `tool` lines. `lab/lab build` compiles them into
$LAB_DIR/build/<component>-<version>/bin/, one line per binary with its time. Go's module and build
caches live under $LAB_DIR/go, so a rebuild is incremental and CI on the same machine reuses them.
"""

import hashlib
import json
import os
import pathlib
import re
import subprocess
import time

from . import config
from .run import LabError

BUILD_DIR = config.REPO / "lab" / "build"
GO_DIR = config.LAB_DIR / "go"
OUT_DIR = config.LAB_DIR / "build"

KUBERNETES_COMMANDS = ("kubeadm", "kubectl", "kubelet", "kube-apiserver", "kube-controller-manager",
                       "kube-scheduler", "kube-proxy")


class Component:
    """One upstream project: the modules it needs (at the component's version unless pinned
    apart), the commands it builds (binary name -> package), and how."""

    def __init__(self, name, module, commands, *, extra_modules=(), cgo=False, tags=(), ldflags=None):
        self.name, self.module, self.commands = name, module, commands
        self.extra_modules, self.cgo, self.tags, self.ldflags = extra_modules, cgo, tags, ldflags

    def pin_dir(self, version):
        local = BUILD_DIR / self.name
        return local if (local / "main.go").exists() else local / version

    def out_dir(self, version):
        return OUT_DIR / f"{self.name}-{version}"


def _kubernetes_ldflags(version):
    """What the release build stamps (hack/lib/version.sh): the version `kubectl version`,
    `kubeadm version` and every server report, in component-base and client-go."""
    major, minor, _ = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", version).groups()
    flags = []
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {package}.gitVersion={version}", f"-X {package}.gitMajor={major}",
                  f"-X {package}.gitMinor={minor}", f"-X {package}.gitTreeState=clean",
                  f"-X {package}.buildDate=1970-01-01T00:00:00Z"]
    return flags


COMPONENTS = {c.name: c for c in (
    Component("kubernetes", "k8s.io/kubernetes",
              {cmd: f"k8s.io/kubernetes/cmd/{cmd}" for cmd in KUBERNETES_COMMANDS}, ldflags=_kubernetes_ldflags),
    Component("etcd", "go.etcd.io/etcd/server/v3", {"etcd": "go.etcd.io/etcd/server/v3"}),
    Component("etcdctl", "go.etcd.io/etcd/etcdctl/v3", {"etcdctl": "go.etcd.io/etcd/etcdctl/v3"}),
    Component("containerd", "github.com/containerd/containerd/v2",
              {cmd: f"github.com/containerd/containerd/v2/cmd/{cmd}"
               for cmd in ("containerd", "containerd-shim-runc-v2", "ctr")},
              tags=("no_btrfs", "no_devmapper", "no_zfs")),
    # runc's nsenter is C: it needs cgo. With libseccomp, as distributions build it.
    Component("runc", "github.com/opencontainers/runc", {"runc": "github.com/opencontainers/runc"},
              cgo=True, tags=("seccomp",)),
    Component("cri-tools", "sigs.k8s.io/cri-tools", {"crictl": "sigs.k8s.io/cri-tools/cmd/crictl"}),
    Component("cni-plugins", "github.com/containernetworking/plugins",
              {name: f"github.com/containernetworking/plugins/plugins/{path}" for name, path in (
                  ("bridge", "main/bridge"), ("loopback", "main/loopback"), ("host-local", "ipam/host-local"),
                  ("portmap", "meta/portmap"))}),
    Component("coredns", "github.com/coredns/coredns", {"coredns": "github.com/coredns/coredns"}),
    # The lab's test workload (lab/build/hello: our own code, in its own module).
    Component("hello", "k8sha.lab/build/hello", {"hello": "."}),
    # The lab's image tool and registry (crane registry serve), not part of a node.
    Component("crane", "github.com/google/go-containerregistry",
              {"crane": "github.com/google/go-containerregistry/cmd/crane"}),
)}

# What the lab builds beside Kubernetes (one version each; the Kubernetes releases are the ones
# pinned under lab/build/kubernetes/). etcd's version is kubeadm's own choice for each release
# (kubeadm_versions); CoreDNS's is the lab's, since the proxy lacks the one kubeadm 1.36 names.
RUNTIME_VERSIONS = {"containerd": "v2.2.9", "runc": "v1.3.7", "cri-tools": "v1.37.0",
                    "cni-plugins": "v1.10.0", "crane": "v0.22.1", "etcdctl": "v3.6.8", "hello": "v1"}
# kubeadm 1.36 names CoreDNS v1.14.2, which the proxy does not serve: the lab's description sets
# this tag (dns.imageTag, pillar/lab.sls), the oldest served one that 1.36 and 1.37 both accept.
LAB_COREDNS_VERSION = "v1.14.6"


def go_env():
    env = dict(os.environ)
    env.update(GOMODCACHE=str(GO_DIR / "mod"), GOCACHE=str(GO_DIR / "cache"), GOPATH=str(GO_DIR / "path"),
               GOFLAGS="-modcacherw -buildvcs=false", GOTOOLCHAIN="local")
    return env


def _go(args, cwd, cgo=False):
    env = go_env()
    env["CGO_ENABLED"] = "1" if cgo else "0"
    result = subprocess.run(["go", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise LabError(f"go {' '.join(args[:2])} in {cwd} failed:\n{result.stderr.strip()[-3000:]}")
    return result.stdout


def pinned_versions(name):
    """The versions pinned for a component (directories with a go.sum)."""
    base = BUILD_DIR / name
    return sorted((p.parent.name for p in base.glob("v*/go.sum")), key=_version_key)


def _version_key(version):
    return tuple(int(n) for n in re.findall(r"\d+", version))


def upstream_gomod(module, version):
    """The upstream go.mod's text, from the module proxy; a version it does not serve is named."""
    result = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"], env=go_env(),
                            capture_output=True, text=True)
    info = json.loads(result.stdout or "{}")
    if result.returncode != 0 or "GoMod" not in info:
        raise LabError(f"the Go module proxy does not serve {module} {version}: "
                       f"{info.get('Error') or result.stderr.strip()}")
    return pathlib.Path(info["GoMod"]).read_text()


def pin(name, version):
    """Write and tidy lab/build/<name>/<version>/go.mod: the upstream module at that version, and
    for Kubernetes each staging module it requires at v0.0.0 required and replaced at the
    release's v0.<minor>.<patch> (its own replace directives apply only inside k8s.io/kubernetes)."""
    component = COMPONENTS[name]
    upstream = upstream_gomod(component.module, version)
    go_line = re.search(r"^go (\S+)", upstream, re.M).group(0)
    requires = {component.module: version}
    replaces = {}
    if name == "kubernetes":
        staging_version = "v0." + version.split(".", 1)[1]
        for module in re.findall(r"^\t(k8s\.io/[a-z0-9-]+) v0\.0\.0$", upstream, re.M):
            requires[module] = replaces[module] = staging_version
    lines = [f"// Written by `lab/lab pin {name} {version}`: the lab builds {component.module} {version}.",
             f"module k8sha.lab/build/{name}", "", go_line, "", "require ("]
    lines += [f"\t{m} {v}" for m, v in requires.items()] + [")", ""]
    if replaces:
        lines += ["replace ("] + [f"\t{m} => {m} {v}" for m, v in replaces.items()] + [")", ""]
    lines += ["tool ("] + [f"\t{p}" for p in component.commands.values()] + [")", ""]
    directory = component.pin_dir(version)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "go.mod").write_text("\n".join(lines))
    (directory / "go.sum").unlink(missing_ok=True)
    _go(["mod", "tidy"], directory)
    return directory


def _stamp(component, version):
    digest = hashlib.sha256(pathlib.Path(__file__).read_bytes())
    for f in sorted(component.pin_dir(version).glob("go.*")) + sorted(component.pin_dir(version).glob("*.go")):
        digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def build(name, version, log=print):
    """Build one pinned component; returns its bin/ directory. Cached by the module's pins."""
    component = COMPONENTS[name]
    directory = component.pin_dir(version)
    if not (directory / "go.mod").exists():
        raise LabError(f"{name} {version} is not pinned in lab/build/{name}/; pin it: lab/lab pin {name} {version}")
    out = component.out_dir(version)
    stamp = out / f"built-{_stamp(component, version)}"
    if stamp.exists():
        return out / "bin"
    (out / "bin").mkdir(parents=True, exist_ok=True)
    for old in out.glob("built-*"):
        old.unlink()
    ldflags = " ".join(["-s", "-w", *(component.ldflags(version) if component.ldflags else [])])
    started = time.monotonic()
    for binary, package in component.commands.items():
        t0 = time.monotonic()
        target = out / "bin" / binary
        args = ["build", "-trimpath", "-ldflags", ldflags, "-o", f"{target}.new"]
        if component.tags:
            args += ["-tags", ",".join(component.tags)]
        _go([*args, package], directory, cgo=component.cgo)
        os.replace(f"{target}.new", target)
        log(f"[build {time.strftime('%T')}] {name} {version}: {binary:<24} {time.monotonic() - t0:5.0f} s")
    if name == "kubernetes":
        _build_pause(version, out / "bin", log)
    stamp.touch()
    log(f"[build {time.strftime('%T')}] {name} {version}: done in {time.monotonic() - started:.0f} s, {out / 'bin'}")
    return out / "bin"


def _build_pause(version, bin_dir, log):
    """The pause container's program is C in the Kubernetes module (build/pause/linux/pause.c):
    compiled statically, as the pause image's build does."""
    source = GO_DIR / "mod" / f"k8s.io/kubernetes@{version}" / "build" / "pause" / "linux" / "pause.c"
    tag = kubeadm_versions(version)["pause"]
    t0 = time.monotonic()
    result = subprocess.run(["gcc", "-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{tag}", "-o",
                             str(bin_dir / "pause"), str(source)], capture_output=True, text=True)
    if result.returncode != 0:
        raise LabError(f"compiling {source} failed: {result.stderr.strip()}")
    log(f"[build {time.strftime('%T')}] kubernetes {version}: {'pause':<24} {time.monotonic() - t0:5.0f} s")


def kubeadm_versions(version):
    """The image versions kubeadm of this release deploys, read from its constants in the
    module source, so the lab builds exactly what kubeadm will ask for."""
    constants = (GO_DIR / "mod" / f"k8s.io/kubernetes@{version}" / "cmd" / "kubeadm" / "app" / "constants"
                 / "constants.go")
    if not constants.exists():
        upstream_gomod("k8s.io/kubernetes", version)
        subprocess.run(["go", "mod", "download", f"k8s.io/kubernetes@{version}"], env=go_env(), check=True)
    text = constants.read_text()

    def constant(name):
        return re.search(rf'^\s*{name}\s*=\s*"([^"]+)"', text, re.M).group(1)

    return {"etcd": constant("DefaultEtcdVersion"), "pause": constant("PauseVersion"),
            "coredns": constant("CoreDNSVersion")}


def etcd_module_version(kubernetes_version):
    """etcd image tag 3.6.8-0 -> module version v3.6.8."""
    return "v" + kubeadm_versions(kubernetes_version)["etcd"].split("-")[0]


def build_all(kubernetes_versions=None, log=print):
    """Everything the lab's nodes run: the runtime once, then per Kubernetes release its
    binaries, the etcd kubeadm deploys with it, and CoreDNS. Returns {component: bin dir} of the
    runtime and {version: {component: bin dir}} of the releases."""
    versions = kubernetes_versions or pinned_versions("kubernetes")
    for version in versions:
        if version not in pinned_versions("kubernetes"):
            raise LabError(f"Kubernetes {version} is not pinned in lab/build/kubernetes/; "
                           f"pin it (the module proxy must serve it): lab/lab pin kubernetes {version}")
    started = time.monotonic()
    runtime = {name: build(name, v, log) for name, v in RUNTIME_VERSIONS.items()}
    releases = {}
    for version in versions:
        releases[version] = {"kubernetes": build("kubernetes", version, log),
                             "etcd": build("etcd", etcd_module_version(version), log),
                             "coredns": build("coredns", LAB_COREDNS_VERSION, log)}
    log(f"[build {time.strftime('%T')}] every binary in {time.monotonic() - started:.0f} s")
    return runtime, releases
