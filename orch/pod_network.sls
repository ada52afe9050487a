{#- The routed pod network on every Kubernetes node, once all have joined: each node's CNI
    configuration holds the pod CIDR the controller-manager gave it, and its routes every other
    node's (so it runs on all of them whenever one joins).  salt-run state.orch orch.pod_network #}
{%- set members = salt['cluster_topology.members']('control_plane') + salt['cluster_topology.members']('worker') %}

pod-network-ready:
  kubeadm_cluster.pod_network_ready:
    - name: routed pod network
    - nodes: {{ members | json }}
    - failhard: True
