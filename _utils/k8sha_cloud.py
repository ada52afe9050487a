"""
What the project's salt-cloud drivers (_clouds/) share: the cluster description the master
serves, and the address of the machine being created (from the orchestration's map, or
from the description for `salt-cloud -p/-m` by hand), so that both paths agree.
"""

import pathlib

import salt.utils.yaml
from salt.exceptions import SaltCloudSystemExit


def description(opts):
    """The `cluster` of the master's pillar_roots/cluster.sls (raw: addresses and names)."""
    for root in opts.get("pillar_roots", {}).get("base", []):
        path = pathlib.Path(root) / "cluster.sls"
        if path.exists():
            return (salt.utils.yaml.safe_load(path.read_text()) or {}).get("cluster", {})
    raise SaltCloudSystemExit("no cluster.sls in the master's pillar_roots: the machines' addresses come from it")


def node_address(opts, vm_):
    """The fixed address of the machine ``vm_``: the map's `address`, else the description's."""
    if vm_.get("address"):
        return str(vm_["address"])
    for node in description(opts).get("nodes", []):
        if isinstance(node, dict) and node.get("name") == vm_["name"]:
            return str(node["address"])
    raise SaltCloudSystemExit(
        f"no node named {vm_['name']} in the cluster description (pillar/cluster.sls): add it there "
        "(its address is the machine's fixed IP) or give the VM an `address`")
