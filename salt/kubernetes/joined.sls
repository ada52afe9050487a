{#- This node joins the cluster with the join material orch.cluster puts in its pillar
    (cluster_build.joined); a member is left alone, a half-joined node is refused. #}
{%- from 'k8sha/map.jinja' import topology with context %}
{%- set node_sls = 'kubernetes.control_plane' if topology.node.role == 'control_plane' else 'kubernetes' %}

include:
  - {{ node_sls }}

kubernetes-node-joined:
  kubeadm_member.joined:
    - name: {{ topology.node.name }}
    - require:
      - sls: {{ node_sls }}
