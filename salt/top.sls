{#- Roles come from the cluster description (by minion id) or from the `roles` grain
    that salt-cloud profiles set. Secrets are targeted by minion id only (pillar/top.sls). #}
{%- macro role(name) -%}
G@roles:{{ name }}
{%- set ids = salt['cluster_topology.members'](name) %}
{%- if ids %} or L@{{ ids | join(',') }}{% endif %}
{%- endmacro %}
base:
  '{{ role("loadbalancer") }}':
    - match: compound
    - base
    - firewall
    - haproxy
    - keepalived
    - metrics
    - beacons
  '{{ role("control_plane") }}':
    - match: compound
    - base
    - firewall
    - kubernetes.control_plane
    - beacons
  '{{ role("worker") }}':
    - match: compound
    - base
    - firewall
    - kubernetes
    - beacons
