{#- The one healing orchestration: a fault of the catalogue (salt/k8sha/faults.yaml) on one node.
    The heal.admit runner starts it (from reactor/fault.sls and the reconciliation); by hand:
        salt-run state.orch orch.heal pillar='heal: {fault: haproxy, node: lb1}'
    permitted -> needed (the master's own check) -> repair -> verified -> recorded -> unlocked.
    Nothing after `needed` runs unless the master saw the fault itself. #}
{%- set heal = pillar.get('heal', {}) %}
{%- set faults = salt['heal_check.catalogue']() %}
{%- set fault = heal.get('fault') if heal.get('fault') in faults else none %}
{%- set node = heal.get('node') | string %}
{%- if fault is none %}

heal-unknown-fault:
  test.fail_without_changes:
    - name: "pillar heal:fault must be one of {{ faults | join(', ') }}, not {{ heal.get('fault') | json }}"
{%- else %}
{%- set entry = faults[fault] %}
{%- set detail = heal.get('detail') %}
{%- set repair = entry.repair %}
{%- set description = salt['cluster_topology.description']() %}
{%- set found = description.get('nodes', []) | selectattr('name', 'equalto', node) | list %}
{%- set role = found[0].role if found else none %}
{%- set jobs_timeout = salt['cluster_topology.settings']().heal.node_jobs_timeout %}
{%- set state_run_timeout = salt['cluster_topology.settings']().heal.state_run_timeout %}
{%- set repair_steps = ['node-idle'] %}

heal-{{ fault }}-permitted:
  heal.permitted:
    - name: {{ fault }}
    - node: {{ node | json }}
    - token: {{ heal.get('token') | json }}
    - detail: {{ detail | json }}

{%- if repair == 'rejoin' %}

{#- A machine salt-cloud just made has not synced the project's modules yet: the check needs them. #}
heal-{{ fault }}-modules-synced:
  cluster_build.minions_ready:
    - name: {{ node | json }}
    - nodes: [{{ node | json }}]
    - timeout: 60
    - require:
      - heal-{{ fault }}-permitted
{%- endif %}

heal-{{ fault }}-needed:
  heal.needed:
    - name: {{ fault }}
    - detail: {{ detail | json }}
    - require:
      - heal-{{ fault }}-{{ 'modules-synced' if repair == 'rejoin' else 'permitted' }}

{#- A job whose master died goes on on its node (another master may be taking its repair over):
    nothing runs beside it. #}
heal-{{ fault }}-node-idle:
  cluster_build.jobs_finished:
    - name: {{ node | json }}
    - timeout: {{ jobs_timeout }}
    - onchanges:
      - heal-{{ fault }}-needed
{%- if repair == 'rejoin' %}
{%- do repair_steps.extend(['etcd-snapshot-taken', 'stale-member-removed', 'node-reset', 'role-applied', 'joined']) %}

{#- A replaced or half-joined control plane joins again (docs/events-and-healing.md): a snapshot first (no
    snapshot, no change), its stale etcd member removed by peer URL (only with quorum, never a
    healthy one), a half-joined node reset, its role applied, joined with fresh join material. #}
heal-{{ fault }}-etcd-snapshot-taken:
  etcd_snapshot.taken:
    - name: {{ node | json }}
    - reason: the rejoin of {{ node }} (member removal, reset, member add)
    - exclude: [{{ node | json }}]
    - onchanges:
      - heal-{{ fault }}-needed
    - require:
      - heal-{{ fault }}-node-idle

heal-{{ fault }}-stale-member-removed:
  heal.stale_etcd_member_removed:
    - name: {{ node | json }}
    - onchanges:
      - heal-{{ fault }}-needed
    - require:
      - heal-{{ fault }}-etcd-snapshot-taken

heal-{{ fault }}-node-reset:
  heal.node_reset:
    - name: {{ node | json }}
    - onchanges:
      - heal-{{ fault }}-needed
    - require:
      - heal-{{ fault }}-stale-member-removed

heal-{{ fault }}-role-applied:
  salt.state:
    - tgt: {{ node | json }}
    - queue: True            # a run started meanwhile: deferred (Salt 3008), not refused
    - timeout: {{ state_run_timeout }}  # then find_job: waited for while it runs, not once it is lost
    - highstate: True
    - onchanges:
      - heal-{{ fault }}-needed
    - require:
      - heal-{{ fault }}-node-reset

heal-{{ fault }}-joined:
  kubeadm_cluster.nodes_joined:
    - name: {{ node | json }}
    - onchanges:
      - heal-{{ fault }}-needed
    - require:
      - heal-{{ fault }}-role-applied
{%- else %}
{%- do repair_steps.append('repaired') %}

heal-{{ fault }}-repaired:
{%- if repair.function is defined %}
  salt.function:
    - name: {{ repair.function }}
    - tgt: {{ node | json }}
{%- else %}
{%- set owner = salt['cluster_topology.config_owners'](role).get(detail, 'none') if repair.sls == 'owner_of_detail' and role else repair.sls %}
  salt.state:
    - tgt: {{ node | json }}
    - queue: True            # a run started meanwhile: deferred (Salt 3008), not refused
    - timeout: {{ state_run_timeout }}  # then find_job: waited for while it runs, not once it is lost
    - sls: [{{ owner }}]
{%- endif %}
    - onchanges:
      - heal-{{ fault }}-needed
    - require:
      - heal-{{ fault }}-node-idle
{%- endif %}
{%- do repair_steps.append('verified') %}

heal-{{ fault }}-verified:
{%- if entry.verify.get('cluster_healthy') %}
  cluster_build.healthy:
    - name: {{ description.get('name', 'unnamed') }}
    - timeout: 120
{%- else %}
  heal.verified:
    - name: {{ fault }}
    - detail: {{ detail | json }}
    - timeout: {{ salt['cluster_topology.settings']().heal.verify_timeout }}
{%- endif %}
    - onchanges:
      - heal-{{ fault }}-needed
    - require:
      - heal-{{ fault }}-{{ repair_steps[-2] }}

heal-{{ fault }}-healed:
  heal.recorded:
    - name: {{ fault }}
    - ok: True
    - onchanges:
      - heal-{{ fault }}-needed
    - require:
      - heal-{{ fault }}-verified

heal-{{ fault }}-failed:
  heal.recorded:
    - name: {{ fault }}
    - ok: False
    - onfail:
{%- for step in repair_steps %}
      - heal-{{ fault }}-{{ step }}
{%- endfor %}

heal-{{ fault }}-unlocked:
  heal.unlocked:
    - name: {{ fault }}
    - order: last
{%- endif %}
