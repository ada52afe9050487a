{#- A control plane (re)started (reactor/node_back.sls, salt/minion/<id>/start). If it is not a
    member any more — a machine replaced by salt-cloud under the same name, or a join that
    stopped half-way — it rejoins (DESIGN.md §7): its stale etcd member is removed by peer URL
    (only if the others keep a quorum), a half-joined node is reset, its role is applied, it
    joins with fresh join material (upload-certs included), and the cluster is verified.
    One control-plane repair at a time (lock "control_plane"). A member is left alone. #}
{%- set heal = pillar.get('heal', {}) %}
{%- set tag = heal.get('tag', '') %}
{%- set minion = tag.split('/')[2] if tag.count('/') >= 2 else '' %}
{%- set cluster = salt['cluster_topology.description']() %}
{%- set node = cluster.get('nodes', []) | selectattr('name', 'equalto', minion) | list %}
{%- if node and node[0].role != 'control_plane' and heal.get('sender') == minion %}

{#- Every minion's start event comes here: only control planes have something to rejoin. #}
heal-control-plane-not-a-control-plane:
  test.succeed_without_changes:
    - name: {{ minion }} is a {{ node[0].role }}; nothing to rejoin
{%- else %}

heal-control-plane-permitted:
  heal.permitted:
    - name: control_plane
    - tag: {{ tag | json }}
    - sender: {{ heal.get('sender') | json }}
    - role: control_plane
    - lock: control_plane

heal-control-plane-modules-synced:
  cluster_build.minions_ready:
    - name: {{ minion | json }}
    - nodes: [{{ minion | json }}]
    - timeout: 60
    - require:
      - heal-control-plane-permitted

heal-control-plane-needed:
  heal.needed:
    - name: control_plane
    - check: control_plane_rejoin
    - require:
      - heal-control-plane-modules-synced

heal-control-plane-etcd-snapshot-taken:
  etcd_snapshot.taken:
    - name: {{ minion | json }}
    - reason: the rejoin of {{ minion }} (member removal, reset, member add)
    - exclude: [{{ minion | json }}]
    - onchanges:
      - heal-control-plane-needed

heal-control-plane-stale-member-removed:
  heal.stale_etcd_member_removed:
    - name: {{ minion | json }}
    - onchanges:
      - heal-control-plane-needed
    - require:
      - heal-control-plane-etcd-snapshot-taken

heal-control-plane-node-reset:
  heal.node_reset:
    - name: {{ minion | json }}
    - onchanges:
      - heal-control-plane-needed
    - require:
      - heal-control-plane-stale-member-removed

heal-control-plane-role-applied:
  salt.state:
    - tgt: {{ minion | json }}
    - queue: True            # after any state run in progress on the node
    - highstate: True
    - onchanges:
      - heal-control-plane-needed
    - require:
      - heal-control-plane-node-reset

heal-control-plane-joined:
  cluster_build.joined:
    - name: {{ minion | json }}
    - onchanges:
      - heal-control-plane-needed
    - require:
      - heal-control-plane-role-applied

heal-control-plane-verified:
  cluster_build.healthy:
    - name: {{ cluster.get('name', 'unnamed') }}
    - timeout: 120
    - onchanges:
      - heal-control-plane-needed
    - require:
      - heal-control-plane-joined

heal-control-plane-healed:
  heal.recorded:
    - name: control_plane
    - ok: True
    - onchanges:
      - heal-control-plane-needed
    - require:
      - heal-control-plane-verified

heal-control-plane-failed:
  heal.recorded:
    - name: control_plane
    - ok: False
    - onfail:
      - heal-control-plane-etcd-snapshot-taken
      - heal-control-plane-stale-member-removed
      - heal-control-plane-node-reset
      - heal-control-plane-role-applied
      - heal-control-plane-joined
      - heal-control-plane-verified

heal-control-plane-unlocked:
  heal.unlocked:
    - name: control_plane
    - order: last
{%- endif %}
