{#- Control planes: their role (containerd, Kubernetes packages, kubeadm config), kubeadm init
    on the first unless a cluster exists, then joins one node at a time (etcd adds one
    member at a time), each with fresh join material.
    salt-run state.orch orch.control_planes #}
{%- set control_planes = salt['cluster_topology.members']('control_plane') %}
{%- set cluster = salt['cluster_topology.description'](strict=False) %}

control-planes-converged:
  salt.state:
    - queue: True            # after any state run in progress (a repair, the reconciliation's dry run)
    - tgt: {{ control_planes | json }}
    - tgt_type: list
    - highstate: True
    - failhard: True

kubernetes-cluster-initialized:
  kubeadm_cluster.initialized:
    - name: {{ cluster.get('name', 'unnamed') }}
    - failhard: True

{#- From here on, this master's repair locks are taken in etcd too (other masters see them). #}
salt-master-etcd-client-ready:
  heal.etcd_client_ready:
    - name: {{ opts['id'] | json }}
    - failhard: True
{%- for node in control_planes %}

control-plane-{{ node }}-joined:
  kubeadm_cluster.nodes_joined:
    - name: {{ node }}
    - failhard: True
{%- endfor %}
