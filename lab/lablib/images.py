"""The container images the lab's nodes run, built here from the binaries lab/lablib/gobuild.py
makes, and served by the lab's registry (crane's, in the master's namespace).

kubeadm's names are kept (registry.k8s.io/kube-apiserver:v1.36.3, registry.k8s.io/etcd:3.6.8-0, ...):
each node's containerd takes registry.k8s.io from the lab registry as its mirror (pillar/lab.sls,
containerd's hosts.toml), as an air-gapped site does, so nothing is pulled from outside and
kubeadm's manifests are unchanged. Each image is one layer: the binary, and for kube-proxy the
nft command with its libraries (from the host, the same Debian release as the machines).
"""

import hashlib
import io
import json
import pathlib
import shutil
import subprocess
import tarfile
import time

from . import config, gobuild, monitoring, secgroups
from .run import LabError, run

OCI_DIR = config.LAB_DIR / "oci"
REGISTRY_DATA = config.LAB_DIR / "registry"
REGISTRY_PORT = secgroups.REGISTRY_PORT
KUBEADM_REGISTRY = "registry.k8s.io"
LAB_REPOSITORY = "k8sha-lab"      # the lab's own images: <registry address>/k8sha-lab/<name>
PATH = "/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin"
ETC_FILES = {"etc/passwd": "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n",
             "etc/group": "root:x:0:\nnogroup:x:65534:\n", "etc/nsswitch.conf": "hosts: files dns\n"}


def registry_address():
    return f"{config.MASTER_ADDRESS}:{REGISTRY_PORT}"


def _layer(files):
    """A deterministic tar layer: files maps a path in the image to a host path or text."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        made = set()
        for path in sorted(files):
            parts = pathlib.PurePosixPath(path).parts
            for depth in range(1, len(parts)):
                directory = "/".join(parts[:depth])
                if directory not in made:
                    info = tarfile.TarInfo(directory)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                    made.add(directory)
            source = files[path]
            data = source.encode() if isinstance(source, str) else pathlib.Path(source).read_bytes()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644 if isinstance(source, str) else 0o755
            tar.addfile(info, io.BytesIO(data))
    # Uncompressed: the registry is on the lab's own bridge, and gzip of 100 MB binaries costs
    # more time than it saves.
    return raw.getvalue()


def _blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def oci_layout(name, files, entrypoint):
    """An OCI image layout directory (what `crane push` reads) for one single-layer image."""
    layout = OCI_DIR / name.replace("/", "_").replace(":", "_")
    shutil.rmtree(layout, ignore_errors=True)
    layout.mkdir(parents=True)
    uncompressed = _layer({**ETC_FILES, **files})
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar", **_blob(layout, uncompressed)}
    image_config = {"architecture": "amd64", "os": "linux",
                    "config": {"Env": [f"PATH={PATH}"], "Entrypoint": entrypoint, "WorkingDir": "/"},
                    "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(uncompressed).hexdigest()}"]}}
    config_blob = {"mediaType": "application/vnd.oci.image.config.v1+json",
                   **_blob(layout, json.dumps(image_config, sort_keys=True).encode())}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config_blob, "layers": [layer]}
    manifest_blob = _blob(layout, json.dumps(manifest, sort_keys=True).encode())
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({
        "schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                           **manifest_blob}]}))
    return layout


def _with_libraries(binary):
    """A dynamically linked host program and the libraries it loads (ldd), at their paths."""
    files = {str(binary).lstrip("/"): binary}
    for line in subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout.splitlines():
        path = line.split("=>")[-1].split("(")[0].strip()
        if path.startswith("/"):
            files[path.lstrip("/")] = pathlib.Path(path).resolve()
    return files


def release_images(version, bins):
    """name:tag -> (files, entrypoint) of every image kubeadm deploys for this release."""
    kube, etcd, coredns = bins["kubernetes"], bins["etcd"], bins["coredns"]
    wanted = gobuild.kubeadm_versions(version)
    images = {f"{KUBEADM_REGISTRY}/{cmd}:{version}": ({f"usr/local/bin/{cmd}": kube / cmd}, [f"/usr/local/bin/{cmd}"])
              for cmd in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")}
    # kube-proxy's nftables mode runs the nft command.
    images[f"{KUBEADM_REGISTRY}/kube-proxy:{version}"] = (
        {"usr/local/bin/kube-proxy": kube / "kube-proxy", **_with_libraries(pathlib.Path("/usr/sbin/nft"))},
        ["/usr/local/bin/kube-proxy"])
    images[f"{KUBEADM_REGISTRY}/etcd:{wanted['etcd']}"] = ({"usr/local/bin/etcd": etcd / "etcd"}, ["/usr/local/bin/etcd"])
    images[f"{KUBEADM_REGISTRY}/pause:{wanted['pause']}"] = ({"pause": kube / "pause"}, ["/pause"])
    images[f"{KUBEADM_REGISTRY}/coredns/coredns:{gobuild.LAB_COREDNS_VERSION}"] = (
        {"coredns": coredns / "coredns"}, ["/coredns"])
    return images


def lab_images(runtime):
    """The lab's own images (name:tag -> layout), under the lab registry's address."""
    ref = f"{registry_address()}/{LAB_REPOSITORY}/hello:{gobuild.RUNTIME_VERSIONS['hello']}"
    return {ref: oci_layout(ref, {"hello": runtime["hello"] / "hello"}, ["/hello"])}


def build_release(version, bins, log=print):
    """The OCI layouts of one release's images; returns {name:tag: layout}."""
    started = time.monotonic()
    layouts = {ref: oci_layout(ref, files, entrypoint)
               for ref, (files, entrypoint) in release_images(version, bins).items()}
    log(f"[images {time.strftime('%T')}] Kubernetes {version}: {len(layouts)} images in "
        f"{time.monotonic() - started:.0f} s")
    return layouts


def crane():
    return gobuild.COMPONENTS["crane"].out_dir(gobuild.RUNTIME_VERSIONS["crane"]) / "bin" / "crane"


def push(layouts, registry, log=print):
    """Push each layout to the lab registry under its kubeadm name (registry.k8s.io/x -> registry/x)."""
    for ref, layout in layouts.items():
        target = f"{registry}/{ref.split('/', 1)[1]}" if ref.startswith(KUBEADM_REGISTRY + "/") else ref
        result = run("ip", "netns", "exec", config.MASTER_NS, crane(), "push", "--insecure", layout, target,
                     check=False, timeout=300)
        if result.returncode != 0:
            raise LabError(f"pushing {ref} to the lab registry failed: {result.stderr.strip()}")
    log(f"[images {time.strftime('%T')}] {len(layouts)} images in the lab registry {registry}")


def serve(layouts, log=print):
    """Start the lab registry (idempotent) and push every image to it."""
    monitoring.start_registry(crane(), REGISTRY_PORT, REGISTRY_DATA)
    deadline = time.monotonic() + 10
    while run("ip", "netns", "exec", config.MASTER_NS, "curl", "-sf", f"http://{registry_address()}/v2/",
              check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise LabError(f"the lab registry did not answer at {registry_address()} (see {monitoring.DIR}/registry.log)")
        time.sleep(0.2)
    push(layouts, registry_address(), log)
