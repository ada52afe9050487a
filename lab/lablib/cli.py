"""lab: the one-machine lab's command line."""

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import time

from . import config, gobuild, images, machine, master, monitoring, net, repos, secgroups
from .run import LabError, run


def build_kubernetes(versions=None):
    """Every binary (lab/lablib/gobuild.py), then the repositories and images made of them.
    Returns the images' OCI layouts."""
    runtime, releases = gobuild.build_all(versions)
    repos.runtime_debs(runtime)
    layouts = images.lab_images(runtime)
    for version, bins in releases.items():
        repos.kubernetes_repo(version, runtime)
        layouts.update(images.build_release(version, bins))
    return layouts


def real_kubernetes_pillar():
    """Until the stand-in goes, the project's pillar names its Kubernetes (1.31): the real one's
    lab serves a copy whose description names the first release built here."""
    import yaml  # pylint: disable=import-outside-toplevel

    target = config.LAB_DIR / "pillar-real"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(config.REPO / "pillar", target)
    description = yaml.safe_load((target / "cluster.sls").read_text())
    description["cluster"].setdefault("kubernetes", {})["version"] = gobuild.pinned_versions("kubernetes")[0].lstrip("v")
    (target / "cluster.sls").write_text("# Written by lab/lab up --kubernetes real from pillar/cluster.sls.\n"
                                        + yaml.safe_dump(description, sort_keys=False))
    return target


def cmd_build(args):
    build_kubernetes(args.versions or None)


def cmd_pin(args):
    print(f"lab: pinned {gobuild.pin(args.component, args.version)}")


def cmd_up(args):
    """The bridge and the salt-master; the machines come from orch.cluster (salt-cloud)."""
    net.refuse_if_routed_on_host()
    started = time.monotonic()
    if args.kubernetes:
        config.LAB_DIR.mkdir(parents=True, exist_ok=True)
        config.KUBERNETES_MODE_FILE.write_text(args.kubernetes)
    layouts = build_kubernetes() if config.kubernetes_mode() == "real" else {}
    build = subprocess.run([machine.IMAGE_BUILD])
    if build.returncode != 0:
        raise LabError("building the lab image failed (see above)")
    net.ensure_switch()
    if secgroups.STATE.exists():  # a lab that was not taken down: its ports keep their groups
        secgroups.apply()
    pillar_dir = pathlib.Path(args.pillar_dir).resolve() if args.pillar_dir else None
    if pillar_dir is None and config.kubernetes_mode() == "real":
        pillar_dir = real_kubernetes_pillar()
    if pillar_dir and not (pillar_dir / "top.sls").exists():
        raise LabError(f"--pillar-dir {pillar_dir}: no top.sls there")
    if config.kubernetes_mode() == "real":
        repos.check_built(config.description(pillar_dir)["kubernetes"]["version"])
    master.start(pillar_dir=pillar_dir)
    monitoring.start(config.MASTER_DIR / "cache" / "k8sha-heal", config.description(pillar_dir),
                     config.defaults()["k8sha"]["ports"])
    if layouts:
        images.serve(layouts)
    print(f"lab: salt-master up in namespace {config.MASTER_NS} at {config.MASTER_ADDRESS} "
          f"(pillar: {pillar_dir or config.REPO / 'pillar'}); Prometheus at {monitoring.prometheus_url()}")
    if args.second_master:
        master.start(pillar_dir=pillar_dir, which="b")
        print(f"lab: second salt-master up in namespace {config.SECOND_MASTER_NS} at {config.SECOND_MASTER_ADDRESS} "
              "(same keys and roots; LAB_MASTER=b lab/lab salt-run ... talks to it)")
    print(f"lab: up in {time.monotonic() - started:.1f} s; next: lab/lab salt-run state.orch orch.cluster")


def cmd_down(args):
    """Remove every machine, mount, namespace and process the lab created (also after a crash)."""
    machines = machine.all_machines()
    # Power everything off at once, then remove; a guest that does not stop in time is killed.
    for m in machines:
        m.request_poweroff()
    for m in machines:
        print(f"lab: removing machine {m.name}")
        m.destroy(timeout=15)
    monitoring.stop()
    for which in config.MASTERS:
        master.stop(which=which)
    for ns in net.lab_namespaces():
        run("ip", "netns", "del", ns, check=False)
    for path in (config.MACHINES_DIR, config.MASTER_DIR, config.SECOND_MASTER_DIR):
        shutil.rmtree(path, ignore_errors=True)
    secgroups.STATE.unlink(missing_ok=True)
    config.KUBERNETES_MODE_FILE.unlink(missing_ok=True)   # the next lab starts as lab up says
    leftovers = leftover_report()
    if leftovers:
        raise LabError("lab down left: " + "; ".join(leftovers))
    print("lab: down, nothing left")


def leftover_report():
    found = []
    namespaces = net.lab_namespaces()
    if namespaces:
        found.append("namespaces " + ", ".join(namespaces))
    mounts = [line.split()[1] for line in open("/proc/mounts") if str(config.LAB_DIR) in line.split()[1]]
    if mounts:
        found.append("mounts " + ", ".join(mounts))
    machines = [p.name for p in pathlib.Path("/run/systemd/machines").glob(f"{config.PREFIX}-*")]
    if machines:
        found.append("machine files " + ", ".join(machines))
    for own in machine.own_cgroups():
        cgroups = [p.name for p in own.glob(f"{config.PREFIX}-*")]
        if cgroups:
            found.append(f"cgroups ({own}) " + ", ".join(cgroups))
    found += [f"salt-master {which} pid {master.pid(which)}" for which in config.MASTERS if master.pid(which)]
    found += [f"{name} pid {pid}" for name, pid in monitoring.pids().items()]
    return found


def cmd_status(args):
    total = 0
    for which, here in config.MASTERS.items():
        master_pid = master.pid(which)
        master_mib = master_memory_mib(master_pid) if master_pid else 0
        total += master_mib
        print(f"salt-master {which}: {f'running pid {master_pid}, {master_mib} MiB' if master_pid else 'stopped'}"
              f" ({here.ns}, {here.address})")
    for m in machine.all_machines():
        address = (m.dir / "address").read_text().strip() if (m.dir / "address").exists() else "?"
        state = m.system_state() if m.running else "stopped"
        mib = m.memory_mib() if m.running else 0
        total += mib
        print(f"{m.name:10} {address:16} {state:10} {mib:7.1f} MiB")
    print(f"memory in all (resident): {total:.0f} MiB")


def master_memory_mib(pid):
    """The master and its worker processes (same process group)."""
    pgid = os.getpgid(pid)
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and _pgid(int(p)) == pgid]
    return round(sum(machine.process_rss_kib(p) for p in pids) / 1024, 1)


def _pgid(pid):
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def cmd_shell(args):
    m = machine.Machine(args.node)
    if not m.running:
        raise LabError(f"machine {args.node} is not running (lab status)")
    command = args.command or ["/bin/bash", "-l"]
    os.execvp("nsenter", ["nsenter", "-t", str(m.leader), "-m", "-u", "-i", "-n", "-p", "--", *command])


def cmd_prometheus(args):
    """An instant query to the lab's Prometheus, one line per series."""
    for series in monitoring.query(args.query):
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(series["metric"].items()))
        print(f"{{{labels}}} {series['value']:g}")


SALT_TOOLS = ("salt", "salt-run", "salt-cloud", "salt-key")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SALT_TOOLS:
        # Everything after the tool name is the tool's own (argparse would eat its options).
        if os.geteuid() != 0:
            print("lab: needs root", file=sys.stderr)
            return 1
        os.execvp("nsenter", master.salt_command(argv[0], *argv[1:]))
    parser = argparse.ArgumentParser(prog="lab", description=(
        "The one-machine lab: systemd-nspawn machines in network namespaces on a private bridge "
        f"({config.NETWORK}), a salt-master serving this tree. Root only. State in {config.LAB_DIR}."))
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build the image if needed, start the bridge and the salt-master "
                                   "(orch.cluster then creates the machines through salt-cloud)")
    up.add_argument("--pillar-dir", help="serve this pillar directory instead of the project's pillar/ "
                                         "(a restart of a running master applies it)")
    up.add_argument("--second-master", action="store_true",
                    help="also start a second salt-master (hot multi-master, shared keys): every machine "
                         "connects to both; LAB_MASTER=b lab/lab salt ... talks to it")
    up.add_argument("--kubernetes", choices=("real", "standin"),
                    help="the Kubernetes the machines run, kept for later commands: real (built from its Go "
                         "modules by lab/lab build) or the stand-in")
    up.set_defaults(func=cmd_up)
    build = sub.add_parser("build", help="build the lab's Kubernetes (every pinned release, or those named), "
                                         "containerd, runc, etcd, CNI plugins, CoreDNS from their Go modules, "
                                         "then its package repositories and images")
    build.add_argument("versions", nargs="*", metavar="VERSION", help="e.g. v1.36.3 (pinned in lab/build/kubernetes/)")
    build.set_defaults(func=cmd_build)
    pin = sub.add_parser("pin", help="write and pin (go.mod, go.sum) the module that builds a component's version")
    pin.add_argument("component", choices=sorted(gobuild.COMPONENTS))
    pin.add_argument("version")
    pin.set_defaults(func=cmd_pin)
    sub.add_parser("down", help="remove every machine, namespace, mount and process of the lab").set_defaults(func=cmd_down)
    sub.add_parser("status", help="the master and each machine").set_defaults(func=cmd_status)
    shell = sub.add_parser("shell", help="a shell (or a command) inside a machine")
    shell.add_argument("node")
    shell.add_argument("command", nargs=argparse.REMAINDER)
    shell.set_defaults(func=cmd_shell)
    prometheus = sub.add_parser("prometheus", help="a PromQL query to the lab's Prometheus (in the master's namespace)")
    prometheus.add_argument("query")
    prometheus.set_defaults(func=cmd_prometheus)
    for tool in SALT_TOOLS:
        sub.add_parser(tool, help=f"{tool} ARGS... against the lab master (e.g. lab salt '*' test.ping; "
                                  "LAB_MASTER=b: the second master)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("the lab needs root (namespaces, mounts, systemd-nspawn)")
    try:
        args.func(args)
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    return 0
