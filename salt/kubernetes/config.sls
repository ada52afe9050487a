{#- kubeadm's configuration for this node: the API behind the VIP (controlPlaneEndpoint),
    the VIP and the load balancers in the API certificate. Join material (tokens,
    certificate keys) is never written here: it is made fresh for each join. #}
{%- from 'k8sha/map.jinja' import settings, topology with context %}
{%- set kubernetes = settings.kubernetes %}

kubernetes-kubeadm-config:
  file.managed:
    - name: {{ kubernetes.kubeadm_config }}
    - source: salt://kubernetes/files/kubeadm.yaml.jinja
    - template: jinja
    - makedirs: True
    - mode: '0600'
    - context:
        cluster: {{ topology.cluster | json }}
        node: {{ topology.node | json }}
        load_balancers: {{ topology.nodes_by_role.loadbalancer | json }}
        settings: {{ settings | json }}
        node_registration: {{ salt['cluster_topology.node_registration']() | json }}
        kubeadm_api: {{ salt['cluster_topology.kubeadm_api_version']() | json }}
