{%- from 'k8sha/map.jinja' import settings, topology with context %}
{%- set haproxy = settings.haproxy %}

include:
  - haproxy.service

haproxy-config:
  file.managed:
    - name: {{ haproxy.config }}
    - source: salt://haproxy/files/haproxy.cfg.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    # HAProxy's own parser checks the candidate before it replaces the live file.
    - check_cmd: /usr/sbin/haproxy -c -f
    - context:
        haproxy: {{ haproxy | json }}
        api: {{ topology.cluster.api | json }}
        control_planes: {{ topology.nodes_by_role.control_plane | json }}
        node: {{ topology.node | json }}
        metrics_port: {{ settings.ports.haproxy_metrics }}
    - require:
      - pkg: haproxy-package
    - watch_in:
      - service: haproxy-service
