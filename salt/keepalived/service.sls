{%- from 'k8sha/map.jinja' import settings with context %}

include:
  - keepalived.config
  - haproxy.service

keepalived-service:
  service.running:
    - name: {{ settings.keepalived.service }}
    - enable: True
    - reload: True
    - require:
      # HAProxy first: keepalived must not claim the VIP for a HAProxy that is not there.
      - service: haproxy-service
      - cmd: haproxy-down-flag-initialised
    - watch:
      - file: keepalived-config
