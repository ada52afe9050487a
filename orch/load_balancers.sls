{#- The load balancers (HAProxy + keepalived) and the VIP in front of the API.
    salt-run state.orch orch.load_balancers #}
{%- set cluster = salt['cluster_topology.description'](strict=False) %}

load-balancers-converged:
  salt.state:
    - queue: True            # after any state run in progress (a repair, the reconciliation's dry run)
    - tgt: {{ salt['cluster_topology.members']('loadbalancer') | json }}
    - tgt_type: list
    - highstate: True
    - failhard: True

api-vip-answers:
  cluster_build.vip_answers:
    - name: {{ cluster.get('api', {}).get('vip', 'unset') }}
    - timeout: 60
    - failhard: True
