{#- A managed config file changed outside Salt (reactor/config_drift.sls; tag
    salt/beacon/<node>/inotify/<path>): if it really differs from what Salt writes, re-apply
    the state that owns it (cluster_topology.config_owners), which puts it back after the
    daemon's own check, and report. #}
{%- set heal = pillar.get('heal', {}) %}
{%- set tag = heal.get('tag', '') %}
{%- set minion = tag.split('/')[2] if tag.count('/') >= 2 else '' %}
{%- set detail = tag.split('/inotify/', 1)[1] if '/inotify/' in tag else '' %}
{%- set node = salt['cluster_topology.description']().get('nodes', []) | selectattr('name', 'equalto', minion) | list %}
{%- set role = node[0].role if node else none %}
{%- set owner = salt['cluster_topology.config_owners'](role).get(detail, 'none') if role else 'none' %}
heal-config-permitted:
  heal.permitted:
    - name: config
    - tag: {{ tag | json }}
    - sender: {{ heal.get('sender') | json }}
    - role: null  # any node of the description

heal-config-needed:
  heal.needed:
    - name: config
    - check: config_drift
    - detail: {{ detail | json }}
    - require:
      - heal-config-permitted

heal-config-repaired:
  salt.state:
    - tgt: {{ minion | json }}
    - queue: True            # after any state run in progress on the node
    - sls: [{{ owner }}]
    - onchanges:
      - heal-config-needed

heal-config-verified:
  heal.verified:
    - timeout: {{ salt['cluster_topology.settings']().heal.verify_timeout }}
    - name: config
    - check: config_drift
    - detail: {{ detail | json }}
    - onchanges:
      - heal-config-needed
    - require:
      - heal-config-repaired

heal-config-healed:
  heal.recorded:
    - name: config
    - ok: True
    - onchanges:
      - heal-config-needed
    - require:
      - heal-config-verified

heal-config-failed:
  heal.recorded:
    - name: config
    - ok: False
    - onfail:
      - heal-config-repaired
      - heal-config-verified

heal-config-unlocked:
  heal.unlocked:
    - name: config
    - order: last
