{#- Workers: their role, then all join in parallel, each with its own token.
    salt-run state.orch orch.workers #}
{%- set workers = salt['cluster_topology.members']('worker') %}
{%- if workers %}

workers-converged:
  salt.state:
    - queue: True            # after any state run in progress (a repair, the reconciliation's dry run)
    - tgt: {{ workers | json }}
    - tgt_type: list
    - highstate: True
    - failhard: True

workers-joined:
  kubeadm_cluster.nodes_joined:
    - name: workers
    - nodes: {{ workers | json }}
    - failhard: True
{%- else %}

workers-none-in-description:
  test.nop:
    - name: the cluster description has no worker
{%- endif %}
