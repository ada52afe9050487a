"""
salt-cloud driver for the one-machine lab: a "cloud" whose instances are systemd-nspawn
machines on this host (lab/lablib). It lets orch.cluster provision the lab exactly as it
provisions OpenStack: salt-cloud, one profile per role (cloud/lab.profiles.conf).

Each machine gets, as an OpenStack server would: its address from the cluster description,
the security groups of its profile (enforced by the lab's switch, lab/lablib/secgroups.py),
the `roles` grain, and a one-time enrolment value instead of a key: its minion makes its own
key pair, and the master's k8sha_enrolment engine accepts it. Also the master's public key
(what the minion would otherwise trust on first use) and /etc/hosts (the lab has no DNS).
"""

import logging
import pathlib
import sys

import salt.config
import salt.utils.cloud
import salt.utils.yaml
from salt.exceptions import SaltCloudException, SaltCloudSystemExit

log = logging.getLogger(__name__)

__virtualname__ = "lab"
LAB = pathlib.Path(__file__).resolve().parents[1] / "lab"


def __virtual__():
    if get_configured_provider() is False:
        return False
    return __virtualname__


def _get_active_provider_name():
    try:
        return __active_provider_name__.value()
    except AttributeError:
        return __active_provider_name__


def get_configured_provider():
    return salt.config.is_provider_configured(__opts__, _get_active_provider_name() or __virtualname__, ())


def _lablib():
    if str(LAB) not in sys.path:
        sys.path.insert(0, str(LAB))
    from lablib import config, machine, secgroups  # pylint: disable=import-outside-toplevel

    return config, machine, secgroups


def _hosts(description, lab_config):
    lines = ["127.0.0.1 localhost", f"{lab_config.MASTER_ADDRESS} salt lab-master"]
    lines += [f"{n['address']} {n['name']}" for n in description.get("nodes", []) if n.get("address")]
    return "\n".join(lines) + "\n"


def _fire(name, what, vm_=None):
    __utils__["cloud.fire_event"](
        "event", f"{what} instance", f"salt/cloud/{name}/{what}",
        args={"name": name, "profile": (vm_ or {}).get("profile"), "provider": (vm_ or {}).get("driver")},
        sock_dir=__opts__["sock_dir"], transport=__opts__.get("transport", "zeromq"),
    )


def create(vm_):
    name = vm_["name"]
    lab_config, machine, secgroups = _lablib()
    description = __utils__["k8sha_cloud.valid_description"](__utils__["k8sha_description.served"](__opts__))
    address = __utils__["k8sha_cloud.node_address"](vm_, description)
    groups = salt.config.get_cloud_config_value("security_groups", vm_, __opts__, default=[]) or []
    _fire(name, "creating", vm_)
    salt.utils.cloud.remove_key(__opts__["pki_dir"], name)  # a new machine has a new key
    value = __utils__["k8sha_enrolment.issue"](__opts__["pki_dir"], name)
    minion = salt.utils.cloud.minion_config(__opts__, vm_)
    extra = __utils__["k8sha_enrolment.minion_settings"](value)
    minion = dict(minion, grains=dict(minion.get("grains") or {}, **extra.pop("grains")), **extra)
    master_pub = pathlib.Path(__opts__["pki_dir"]) / "master.pub"
    files = {
        "/etc/salt/minion.d/10-lab-machine.conf": salt.utils.yaml.safe_dump(minion, default_flow_style=False),
        "/etc/salt/minion_id": name + "\n",
        "/etc/hostname": name + "\n",
        "/etc/hosts": _hosts(description, lab_config),
    }
    if master_pub.exists():
        files["/etc/salt/pki/minion/minion_master.pub"] = master_pub.read_text()
    units = salt.config.get_cloud_config_value("enable_units", vm_, __opts__, default=[]) or []
    box = machine.Machine(name)
    try:
        secgroups.set_port(name, groups)  # before the port exists: nothing reaches it unfiltered
        box.create(address, files=files, enable_units=units)
        box.boot()
    except Exception as exc:  # pylint: disable=broad-except
        __utils__["k8sha_enrolment.revoke"](__opts__["pki_dir"], name)
        raise SaltCloudException(f"lab: machine {name} could not be created: {exc}") from exc
    _fire(name, "created", vm_)
    log.info("lab: created %s at %s", name, address)
    return {"name": name, "address": address, "state": "running", "roles": minion.get("grains", {}).get("roles"),
            "security_groups": groups}


def destroy(name, call=None):
    if call == "function":
        raise SaltCloudSystemExit("destroy is an action: salt-cloud -d NAME")
    _, machine, secgroups = _lablib()
    _fire(name, "destroying")
    machine.Machine(name).destroy()
    secgroups.remove_port(name)
    salt.utils.cloud.remove_key(__opts__["pki_dir"], name)
    __utils__["k8sha_enrolment.revoke"](__opts__["pki_dir"], name)
    _fire(name, "destroyed")
    return {name: "destroyed"}


def list_nodes(call=None):
    if call == "action":
        raise SaltCloudSystemExit("list_nodes is a function: salt-cloud -Q")
    _, machine, _ = _lablib()
    nodes = {}
    for box in machine.all_machines():
        address = (box.dir / "address").read_text().strip() if (box.dir / "address").exists() else None
        nodes[box.name] = {
            "id": box.machine,
            "image": "k8sha-lab",
            "size": "lab",
            "state": "running" if box.running else "stopped",
            "private_ips": [address] if address else [],
            "public_ips": [],
        }
    return nodes


def list_nodes_full(call=None):
    return list_nodes(call)


def list_nodes_select(call=None):
    return salt.utils.cloud.list_nodes_select(list_nodes_full(), __opts__["query.selection"], call)


def avail_images(call=None):
    return {"k8sha-lab": {"name": "k8sha-lab", "description": "Debian 12 lab image (lab/image/build)"}}


def avail_sizes(call=None):
    return {"lab": {"name": "lab", "description": "a systemd-nspawn machine sharing the host's CPU and memory"}}


def avail_locations(call=None):
    return {"localhost": {"name": "localhost"}}
