"""
Join material left behind: kubeadm_cluster.nodes_joined writes a 0600 pillar file per join
(secrets/join/<node>.sls, headed by its writer's pid) and removes it after the join. A master
restart or a killed run leaves it, with a token still registered on the cluster; ``clean``
removes the file and revokes the token. heal.reconcile runs it first.

CLI example::

    salt-run join_material.clean
"""

import logging
import os

import yaml

log = logging.getLogger(__name__)

__virtualname__ = "join_material"


def __virtual__():
    return __virtualname__


def clean():
    """Join material (secrets/join/<node>.sls) whose writer is gone — a master restart or a
    killed run in the middle of a join — is removed and its token revoked on a control plane.
    heal.reconcile runs this first (``salt-run join_material.clean``)."""
    functions = __utils__["k8sha_master.functions"](__opts__)
    root = __opts__["pillar_roots"]["base"][0]
    removed, lock_ttl = {}, functions["cluster_topology.settings"]()["heal"]["lock_ttl"]
    for path in __utils__["k8sha_heal.stale_join_files"](os.path.join(root, "secrets", "join"), lock_ttl):
        node, token_id = os.path.basename(path)[:-4], _token_id(path)
        os.unlink(path)
        revoked_on = _revoked_on(functions, token_id) if token_id else None
        removed[node] = f"token {token_id} revoked on {revoked_on}" if revoked_on else \
            "its token could not be revoked (no control plane did): it expires with its TTL"
        log.info("heal: join material of %s left by a run that died: removed; %s", node, removed[node])
    for path in __utils__["k8sha_heal.stale_join_files"](os.path.join(root, "secrets", "etcd_restore"), lock_ttl):
        os.unlink(path)  # an etcd snapshot delivered for a restore that died
        removed[f"{os.path.basename(path)[:-4]} (etcd restore)"] = "snapshot removed from its pillar"
    return {"removed": removed}


def _revoked_on(functions, token_id):
    """The control plane that deleted token ``token_id`` (the public half), or None."""
    for issuer in functions["cluster_topology.members"]("control_plane"):
        answer = functions["saltutil.cmd"]([issuer], "kubeadm_member.revoke_join", arg=[token_id],
                                           tgt_type="list", timeout=30).get(issuer, {})
        if answer.get("retcode", 1) == 0:
            return issuer
    return None


def _token_id(path):
    """The token id (the part before the dot) of a join material file, without logging the token."""
    try:
        material = next(iter((yaml.safe_load(open(path).read()) or {}).get("k8sha_join", {}).values()))
        return str(material["token"]).split(".", 1)[0]
    except (OSError, ValueError, StopIteration, KeyError, TypeError, AttributeError):
        return None
