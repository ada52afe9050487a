{#- The first control plane creates the cluster (kubeadm init) unless it is a member already.
    orch.control_planes applies it to one node only, when no control plane is a member. #}
{%- from 'k8sha/map.jinja' import topology with context %}

include:
  - kubernetes.control_plane

kubernetes-cluster-initialised:
  kubeadm_member.initialized:
    - name: {{ topology.cluster.name }}
    - require:
      - sls: kubernetes.control_plane
