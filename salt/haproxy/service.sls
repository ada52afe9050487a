{%- from 'k8sha/map.jinja' import settings with context %}
{%- set haproxy = settings.haproxy %}

include:
  - base
  - haproxy.sysctl

haproxy-package:
  pkg.installed:
    - name: {{ haproxy.package }}

haproxy-signal-script:
  file.managed:
    - name: {{ settings.libexec_dir }}/haproxy-signal
    - source: salt://haproxy/files/haproxy-signal.jinja
    - template: jinja
    - context:
        down_file: {{ settings.keepalived.haproxy_down_file | json }}
    - user: root
    - group: root
    - mode: '0755'
    - require:
      - file: k8sha-libexec-directory

{#- systemd tells keepalived the instant HAProxy exits (crash, kill -9, stop): the
    VIP moves in ~0.25 s instead of waiting for a polled check. #}
haproxy-systemd-signal-dropin:
  file.managed:
    - name: /etc/systemd/system/{{ haproxy.service }}.service.d/k8sha-signal.conf
    - makedirs: True
    - contents: |
        # Managed by Salt: tell keepalived (track_file) when HAProxy is up or gone, and let
        # systemd restart a crashed HAProxy at once (Salt heals what systemd cannot: a stop,
        # a mask, a bad config).
        [Service]
        ExecStartPost={{ settings.libexec_dir }}/haproxy-signal up
        ExecStopPost={{ settings.libexec_dir }}/haproxy-signal down
        Restart=on-failure
        RestartSec=100ms
    - require:
      - file: haproxy-signal-script

haproxy-systemd-reload:
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: haproxy-systemd-signal-dropin

haproxy-service:
  service.running:
    - name: {{ haproxy.service }}
    - enable: True
    - unmask: True
    - unmask_runtime: True
    - reload: True
    - require:
      - pkg: haproxy-package
      - sysctl: haproxy-allow-binding-the-vip
      - module: haproxy-systemd-reload

{#- HAProxy may have been running before the drop-in existed (the package starts it):
    record it as up once, so that keepalived does not start in FAULT. #}
haproxy-down-flag-initialised:
  cmd.run:
    - name: {{ settings.libexec_dir }}/haproxy-signal up
    - creates: {{ settings.keepalived.haproxy_down_file }}
    - onlyif: systemctl is-active --quiet {{ haproxy.service }}
    - require:
      - service: haproxy-service
