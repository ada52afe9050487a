{#- A rolling upgrade to the description's cluster.kubernetes.version (docs/day-2.md):
        edit pillar/cluster.sls (cluster: kubernetes: version: '1.32'), then
        salt-run state.orch orch.upgrade              (test=True: the plan, nothing changed)
    kubeadm's documented order, one node at a time: the first control plane (kubeadm upgrade
    plan/apply), the other control planes (kubeadm upgrade node), the workers last. A control
    plane leaves HAProxy's pool on both load balancers before it is touched and comes back once
    HAProxy sees it UP. Refused before anything changes when the version skips a minor one or goes
    back, or when a node, etcd or HAProxy is not healthy; an etcd snapshot is taken first.
    A node that already runs the version is skipped: a stopped upgrade resumes on a re-run. #}
{%- set cluster = salt['cluster_topology.description']() %}
{%- set control_planes = salt['cluster_topology.members']('control_plane') %}
{%- set workers = salt['cluster_topology.members']('worker') %}

upgrade-description-valid:
  cluster_build.description_valid:
    - name: {{ cluster.name | json }}
    - failhard: True

{#- every node answers, with this version of the project's modules (kubeadm_upgrade) #}
upgrade-minions-ready:
  cluster_build.minions_ready:
    - name: {{ cluster.name | json }}
    - failhard: True

upgrade-holds-the-repair-lock:
  heal.build_locked:
    - name: control_plane
    - holder: orch.upgrade
    {#- a node may take kubernetes:upgrade_timeout to come back, plus its packages (the lock ends
        with the run's process in any case) #}
    - ttl: {{ 900 + (control_planes + workers) | length * 600 }}
    - failhard: True

upgrade-to-{{ cluster.kubernetes.version }}-permitted:
  cluster_upgrade.permitted:
    - name: {{ cluster.name | json }}
    - failhard: True
{%- for node in control_planes %}

control-plane-{{ node }}-upgraded:
  cluster_upgrade.control_plane_upgraded:
    - name: {{ node }}
    - first: {{ loop.first | json }}
    - failhard: True
{%- endfor %}
{%- for node in workers %}

worker-{{ node }}-upgraded:
  cluster_upgrade.worker_upgraded:
    - name: {{ node }}
    - failhard: True
{%- endfor %}

upgrade-releases-the-repair-lock:
  heal.unlocked:
    - name: control_plane
    - order: last
