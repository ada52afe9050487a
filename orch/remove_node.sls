{#- Take one node out of the running cluster (docs/day-2.md):
        salt-run state.orch orch.remove_node pillar='{node: cp3}'
        salt-run state.orch orch.remove_node pillar='{node: cp3, confirm_even: true}'
    Refused before anything changes if the rest would not be a valid cluster or etcd would lose
    quorum. In order: marked as taken out (no repair rebuilds it), its pods evicted (kubectl drain),
    an etcd snapshot, out of HAProxy's pool, its etcd member removed, kubeadm reset, its Node
    deleted, its machine destroyed (salt-cloud).
    Then delete it from pillar/cluster.sls. #}
{%- set node = pillar.get('node') | string %}
{%- if not pillar.get('node') %}

remove-node-needs-a-name:
  test.fail_without_changes:
    - name: "name the node: salt-run state.orch orch.remove_node pillar='{node: NAME}'"
    - failhard: True
{%- endif %}
{%- set described = salt['cluster_topology.description'](strict=False).get('nodes', [])
                    | selectattr('name', 'equalto', node) | list %}
{%- set entry = described[0] if described else {} %}

remove-node-holds-the-repair-lock:
  heal.build_locked:
    - name: control_plane
    - holder: orch.remove_node
    - failhard: True

remove-node-{{ node }}-permitted:
  cluster_nodes.removal_permitted:
    - name: {{ node | json }}
    - confirm_even: {{ pillar.get('confirm_even', False) | json }}
    - failhard: True

remove-node-{{ node }}-retired:
  cluster_nodes.retired:
    - name: {{ node | json }}
    - failhard: True

remove-node-{{ node }}-pods-evicted:
  cluster_nodes.pods_evicted:
    - name: {{ node | json }}
    - failhard: True

{%- if entry.get('role') == 'control_plane' %}

remove-node-{{ node }}-etcd-snapshot-taken:
  etcd_snapshot.taken:
    - name: {{ node | json }}
    - reason: the removal of {{ node }}
    - exclude: [{{ node | json }}]
    - failhard: True
{%- endif %}

remove-node-{{ node }}-drained:
  cluster_nodes.drained:
    - name: {{ node | json }}
    - failhard: True

remove-node-{{ node }}-etcd-member-removed:
  cluster_nodes.etcd_member_removed:
    - name: {{ node | json }}
    - failhard: True

remove-node-{{ node }}-reset:
  cluster_nodes.reset:
    - name: {{ node | json }}
    - failhard: True

remove-node-{{ node }}-kubernetes-node-deleted:
  cluster_nodes.kubernetes_node_deleted:
    - name: {{ node | json }}
    - failhard: True

remove-node-{{ node }}-machine-destroyed:
  cluster_machines.instance_absent:
    - name: {{ node | json }}
    - failhard: True

remove-node-{{ node }}-reported:
  cluster_nodes.removal_reported:
    - name: {{ node | json }}
    - address: {{ entry.get('address') | json }}

remove-node-releases-the-repair-lock:
  heal.unlocked:
    - name: control_plane
    - order: last
