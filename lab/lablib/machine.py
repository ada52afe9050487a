"""Lab machines: an overlay on the image, booted with systemd by systemd-nspawn in its own
network namespace. Commands run inside with nsenter (no machined needed)."""

import os
import pathlib
import shutil
import signal
import subprocess
import time

from . import config, net
from .run import LabError, run

LAUNCHER = pathlib.Path(__file__).resolve().parents[1] / "machine-launcher"
IMAGE_BUILD = pathlib.Path(__file__).resolve().parents[1] / "image" / "build"


def image_root():
    """The image the last build made current (lab up builds it)."""
    current = config.LAB_DIR / "images" / "current"
    if not (current / "ready").exists():
        raise LabError(f"the lab image is not built: run {IMAGE_BUILD} (or lab up)")
    return current.resolve() / "rootfs"


class Machine:
    def __init__(self, name):
        self.name = name                       # the minion id and hostname
        self.machine = config.machine_name(name)
        self.ns = config.machine_ns(name)
        self.dir = config.MACHINES_DIR / name
        self.root = self.dir / "merged"

    # --- state ---------------------------------------------------------------
    def _pid(self, filename):
        try:
            pid = int((self.dir / filename).read_text())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    @property
    def leader(self):
        return self._pid("leader.pid")

    @property
    def running(self):
        return self.leader is not None

    def cgroups(self):
        """The machine's own cgroup in every hierarchy (lab/machine-launcher lists them)."""
        listed = self.dir / "cgroups"
        paths = listed.read_text().split() if listed.exists() else []
        return [pathlib.Path(p) for p in paths] or [pathlib.Path(f"/sys/fs/cgroup/{h}/{self.machine}")
                                                    for h in ("systemd", "unified")]

    def memory_mib(self):
        """Resident memory of every process in the machine's cgroup (the host has no cgroup2 memory controller)."""
        return rss_mib(pathlib.Path(f"/sys/fs/cgroup/unified/{self.machine}"))

    def exists(self):
        return self.dir.exists()

    # --- lifecycle -----------------------------------------------------------
    def create(self, address, files=None, enable_units=()):
        """Overlay + network + files; does not boot."""
        if self.running:
            raise LabError(f"machine {self.name} is already running")
        for sub in ("upper", "work", "merged"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "address").write_text(address)
        if config.kubernetes_mode() == "real":
            # lab/machine-launcher then gives it what a Kubernetes node needs of its container.
            (self.dir / "kubernetes-node").touch()
        self._mount()
        for path, content in (files or {}).items():
            target = self.root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            if path.endswith(".pem"):
                target.chmod(0o400)
        wants = self.root / "etc/systemd/system/multi-user.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        for unit in enable_units:
            link = wants / unit
            if not link.exists():
                link.symlink_to(f"/etc/systemd/system/{unit}")
        net.attach(self.ns, address)

    def _mount(self):
        if subprocess.run(["mountpoint", "-q", str(self.root)]).returncode == 0:
            return
        # A machine keeps the image it was created on, even when a newer one is built.
        recorded = self.dir / "image"
        lower = pathlib.Path(recorded.read_text().strip()) if recorded.exists() else image_root()
        if not lower.exists():
            raise LabError(f"machine {self.name}: its image {lower} is gone; destroy and recreate it")
        recorded.write_text(str(lower))
        run("mount", "-t", "overlay", "overlay", "-o",
            f"lowerdir={lower},upperdir={self.dir / 'upper'},workdir={self.dir / 'work'}", self.root)

    def boot(self, timeout=60):
        if self.running:
            return
        self._mount()
        net.attach(self.ns, (self.dir / "address").read_text().strip())
        log = open(self.dir / "console.log", "ab")
        proc = subprocess.Popen(
            [LAUNCHER, self.machine, self.ns, self.root, self.dir, self.name],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        (self.dir / "launcher.pid").write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.leader and self.system_state() in ("running", "degraded"):
                return
            if proc.poll() is not None:
                raise LabError(f"machine {self.name} did not boot; see {self.dir / 'console.log'}")
            time.sleep(0.1)
        raise LabError(f"machine {self.name} did not finish booting in {timeout} s; see {self.dir / 'console.log'}")

    def system_state(self):
        result = self.exec("systemctl", "is-system-running", check=False)
        return result.stdout.strip()

    def exec(self, *cmd, check=True, timeout=120, input=None):
        """Run a command inside the machine (its mount, PID, network, UTS and IPC namespaces)."""
        leader = self.leader
        if leader is None:
            raise LabError(f"machine {self.name} is not running")
        return run("nsenter", "-t", leader, "-m", "-u", "-i", "-n", "-p", "--", *cmd,
                   check=check, timeout=timeout, input=input)

    def kill(self):
        """Lose the machine at once, as a host losing power: SIGKILL to the guest's PID 1."""
        leader = self.leader
        if leader:
            os.kill(leader, signal.SIGKILL)
        self._wait_launcher(10)

    def request_poweroff(self):
        leader = self.leader
        if leader:
            os.kill(leader, signal.SIGRTMIN + 4)  # systemd: poweroff
        return leader

    def stop(self, timeout=30):
        """Clean poweroff; SIGKILL of the guest's PID 1 if it does not finish in time."""
        if self.request_poweroff():
            if not self._wait_launcher(timeout):
                self.kill()
        self._wait_launcher(10)
        self._cleanup()

    def _wait_launcher(self, timeout):
        launcher = self._pid("launcher.pid")
        deadline = time.monotonic() + timeout
        while launcher and time.monotonic() < deadline:
            try:
                os.kill(launcher, 0)
            except ProcessLookupError:
                return True
            try:
                os.waitpid(launcher, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.1)
        return launcher is None or self._pid("launcher.pid") is None

    def _end_launcher(self):
        """The launcher first (it would boot the machine again on a reboot's exit code), then
        any nspawn still waiting: a machine that is stopped leaves no process behind."""
        for filename in ("launcher.pid", "nspawn.pid"):
            pid = self._pid(filename)
            if pid and self._is_ours(pid):
                os.kill(pid, signal.SIGKILL)
                self._reap(pid)

    def _is_ours(self, pid):
        """The recorded PID is still this machine's launcher or nspawn (not a reused PID)."""
        try:
            return self.machine.encode() in pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False

    @staticmethod
    def _reap(pid, timeout=5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            if pathlib.Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z"):
                return
            time.sleep(0.1)

    def _cleanup(self):
        self._end_launcher()
        pathlib.Path(f"/run/systemd/machines/{self.machine}").unlink(missing_ok=True)
        shutil.rmtree(f"/run/systemd/nspawn/propagate/{self.machine}", ignore_errors=True)
        for cgroup in self.cgroups():
            remove_cgroup(cgroup)
        if subprocess.run(["mountpoint", "-q", str(self.root)]).returncode == 0:
            run("umount", self.root, check=False)

    def destroy(self, timeout=30):
        self.stop(timeout)
        net.detach(self.ns)
        shutil.rmtree(self.dir, ignore_errors=True)


def remove_cgroup(path):
    if not path.exists():
        return
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        try:
            child.rmdir()
        except OSError:
            pass
    try:
        path.rmdir()
    except OSError:
        pass


def own_cgroups():
    """This process's cgroup in every hierarchy, as a path under its mount (where
    lab/machine-launcher makes each machine's own)."""
    mounts = {}
    for line in open("/proc/self/mounts"):
        _, target, fstype, options = line.split()[:4]
        if fstype == "cgroup2":
            mounts.setdefault("", target)
        elif fstype == "cgroup":
            for option in options.split(","):
                mounts.setdefault(option, target)
    found = []
    for line in open("/proc/self/cgroup"):
        _, controllers, own = line.rstrip("\n").split(":", 2)
        if controllers in mounts:
            found.append(pathlib.Path(mounts[controllers] + own.rstrip("/")))
    return found


def all_machines():
    if not config.MACHINES_DIR.exists():
        return []
    return [Machine(p.name) for p in sorted(config.MACHINES_DIR.iterdir()) if p.is_dir()]


def rss_mib(cgroup):
    pids = set()
    for procs in cgroup.rglob("cgroup.procs") if cgroup.exists() else []:
        pids.update(int(p) for p in procs.read_text().split())
    return round(sum(process_rss_kib(pid) for pid in pids) / 1024, 1)


def process_rss_kib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
