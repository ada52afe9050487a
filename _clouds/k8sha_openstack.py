"""
salt-cloud driver for OpenStack on openstacksdk (Salt 3008 ships none). It creates servers
whose minion joins the master at first boot through **cloud-init** (`salt_minion` module:
minion config with the `roles` grain), so no SSH from the master is needed.

- Each server gets the cluster description's address: it is created on a Neutron port that
  carries that fixed IP (made here with the profile's security groups, or an existing free
  port that has it). A port of another device holding the address is an error naming both.
- No private key leaves the master: the minion makes its own key pair; the user data holds
  only a one-time enrolment value that the master's `k8sha_enrolment` engine checks.
- `destroy` releases what `create` made (the floating IP, the port) and nothing else.

Provider (cloud/openstack.providers.conf.example)::

    k8sha-openstack:
      driver: k8sha_openstack
      cloud: mycloud              # a clouds.yaml entry; or auth: {auth_url, username, ...}
      region_name: RegionOne
      minion: {master: 10.0.0.5}

Profile keys: image, size (flavor), networks (the first carries the fixed IP), security_groups,
key_name, availability_zone, boot_volume_size (GB: boot from a volume), metadata,
floating_ip_network, wait_timeout (default 600 s), minion: {grains: {roles: [...]}}.
VM keys: address (the orchestration's map sets it; else the description's node of that name).
"""

import base64
import ipaddress
import logging

import salt.config
import salt.utils.cloud
import salt.utils.yaml
from salt.exceptions import SaltCloudSystemExit

try:
    import openstack
    from openstack import exceptions as os_exc

    HAS_OPENSTACK = True
except ImportError:  # pragma: no cover - openstacksdk is in requirements.lock
    HAS_OPENSTACK = False

log = logging.getLogger(__name__)
__virtualname__ = "k8sha_openstack"
MARK = "k8sha: made by salt-cloud for {}"  # description of what create makes, so destroy finds only that


def __virtual__():
    if not HAS_OPENSTACK:
        return False, "k8sha_openstack needs openstacksdk"
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


def _connection():
    provider = get_configured_provider()
    kwargs = dict(provider.get("auth") or {})
    if provider.get("region_name"):
        kwargs["region_name"] = provider["region_name"]
    return openstack.connect(cloud=provider.get("cloud") or None, **kwargs)


def user_data(minion_config):
    """cloud-init user data: install salt-minion with this config; it makes its own key (pure)."""
    config = {"salt_minion": {"conf": minion_config}}
    return "#cloud-config\n" + salt.utils.yaml.safe_dump(config, default_flow_style=False)


def _find(finder, name, what, hint):
    try:
        return finder(name, ignore_missing=False)
    except os_exc.ResourceNotFound:
        raise SaltCloudSystemExit(f"{what} {name!r} not found: {hint}") from None


def _get(vm_, key, default=None):
    return salt.config.get_cloud_config_value(key, vm_, __opts__, default=default)


def server_request(vm_, conn, userdata, port_id):
    """The arguments of Nova's create-server call for a profile, on the port ``port_id``
    (which carries the security groups: Nova applies none to a port it is given)."""
    get = lambda key, default=None: _get(vm_, key, default)  # noqa: E731
    image = _find(conn.image.find_image, get("image"), "image", "salt-cloud --list-images <provider>")
    flavor = _find(conn.compute.find_flavor, get("size"), "flavor", "salt-cloud --list-sizes <provider>")
    request = {
        "name": vm_["name"],
        "flavor_id": flavor.id,
        "networks": [{"port": port_id}],
        "user_data": base64.b64encode(userdata.encode()).decode(),
        "metadata": dict(get("metadata", {}) or {}, **{"k8sha-name": vm_["name"]}),
    }
    for key in ("key_name", "availability_zone"):
        if get(key):
            request[key] = get(key)
    if get("boot_volume_size"):
        request["block_device_mapping_v2"] = [{"boot_index": 0, "uuid": image.id, "source_type": "image",
                                               "destination_type": "volume", "volume_size": int(get("boot_volume_size")),
                                               "delete_on_termination": True}]
    else:
        request["image_id"] = image.id
    return request


def _subnet_for(conn, network, address, name):
    for subnet in conn.network.subnets(network_id=network.id):
        if ipaddress.ip_address(address) in ipaddress.ip_network(subnet.cidr):
            return subnet
    raise SaltCloudSystemExit(f"{name}: its address {address} is in no subnet of network {network.name}: fix the node's "
                              "address in pillar/cluster.sls or the profile's networks")


def fixed_port(conn, vm_, address):
    """(port, created): the port on the profile's first network that carries ``address``,
    with the profile's security groups. An existing port with that address and no device is
    reused; one bound to another device is an error naming both."""
    name = vm_["name"]
    networks = _get(vm_, "networks", [])
    if not networks:
        raise SaltCloudSystemExit(f"{name}: the profile names no network; set `networks` (the first carries {address})")
    network = _find(conn.network.find_network, networks[0], "network", "check the profile's networks")
    groups = [_find(conn.network.find_security_group, g, "security group", "orch.provision creates the cluster's "
                    "groups (openstack_net.security_groups); or fix the profile's security_groups").id
              for g in _get(vm_, "security_groups", [])]
    for port in conn.network.ports(network_id=network.id, fixed_ips=f"ip_address={address}"):
        if port.device_id:
            raise SaltCloudSystemExit(
                f"{name}: its address {address} is taken by port {port.id} ({port.name or 'no name'}) of device "
                f"{port.device_id} ({port.device_owner or 'no owner'}): free that address or change {name}'s address "
                "in pillar/cluster.sls")
        if sorted(port.security_group_ids or []) != sorted(groups):
            conn.network.update_port(port, security_groups=groups)
        return port, False
    subnet = _subnet_for(conn, network, address, name)
    try:
        port = conn.network.create_port(network_id=network.id, name=name, description=MARK.format(name),
                                        fixed_ips=[{"subnet_id": subnet.id, "ip_address": address}],
                                        security_groups=groups)
    except os_exc.HttpException as exc:
        raise SaltCloudSystemExit(f"{name}: Neutron refused a port with {address} ({exc.status_code}: "
                                  f"{exc.details or exc})") from None
    return port, True


def _fire(name, what, vm_=None):
    __utils__["cloud.fire_event"](
        "event", f"{what} instance", f"salt/cloud/{name}/{what}",
        args={"name": name, "profile": (vm_ or {}).get("profile"), "provider": (vm_ or {}).get("driver")},
        sock_dir=__opts__["sock_dir"], transport=__opts__.get("transport", "zeromq"))


def _node(server):
    addresses = [a for net in (server.addresses or {}).values() for a in net]
    return {
        "id": server.id, "name": server.name, "state": server.status,
        "image": (server.image or {}).get("id"), "size": (server.flavor or {}).get("original_name"),
        "private_ips": [a["addr"] for a in addresses if a.get("OS-EXT-IPS:type", "fixed") == "fixed"],
        "public_ips": [a["addr"] for a in addresses if a.get("OS-EXT-IPS:type") == "floating"],
    }


def _minion_config(vm_, enrolment_value):
    config = salt.utils.cloud.minion_config(__opts__, vm_)
    extra = __utils__["k8sha_enrolment.minion_settings"](enrolment_value)
    config["grains"] = dict(config.get("grains") or {}, **extra.pop("grains"))
    return dict(config, **extra)


def _boot(conn, vm_, request, timeout):
    """Nova's server, ACTIVE; errors name the server and what to do."""
    name = vm_["name"]
    try:
        server = conn.compute.create_server(**request)
    except os_exc.HttpException as exc:
        text = f"{exc.details or exc}"
        if exc.status_code in (403, 413) and "quota" in text.lower():
            raise SaltCloudSystemExit(f"{name}: Nova refused it, quota exceeded ({text}): free resources or raise "
                                      "the project's quota") from None
        raise SaltCloudSystemExit(f"{name}: Nova refused the server ({exc.status_code}: {text})") from None
    try:
        return conn.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"], interval=2, wait=timeout)
    except os_exc.ResourceFailure:
        fault = (conn.compute.get_server(server.id).fault or {}).get("message", "no fault message")
        raise SaltCloudSystemExit(f"{name} ({server.id}) went to ERROR: {fault}. It is left for inspection: "
                                  f"salt-cloud -d {name} removes it") from None
    except os_exc.ResourceTimeout:
        raise SaltCloudSystemExit(f"{name} ({server.id}) is not ACTIVE after {timeout} s: raise wait_timeout in the "
                                  "profile or look at the cloud; it is left in place") from None


def create(vm_):
    name = vm_["name"]
    conn = _connection()
    if conn.compute.find_server(name):
        raise SaltCloudSystemExit(f"a server named {name} exists already: salt-cloud -d {name} first to replace it")
    timeout = int(_get(vm_, "wait_timeout", 600))
    description = __utils__["k8sha_cloud.valid_description"](__utils__["k8sha_description.served"](__opts__))
    address = __utils__["k8sha_cloud.node_address"](vm_, description)
    port, port_created = fixed_port(conn, vm_, address)
    pki_dir = __opts__["pki_dir"]
    # A new machine has a new key: an old accepted key of this id would lock it out.
    salt.utils.cloud.remove_key(pki_dir, name)
    value = __utils__["k8sha_enrolment.issue"](pki_dir, name)
    try:
        request = server_request(vm_, conn, user_data(_minion_config(vm_, value)), port.id)
        _fire(name, "creating", vm_)
        server = _boot(conn, vm_, request, timeout)
    except SaltCloudSystemExit:
        if not conn.compute.find_server(name):  # nothing half-made: no server, so no port and no value
            __utils__["k8sha_enrolment.revoke"](pki_dir, name)
            if port_created:
                conn.network.delete_port(port)
        raise
    network = _get(vm_, "floating_ip_network")
    if network:
        external = _find(conn.network.find_network, network, "network", "check floating_ip_network")
        conn.network.create_ip(floating_network_id=external.id, port_id=port.id, description=MARK.format(name))
        server = conn.compute.get_server(server.id)
    _fire(name, "created", vm_)
    log.info("k8sha_openstack: created %s (%s) at %s", name, server.id, address)
    return _node(server)


def destroy(name, call=None):
    if call == "function":
        raise SaltCloudSystemExit("destroy is an action: salt-cloud -d NAME")
    conn = _connection()
    server = conn.compute.find_server(name)
    if server is None:
        return {name: "not found"}
    _fire(name, "destroying")
    ours = [p for p in conn.network.ports(device_id=server.id) if p.description == MARK.format(name)]
    for port in conn.network.ports(device_id=server.id):
        for fip in conn.network.ips(port_id=port.id):
            if fip.description == MARK.format(name):
                conn.network.delete_ip(fip)
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, interval=2, wait=300)
    for port in ours:  # Nova only unbinds the ports it was given
        conn.network.delete_port(port)
    salt.utils.cloud.remove_key(__opts__["pki_dir"], name)
    __utils__["k8sha_enrolment.revoke"](__opts__["pki_dir"], name)
    _fire(name, "destroyed")
    return {name: "destroyed"}


def list_nodes(call=None):
    if call == "action":
        raise SaltCloudSystemExit("list_nodes is a function: salt-cloud -Q")
    return {server.name: _node(server) for server in _connection().compute.servers()}


def list_nodes_full(call=None):
    return list_nodes(call)


def list_nodes_select(call=None):
    return salt.utils.cloud.list_nodes_select(list_nodes_full(), __opts__["query.selection"], call)


def avail_images(call=None):
    return {image.name: {"id": image.id, "status": image.status} for image in _connection().image.images()}


def avail_sizes(call=None):
    return {f.name: {"id": f.id, "vcpus": f.vcpus, "ram": f.ram, "disk": f.disk} for f in _connection().compute.flavors()}
