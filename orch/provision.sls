{#- Validate the description, create the machines (salt-cloud map), wait for their minions.
    salt-run state.orch orch.provision #}
{%- set settings = salt['cluster_topology.settings']() %}
{#- strict=False: names only, so that an invalid description reaches the first step, which lists its problems. #}
{%- set cluster = salt['cluster_topology.description'](strict=False) %}

cluster-description-valid:
  cluster_build.description_valid:
    - name: {{ cluster.get('name', 'unnamed') }}
    - failhard: True
{%- if settings.openstack.network or opts.get('k8sha_lab') %}

{#- The groups the instances' profiles name must exist before the instances (in Neutron, or
    on the lab's switch, which enforces the same rules). #}
cluster-security-groups-ready:
  cluster_machines.security_groups_ready:
    - name: {{ cluster.get('name', 'unnamed') }}
    - failhard: True
{%- endif %}
{%- if settings.cloud.provision %}

cluster-machines-present:
  cluster_machines.instances_present:
    - name: {{ cluster.get('name', 'unnamed') }}
{%- if settings.cloud.map %}
    - map: {{ settings.cloud.map }}
{%- else %}
    - profiles: {{ settings.cloud.profiles | json }}
{%- endif %}
    - failhard: True
{%- endif %}

{%- if settings.openstack.network %}

{#- OpenStack: the VIP may move only if Neutron allows it on both LB ports. #}
cluster-vip-networking-ready:
  cluster_machines.vip_networking_ready:
    - name: {{ cluster.get('api', {}).get('vip', 'unset') }}
    - failhard: True
{%- endif %}

cluster-minions-ready:
  cluster_build.minions_ready:
    - name: {{ cluster.get('name', 'unnamed') }}
    - timeout: {{ settings.cloud.minion_timeout }}
    - failhard: True

cluster-base-and-firewall:
  salt.state:
    - queue: True            # after any state run in progress (a repair, the reconciliation's dry run)
    - tgt: {{ (salt['cluster_topology.members']('loadbalancer') + salt['cluster_topology.members']('control_plane')
              + salt['cluster_topology.members']('worker')) | json }}
    - tgt_type: list
    - sls: [base, firewall]
    - failhard: True
