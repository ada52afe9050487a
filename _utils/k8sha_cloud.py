"""
What the project's salt-cloud drivers (_clouds/) share: the cluster description the master
serves (the driver reads it with k8sha_description.served), refused when invalid, and the
address of the machine being created (from the orchestration's map, or from the description
for `salt-cloud -p/-m` by hand), so that both paths agree.
"""

from salt.exceptions import SaltCloudSystemExit


def valid_description(read):
    """The description of a ``k8sha_description.served`` result. A machine is never made from
    a broken description: its problems stop salt-cloud, listed."""
    if read["problems"]:
        raise SaltCloudSystemExit("invalid cluster description (pillar/cluster.sls); no machine was made:\n  - "
                                  + "\n  - ".join(read["problems"]))
    return read["cluster"]


def node_address(vm_, description):
    """The fixed address of the machine ``vm_``: the map's `address`, else the description's."""
    if vm_.get("address"):
        return str(vm_["address"])
    for node in description["nodes"]:
        if node["name"] == vm_["name"]:
            return str(node["address"])
    raise SaltCloudSystemExit(
        f"no node named {vm_['name']} in the cluster description (pillar/cluster.sls): add it there "
        "(its address is the machine's fixed IP) or give the VM an `address`")
