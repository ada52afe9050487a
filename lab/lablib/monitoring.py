"""The lab's monitoring: a real Prometheus (Debian's package) in the master's namespace scraping
each load balancer's HAProxy exporter and node-exporter, and a node-exporter of the master's own
figures (the heal file's k8sha_heal.prom). Started with the master, stopped with it.
With the real Kubernetes, the lab's image registry runs here too (lab/lablib/images.py)."""

import json
import os
import signal
import subprocess
import time
import urllib.parse

import yaml

from . import config

DIR = config.MASTER_DIR / "monitoring"
PROMETHEUS_PORT = 9090
MASTER_EXPORTER_PORT = 9100
SCRAPE_SECONDS = 2


def prometheus_url():
    return f"http://{config.MASTER_ADDRESS}:{PROMETHEUS_PORT}"


def scrape_config(description, ports):
    """Prometheus' configuration for the description (pure): one job per exporter, a `node` label."""
    balancers = [n for n in description["nodes"] if n["role"] == "loadbalancer"]

    def job(name, port, nodes):
        return {"job_name": name, "static_configs": [{"targets": [f"{n['address']}:{port}"], "labels": {"node": n["name"]}}
                                                     for n in nodes]}
    return {"global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "evaluation_interval": f"{SCRAPE_SECONDS}s"},
            "scrape_configs": [
                job("haproxy", ports["haproxy_metrics"], balancers),
                job("node", ports["node_exporter"], balancers),
                job("k8sha-master", MASTER_EXPORTER_PORT, [{"name": "salt-master", "address": config.MASTER_ADDRESS}]),
            ]}


def _pid(name):
    try:
        pid = int((DIR / f"{name}.pid").read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def _spawn(name, argv):
    if _pid(name):
        return
    log = open(DIR / f"{name}.log", "ab")  # noqa: SIM115 (the child keeps it)
    child = subprocess.Popen(["nsenter", f"--net=/run/netns/{config.MASTER_NS}", "--", *argv],
                             stdout=log, stderr=log, start_new_session=True)
    (DIR / f"{name}.pid").write_text(str(child.pid))


def start(heal_dir, description, ports):
    """Prometheus and the master's node-exporter, in the master's namespace (idempotent)."""
    DIR.mkdir(parents=True, exist_ok=True)
    os.makedirs(heal_dir, mode=0o700, exist_ok=True)
    (DIR / "prometheus.yml").write_text(yaml.safe_dump(scrape_config(description, ports)))
    _spawn("node-exporter", ["prometheus-node-exporter", f"--web.listen-address={config.MASTER_ADDRESS}:{MASTER_EXPORTER_PORT}",
                             "--collector.disable-defaults", "--collector.textfile",
                             f"--collector.textfile.directory={heal_dir}"])
    _spawn("prometheus", ["prometheus", f"--config.file={DIR / 'prometheus.yml'}", f"--storage.tsdb.path={DIR / 'data'}",
                          f"--web.listen-address={config.MASTER_ADDRESS}:{PROMETHEUS_PORT}",
                          "--storage.tsdb.retention.time=1d"])


SERVICES = ("prometheus", "node-exporter", "registry")


def start_registry(crane, port, data_dir):
    """crane's registry (go-containerregistry), blobs on disk; manifests live in its memory, so
    lab/lablib/images.py pushes every image again after a start (the blobs are not sent twice)."""
    DIR.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    _spawn("registry", [str(crane), "registry", "serve", "--address", f"{config.MASTER_ADDRESS}:{port}",
                        "--disk", str(data_dir)])


def stop(timeout=10):
    for name in SERVICES:
        pid = _pid(name)
        if not pid:
            continue
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _pid(name):
            time.sleep(0.2)
        if _pid(name):
            os.killpg(pid, signal.SIGKILL)


def pids():
    return {name: _pid(name) for name in SERVICES if _pid(name)}


def query(expression, timeout=5):
    """Prometheus' instant query API, from inside the master's namespace: [{metric, value}]."""
    url = f"{prometheus_url()}/api/v1/query?{urllib.parse.urlencode({'query': expression})}"
    out = subprocess.run(["nsenter", f"--net=/run/netns/{config.MASTER_NS}", "--", "curl", "-sf", "--max-time",
                          str(timeout), url], capture_output=True, text=True, timeout=timeout + 5)
    if out.returncode != 0:
        raise RuntimeError(f"Prometheus did not answer {url}: curl exit {out.returncode}")
    answer = json.loads(out.stdout)
    return [{"metric": r["metric"], "value": float(r["value"][1])} for r in answer["data"]["result"]]
