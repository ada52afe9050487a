{#- The cluster is healthy: one healthy etcd member per control plane, every node Ready,
    /healthz through the VIP.   salt-run state.orch orch.verify #}
{%- set cluster = salt['cluster_topology.description'](strict=False) %}

cluster-healthy:
  cluster_build.healthy:
    - name: {{ cluster.get('name', 'unnamed') }}
    - timeout: 90
