{%- from 'k8sha/map.jinja' import settings, topology with context %}
{%- set keepalived = settings.keepalived %}

include:
  - keepalived.scripts

keepalived-config:
  file.managed:
    - name: {{ keepalived.config }}
    - source: salt://keepalived/files/keepalived.conf.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0600'
    # The file may hold the VRRP secret: never print its diff.
    - show_changes: False
    # keepalived's own parser checks the candidate before it replaces the live file.
    - check_cmd: {{ settings.libexec_dir }}/check-keepalived-config
    - context:
        keepalived: {{ keepalived | json }}
        libexec_dir: {{ settings.libexec_dir | json }}
        node: {{ topology.node | json }}
        vrrp: {{ topology.vrrp | json }}
        settings: {{ topology.cluster.vrrp | json }}
        api: {{ topology.cluster.api | json }}
    - require:
      - pkg: keepalived-package
      - user: keepalived-script-user
      - file: keepalived-check-haproxy-script
      - file: keepalived-notify-script
      - file: keepalived-config-checker
