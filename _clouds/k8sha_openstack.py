"""
salt-cloud driver for OpenStack on openstacksdk (Salt 3008 ships none). It creates servers
whose minion joins the master at first boot through **cloud-init** (`salt_minion` module:
minion config with the `roles` grain, and a key pair generated here and accepted on the
master before the server exists), so no SSH from the master is needed.

Provider (cloud/openstack.providers.conf.example)::

    k8sha-openstack:
      driver: k8sha_openstack
      cloud: mycloud              # a clouds.yaml entry; or auth: {auth_url, username, ...}
      region_name: RegionOne
      minion: {master: 10.0.0.5}

Profile keys: image, size (flavor), networks, security_groups, key_name,
availability_zone, boot_volume_size (GB: boot from a volume), metadata, floating_ip_network,
wait_timeout (default 600 s), minion: {grains: {roles: [...]}}.
"""

import base64
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


def user_data(minion_config, public_key, private_key):
    """cloud-init user data: install salt-minion with this config and this key pair (pure)."""
    config = {"salt_minion": {"conf": minion_config, "public_key": public_key, "private_key": private_key}}
    return "#cloud-config\n" + salt.utils.yaml.safe_dump(config, default_flow_style=False)


def _find(finder, name, what, hint):
    try:
        return finder(name, ignore_missing=False)
    except os_exc.ResourceNotFound:
        raise SaltCloudSystemExit(f"{what} {name!r} not found: {hint}") from None


def server_request(vm_, conn, userdata):
    """The arguments of Nova's create-server call for a profile."""
    get = lambda key, default=None: salt.config.get_cloud_config_value(key, vm_, __opts__, default=default)  # noqa: E731
    image = _find(conn.image.find_image, get("image"), "image", "salt-cloud --list-images <provider>")
    flavor = _find(conn.compute.find_flavor, get("size"), "flavor", "salt-cloud --list-sizes <provider>")
    request = {
        "name": vm_["name"],
        "flavor_id": flavor.id,
        "networks": [{"uuid": _find(conn.network.find_network, n, "network", "check the profile's networks").id}
                     for n in get("networks", [])],
        "security_groups": [{"name": g} for g in get("security_groups", [])],
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


def create(vm_):
    name = vm_["name"]
    conn = _connection()
    timeout = int(salt.config.get_cloud_config_value("wait_timeout", vm_, __opts__, default=600))
    private, public = salt.utils.cloud.gen_keys(salt.config.get_cloud_config_value("keysize", vm_, __opts__, default=2048))
    request = server_request(vm_, conn, user_data(salt.utils.cloud.minion_config(__opts__, vm_), public, private))
    _fire(name, "creating", vm_)
    salt.utils.cloud.accept_key(__opts__["pki_dir"], public, name)
    try:
        server = conn.compute.create_server(**request)
    except os_exc.HttpException as exc:
        salt.utils.cloud.remove_key(__opts__["pki_dir"], name)
        text = f"{exc.details or exc}"
        if exc.status_code in (403, 413) and "quota" in text.lower():
            raise SaltCloudSystemExit(f"{name}: Nova refused it, quota exceeded ({text}): free resources or raise "
                                      "the project's quota") from None
        raise SaltCloudSystemExit(f"{name}: Nova refused the server ({exc.status_code}: {text})") from None
    try:
        server = conn.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"], interval=2, wait=timeout)
    except os_exc.ResourceFailure:
        fault = (conn.compute.get_server(server.id).fault or {}).get("message", "no fault message")
        raise SaltCloudSystemExit(f"{name} ({server.id}) went to ERROR: {fault}. It is left for inspection: "
                                  f"salt-cloud -d {name} removes it") from None
    except os_exc.ResourceTimeout:
        raise SaltCloudSystemExit(f"{name} ({server.id}) is not ACTIVE after {timeout} s: raise wait_timeout in the "
                                  "profile or look at the cloud; it is left in place") from None
    network = salt.config.get_cloud_config_value("floating_ip_network", vm_, __opts__, default=None)
    if network:
        external = _find(conn.network.find_network, network, "network", "check floating_ip_network")
        port = next(iter(conn.network.ports(device_id=server.id)))
        conn.network.create_ip(floating_network_id=external.id, port_id=port.id)
        server = conn.compute.get_server(server.id)
    _fire(name, "created", vm_)
    log.info("k8sha_openstack: created %s (%s)", name, server.id)
    return _node(server)


def destroy(name, call=None):
    if call == "function":
        raise SaltCloudSystemExit("destroy is an action: salt-cloud -d NAME")
    conn = _connection()
    server = conn.compute.find_server(name)
    if server is None:
        return {name: "not found"}
    _fire(name, "destroying")
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, interval=2, wait=300)
    salt.utils.cloud.remove_key(__opts__["pki_dir"], name)
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
