"""
The cluster's machines and their network, from the master (orch/provision.sls). Each step
asks first and creates only what is missing:

    cluster_machines.security_groups_ready  every role's security group (before the instances):
                                            Neutron, or the lab's switch
    cluster_machines.instances_present      salt-cloud: the description's machines missing are created
    cluster_machines.instance_absent        salt-cloud destroys one machine (orch.remove_node)
    cluster_machines.vip_networking_ready   OpenStack: VIP port, allowed address pairs, floating IP
"""

import os
import sys

import salt.cloud

__virtualname__ = "cluster_machines"


def __virtual__():
    return __virtualname__


def _ret(name, result=True, comment="", changes=None):
    return {"name": name, "result": result, "comment": comment, "changes": changes or {}}


def machines_map(description, profiles):
    """salt-cloud map data for the description: each node under its role's profile, with
    its address (pure function). Raises ValueError naming a role without a profile."""
    missing = sorted({n["role"] for n in description["nodes"] if n["role"] not in profiles})
    if missing:
        raise ValueError(f"k8sha:lookup:cloud:profiles has no profile for role {', '.join(missing)}")
    data = {}
    for node in description["nodes"]:
        data.setdefault(profiles[node["role"]], []).append({node["name"]: {"address": node["address"]}})
    return data


def _map_names(map_data):
    return sorted(name for entries in map_data.values() for entry in entries for name in entry)


def _existing(client):
    """Names of the machines every configured provider reports (salt-cloud's public query)."""
    names = set()
    for drivers in (client.query("list_nodes") or {}).values():
        for nodes in (drivers or {}).values():
            names.update(nodes if isinstance(nodes, dict) else [])
    return names


def _map_source(map, profiles):  # pylint: disable=redefined-builtin
    """(salt-cloud map_run keyword arguments, names in the map): a map file, or the description's map."""
    if map:
        path = __salt__["cp.cache_file"](map) if map.startswith("salt://") else map
        if not path or not os.path.exists(path):
            raise ValueError(f"salt-cloud map {map} not found (k8sha:lookup:cloud:map)")
        data = __salt__["slsutil.renderer"](path, default_renderer="yaml") or {}
        return {"path": path}, _map_names(data)
    data = machines_map(__salt__["cluster_topology.description"](), profiles or {})
    return {"map_data": data}, _map_names(data)


def instances_present(name, profiles=None, map=None):  # pylint: disable=redefined-builtin
    """
    Every node of the description exists as a machine; missing ones are created by salt-cloud.
    ``profiles``: the salt-cloud profile for each role (the map is made from the description),
    or ``map``: a salt-cloud map file (salt:// URL or path) for hand-made topologies.
    """
    try:
        source, wanted = _map_source(map, profiles)
    except ValueError as exc:
        return _ret(name, False, f"{exc}; nothing was created")
    client = salt.cloud.CloudClient(path=os.path.join(os.path.dirname(__opts__["conf_file"]), "cloud"))
    missing = sorted(set(wanted) - _existing(client))
    if not missing:
        return _ret(name, comment=f"all {len(wanted)} machines exist")
    if __opts__["test"]:
        return _ret(name, None, f"would create {', '.join(missing)}", {"created": missing})
    results = client.map_run(**source)
    failed = {n: results.get(n, "no result from salt-cloud") for n in missing
              if not isinstance(results.get(n), dict) or "Error" in results[n]}
    if failed:
        return _ret(name, False, "; ".join(f"{n}: salt-cloud could not create it: {str(r)[:300]}"
                                            for n, r in failed.items()), {"created": sorted(set(missing) - set(failed))})
    return _ret(name, comment=f"created {', '.join(missing)}", changes={"created": missing})


def instance_absent(name):
    """The machine ``name`` is destroyed by salt-cloud (its minion key goes with it); absent is no
    error. Without provisioning (k8sha:lookup:cloud:provision false) the machine is the operator's."""
    if not __salt__["cluster_topology.settings"]()["cloud"]["provision"]:
        return _ret(name, comment=f"k8sha:lookup:cloud:provision is false: shut {name} down yourself, then "
                                  f"salt-key -d {name}")
    client = salt.cloud.CloudClient(path=os.path.join(os.path.dirname(__opts__["conf_file"]), "cloud"))
    if name not in _existing(client):
        return _ret(name, comment=f"no machine {name}")
    if __opts__["test"]:
        return _ret(name, None, f"would destroy the machine {name} (salt-cloud -d)", {"destroyed": name})
    result = client.destroy([name])
    if "destroyed" not in str(result):
        return _ret(name, False, f"salt-cloud could not destroy {name}: {str(result)[:300]}")
    return _ret(name, comment=f"the machine {name} and its minion key are gone", changes={"destroyed": name})


def _openstack_step(name, function, done_comment):
    """Run an openstack_net function (on the master): what it created is the change."""
    if __opts__["test"]:
        return _ret(name, None, f"would run openstack_net.{function}")
    try:
        done = __salt__[f"openstack_net.{function}"]()
    except Exception as exc:  # pylint: disable=broad-except
        return _ret(name, False, f"openstack_net.{function} for {name}: {exc}")
    return _ret(name, comment=done_comment, changes={"created": done} if done else {})


def security_groups_ready(name):
    """Every role's security group and rules, before the instances that carry them: in
    Neutron, or on the one-machine lab's switch (a lab master has ``k8sha_lab: True``)."""
    if not __opts__.get("k8sha_lab"):
        return _openstack_step(name, "security_groups", "the security groups of every role are in place")
    try:
        wanted = __salt__["openstack_net.rules"]()
    except Exception as exc:  # pylint: disable=broad-except
        return _ret(name, False, f"security groups for {name}: {exc}")
    secgroups = _lab_secgroups()
    current = secgroups.load()["groups"]
    if current == wanted:
        return _ret(name, comment="the lab switch enforces every role's security group")
    changed = sorted(g for g in wanted if wanted[g] != current.get(g))
    if __opts__["test"]:
        return _ret(name, None, f"would set security groups {', '.join(changed)} on the lab switch", {"groups": changed})
    secgroups.set_groups(wanted)
    return _ret(name, comment="the lab switch enforces every role's security group", changes={"groups": changed})


def _lab_secgroups():
    """The lab's switch (lab/lablib/secgroups.py): the lab's stand-in for Neutron's security groups."""
    lab = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lab")
    if lab not in sys.path:
        sys.path.insert(0, lab)
    from lablib import secgroups  # pylint: disable=import-outside-toplevel
    return secgroups


def vip_networking_ready(name):
    """OpenStack: the VIP's port, the VIP allowed on every load balancer's port, the floating
    IP; changes only what is missing."""
    return _openstack_step(name, "vip_networking", f"the VIP {name} can move between the load balancers")
