{%- from 'k8sha/map.jinja' import settings, topology with context %}
{%- set keepalived = settings.keepalived %}

include:
  - base

keepalived-package:
  pkg.installed:
    - name: {{ keepalived.package }}

{#- enable_script_security: the check script runs as this unprivileged user. #}
keepalived-script-user:
  user.present:
    - name: {{ keepalived.script_user }}
    - system: True
    - createhome: False
    - shell: /usr/sbin/nologin

keepalived-check-haproxy-script:
  file.managed:
    - name: {{ settings.libexec_dir }}/check-haproxy
    - source: salt://keepalived/files/check-haproxy.jinja
    - template: jinja
    - context:
        port: {{ topology.cluster.api.port }}
    - user: root
    - group: root
    - mode: '0755'
    - require:
      - file: k8sha-libexec-directory

keepalived-config-checker:
  file.managed:
    - name: {{ settings.libexec_dir }}/check-keepalived-config
    - source: salt://keepalived/files/check-keepalived-config
    - user: root
    - group: root
    - mode: '0755'
    - require:
      - file: k8sha-libexec-directory

keepalived-notify-script:
  file.managed:
    - name: {{ settings.libexec_dir }}/keepalived-notify
    - source: salt://keepalived/files/keepalived-notify.jinja
    - template: jinja
    - context:
        state_file: {{ keepalived.state_file | json }}
        event_tag: {{ (settings.event_prefix ~ '/keepalived/state') | json }}
        salt_call: {{ settings.salt_call | json }}
        vip: {{ topology.cluster.api.vip | json }}
        textfile_dir: {{ settings.metrics.textfile_dir | json }}
    - user: root
    - group: root
    - mode: '0755'
    - require:
      - file: k8sha-libexec-directory
