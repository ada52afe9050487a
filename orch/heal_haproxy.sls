{#- HAProxy down on a load balancer (reactor/haproxy_down.sls). systemd restarts a crashed
    HAProxy by itself; this repairs what it cannot (stopped, masked, broken config): re-apply
    the haproxy state, check /healthz through the VIP, report. #}
{%- set heal = pillar.get('heal', {}) %}
{%- set minion = heal.get('tag', '').split('/')[2] if heal.get('tag', '').count('/') >= 2 else '' %}

heal-haproxy-permitted:
  heal.permitted:
    - name: haproxy
    - tag: {{ heal.get('tag', '') | json }}
    - sender: {{ heal.get('sender') | json }}
    - role: loadbalancer

heal-haproxy-needed:
  heal.needed:
    - name: haproxy
    - check: haproxy_down
    - require:
      - heal-haproxy-permitted

heal-haproxy-state-applied:
  salt.state:
    - tgt: {{ minion | json }}
    - queue: True            # after any state run in progress on the node
    - sls: [haproxy]
    - onchanges:
      - heal-haproxy-needed

heal-haproxy-verified:
  heal.verified:
    - timeout: {{ salt['cluster_topology.settings']().heal.verify_timeout }}
    - name: haproxy
    - check: haproxy_down
    - onchanges:
      - heal-haproxy-needed
    - require:
      - heal-haproxy-state-applied

heal-haproxy-healed:
  heal.recorded:
    - name: haproxy
    - ok: True
    - onchanges:
      - heal-haproxy-needed
    - require:
      - heal-haproxy-verified

heal-haproxy-failed:
  heal.recorded:
    - name: haproxy
    - ok: False
    - onfail:
      - heal-haproxy-state-applied
      - heal-haproxy-verified

heal-haproxy-unlocked:
  heal.unlocked:
    - name: haproxy
    - order: last
