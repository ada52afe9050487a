{#- The cluster description goes to every node; secrets only to the nodes that need them,
    targeted by minion id from the description (never by grains: a minion sets its own grains).
    The one reader (cluster_topology.served) never fails: a broken description still gives every
    node its `cluster` pillar, so that the states refuse with the validation list. #}
{%- set members = salt['cluster_topology.served']()['members'] %}
{%- set load_balancers = members.loadbalancer %}
{%- set control_planes = members.control_plane %}
base:
  '*':
    - cluster
{%- if opts.get('k8sha_lab') %}
    - lab
{%- if opts.get('k8sha_lab_kubernetes') == 'real' %}
    - lab_kubernetes
{%- endif %}
{%- endif %}
{%- if load_balancers %}
  '{{ load_balancers | join(",") }}':
    - match: list
    - ignore_missing: True
    - secrets.loadbalancer
{%- endif %}
{#- Join material exists only during a join (orch.cluster writes and removes it): for the
    joining node, and for the control planes, one of which registers it. #}
{%- for name in control_planes + members.worker %}
  '{{ ([name] + control_planes) | unique | join(",") }}':
    - match: list
    - ignore_missing: True
    - secrets.join.{{ name }}
{%- endfor %}
{#- The snapshot of an etcd restore exists only during it (orch.etcd_restore): for the survivor alone. #}
{%- for name in control_planes %}
  'L@{{ name }}':                # (a compound key: a plain '{{ name }}' may be a join target's key already)
    - match: compound
    - ignore_missing: True
    - secrets.etcd_restore.{{ name }}
{%- endfor %}
