{%- from 'k8sha/map.jinja' import settings with context %}

include:
  - keepalived.config
  - haproxy.service

{#- The first layer of healing: systemd restarts a crashed keepalived within a second.
    Salt (fault `keepalived`, orch.heal) starts one that was stopped or masked. #}
keepalived-systemd-restart-dropin:
  file.managed:
    - name: /etc/systemd/system/{{ settings.keepalived.service }}.service.d/k8sha-restart.conf
    - makedirs: True
    - contents: |
        # Managed by Salt: restart keepalived when it crashes.
        [Service]
        Restart=on-failure
        RestartSec=1

keepalived-systemd-reload:
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: keepalived-systemd-restart-dropin

keepalived-service:
  service.running:
    - name: {{ settings.keepalived.service }}
    - enable: True
    - unmask: True
    - unmask_runtime: True
    - reload: True
    - require:
      - module: keepalived-systemd-reload
      # HAProxy first: keepalived must not claim the VIP for a HAProxy that is not there.
      - service: haproxy-service
      - cmd: haproxy-down-flag-initialised
    - watch:
      - file: keepalived-config
