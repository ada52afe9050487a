{#- A control plane's API server fails /healthz (reactor/apiserver_unhealthy.sls): if
    the master sees it too, restart it (kubeadm_member.restart_apiserver), check /healthz, report. #}
{%- set heal = pillar.get('heal', {}) %}
{%- set tag = heal.get('tag', '') %}
{%- set minion = tag.split('/')[2] if tag.count('/') >= 2 else '' %}
{%- set detail = none %}
heal-apiserver-permitted:
  heal.permitted:
    - name: apiserver
    - tag: {{ tag | json }}
    - sender: {{ heal.get('sender') | json }}
    - role: control_plane

heal-apiserver-needed:
  heal.needed:
    - name: apiserver
    - check: apiserver_unhealthy
    - detail: {{ detail | json }}
    - require:
      - heal-apiserver-permitted

heal-apiserver-repaired:
  salt.function:
    - name: kubeadm_member.restart_apiserver
    - tgt: {{ minion | json }}
    - onchanges:
      - heal-apiserver-needed

heal-apiserver-verified:
  heal.verified:
    - timeout: {{ salt['cluster_topology.settings']().heal.verify_timeout }}
    - name: apiserver
    - check: apiserver_unhealthy
    - detail: {{ detail | json }}
    - onchanges:
      - heal-apiserver-needed
    - require:
      - heal-apiserver-repaired

heal-apiserver-healed:
  heal.recorded:
    - name: apiserver
    - ok: True
    - onchanges:
      - heal-apiserver-needed
    - require:
      - heal-apiserver-verified

heal-apiserver-failed:
  heal.recorded:
    - name: apiserver
    - ok: False
    - onfail:
      - heal-apiserver-repaired
      - heal-apiserver-verified

heal-apiserver-unlocked:
  heal.unlocked:
    - name: apiserver
    - order: last
