{#- An etcd snapshot on demand: the same step builds and repairs take before a membership change. Taken on a control plane whose own
    member is healthy, checked (`etcdctl snapshot status`), copied to the master and compared by
    sha256, kept under <cachedir>/k8sha-etcd-snapshots (0600), the oldest pruned past
    k8sha:lookup:etcd:snapshot_retention. It takes no lock: it changes no member, so repairs need
    not wait for it.
    salt-run state.orch orch.etcd_snapshot #}
{%- set cluster = salt['cluster_topology.description'](strict=False) %}

etcd-snapshot-taken:
  etcd_snapshot.taken:
    - name: {{ cluster.get('name', 'unnamed') }}
    - reason: "the operator's request or the schedule (orch.etcd_snapshot)"
    - failhard: True
