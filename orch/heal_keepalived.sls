{#- keepalived stopped on a load balancer (reactor/service_stopped.sls; tag
    salt/beacon/<lb>/service/keepalived): re-apply the state that owns it (it starts and unmasks
    it), check it runs and /healthz answers through the VIP, report. #}
{%- set heal = pillar.get('heal', {}) %}
{%- set tag = heal.get('tag', '') %}
{%- set minion = tag.split('/')[2] if tag.count('/') >= 2 else '' %}
{%- set detail = tag.split('/')[-1] %}
{%- set owner = {'keepalived': 'keepalived'}.get(detail, 'none') %}
heal-keepalived-permitted:
  heal.permitted:
    - name: keepalived
    - tag: {{ tag | json }}
    - sender: {{ heal.get('sender') | json }}
    - role: loadbalancer

heal-keepalived-needed:
  heal.needed:
    - name: keepalived
    - check: service_stopped
    - detail: {{ detail | json }}
    - require:
      - heal-keepalived-permitted

heal-keepalived-repaired:
  salt.state:
    - tgt: {{ minion | json }}
    - queue: True            # after any state run in progress on the node
    - sls: [{{ owner }}]
    - onchanges:
      - heal-keepalived-needed

heal-keepalived-verified:
  heal.verified:
    - timeout: {{ salt['cluster_topology.settings']().heal.verify_timeout }}
    - name: keepalived
    - check: service_stopped
    - detail: {{ detail | json }}
    - onchanges:
      - heal-keepalived-needed
    - require:
      - heal-keepalived-repaired

heal-keepalived-healed:
  heal.recorded:
    - name: keepalived
    - ok: True
    - onchanges:
      - heal-keepalived-needed
    - require:
      - heal-keepalived-verified

heal-keepalived-failed:
  heal.recorded:
    - name: keepalived
    - ok: False
    - onfail:
      - heal-keepalived-repaired
      - heal-keepalived-verified

heal-keepalived-unlocked:
  heal.unlocked:
    - name: keepalived
    - order: last
