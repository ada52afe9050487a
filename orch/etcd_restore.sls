{#- The way back from a lost etcd quorum (docs/day-2.md), e.g. two of three control planes destroyed:
        salt-run state.orch orch.etcd_restore
        salt-run state.orch orch.etcd_restore pillar='{survivor: cp1, snapshot: 20261201T031303Z-cp1.db}'
    Refused while etcd has a quorum. The newest snapshot kept on the master (or `snapshot`) is
    restored onto a surviving control plane as a new one-member cluster, kubeadm's documented way;
    the API answers through the VIP again; the other control planes are reset if they answer, and
    then the build's own steps make the missing machines, converge them and join them one at a
    time. Writes made after the snapshot are lost. #}
{%- set cluster = salt['cluster_topology.description'](strict=False) %}
include:
  - orch.provision
  - orch.control_planes
  - orch.verify

etcd-restore-holds-the-repair-lock:
  heal.build_locked:
    - name: control_plane
    - holder: orch.etcd_restore
    {#- etcd has no quorum here: the heal file's lock only (other masters must stay idle by hand) #}
    - in_etcd: False
    - order: 1
    - failhard: True

etcd-restore-quorum-lost:
  etcd_restore.quorum_lost:
    - name: {{ cluster.get('name', 'unnamed') }}
    - survivor: {{ pillar.get('survivor') | json }}
    - order: 2
    - failhard: True

etcd-restore-snapshot-restored:
  etcd_restore.snapshot_restored:
    - name: {{ cluster.get('name', 'unnamed') }}
    - snapshot: {{ pillar.get('snapshot') | json }}
    - order: 3
    - failhard: True

etcd-restore-api-answers-through-the-vip:
  etcd_restore.api_serving:
    - name: {{ cluster.get('name', 'unnamed') }}
    - order: 4
    - failhard: True

etcd-restore-other-control-planes-reset:
  etcd_restore.others_reset:
    - name: {{ cluster.get('name', 'unnamed') }}
    - order: 5
    - failhard: True

etcd-restore-releases-the-repair-lock:
  heal.unlocked:
    - name: control_plane
    - order: last
