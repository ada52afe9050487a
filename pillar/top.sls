{#- The cluster description goes to every node; secrets only to the roles that need them,
    targeted by minion id from the description (never by grains: a minion sets its own grains). #}
{%- import_yaml 'cluster.sls' as description %}
{%- set load_balancers = description.cluster.nodes
      | selectattr('role', 'equalto', 'loadbalancer') | map(attribute='name') | list %}
base:
  '*':
    - cluster
{%- if load_balancers %}
  '{{ load_balancers | join(",") }}':
    - match: list
    - ignore_missing: True
    - secrets.loadbalancer
{%- endif %}
