{#- The cluster description goes to every node; secrets only to the nodes that need them,
    targeted by minion id from the description (never by grains: a minion sets its own grains). #}
{%- import_yaml 'cluster.sls' as description %}
{%- set nodes = description.cluster.nodes %}
{%- set load_balancers = nodes | selectattr('role', 'equalto', 'loadbalancer') | map(attribute='name') | list %}
{%- set control_planes = nodes | selectattr('role', 'equalto', 'control_plane') | map(attribute='name') | list %}
base:
  '*':
    - cluster
{%- if opts.get('k8sha_lab') %}
    - lab
{%- endif %}
{%- if load_balancers %}
  '{{ load_balancers | join(",") }}':
    - match: list
    - ignore_missing: True
    - secrets.loadbalancer
{%- endif %}
{#- Join material exists only during a join (orch.cluster writes and removes it): for the
    joining node, and for the control planes, one of which registers it. #}
{%- for node in nodes if node.role in ('control_plane', 'worker') %}
  '{{ ([node.name] + control_planes) | unique | join(",") }}':
    - match: list
    - ignore_missing: True
    - secrets.join.{{ node.name }}
{%- endfor %}
