{#- The beacons of this node's role: what the healing orchestrations react to (docs/events-and-healing.md).
    Every beacon is silent while Salt's own state runs change things. The project's beacons get what
    they need in their configuration, rendered here from the one source: they run in the minion's
    main process, where a call to a master's file server (a dead master's: 180 s) makes it deaf. #}
{%- from 'k8sha/map.jinja' import settings, topology with context %}
{%- set beacons = settings.beacons %}
{%- set role = topology.node.role %}
{%- set owned = salt['cluster_topology.config_owners'](role) %}

{#- Config files changed outside Salt (pyinotify): modified, replaced, removed, chmod-ed. #}
k8sha-beacon-config-drift:
  beacon.present:
    - name: inotify
    - save: True
    - disable_during_state_run: True
    - interval: {{ beacons.interval }}
    - files:
{%- for path in owned | sort %}
        {{ path }}:
          mask: [close_write, delete_self, move_self, attrib]
{%- endfor %}
{%- if role == 'loadbalancer' %}

k8sha-beacon-haproxy:
  beacon.present:
    - name: k8sha_haproxy
    - save: True
    - disable_during_state_run: True
    - interval: {{ beacons.interval }}
    - remind: {{ beacons.remind }}
    - socket: {{ settings.haproxy.stats_socket }}

{#- keepalived stopped (or masked): systemd restarts crashes, not stops. (HAProxy is
    watched by k8sha_haproxy above: one beacon per fault, so one repair per fault.) #}
k8sha-beacon-keepalived:
  beacon.present:
    - name: service
    - save: True
    - disable_during_state_run: True
    - interval: {{ beacons.interval }}
    - services:
        {{ settings.keepalived.service }}:
          onchangeonly: True
          emitatstartup: False
{%- elif role == 'control_plane' %}

k8sha-beacon-apiserver:
  beacon.present:
    - name: k8sha_apiserver
    - save: True
    - disable_during_state_run: True
    - interval: {{ beacons.interval }}
    - remind: {{ beacons.remind }}
    - fall: {{ beacons.apiserver.fall }}
    - rise: {{ beacons.apiserver.rise }}
    - url: https://127.0.0.1:{{ topology.cluster.api.port }}/healthz
{%- endif %}
