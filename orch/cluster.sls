{#- The whole build (docs/building.md):  salt-run state.orch orch.cluster
    Each part is an orchestration that can also run alone, in this order. Every step checks
    before it acts, so a re-run on a healthy cluster changes nothing; the first failure stops
    the run (failhard) with the node and the cause. #}
include:
  - orch.provision
  - orch.load_balancers
  - orch.control_planes
  - orch.workers
  - orch.pod_network
  - orch.verify

{#- While the cluster is built, the machines' start events must not start repairs of nodes
    being joined here: the build holds the control-plane lock (it expires, should a run die). #}
cluster-build-holds-the-repair-lock:
  heal.build_locked:
    - name: control_plane
    - order: 1
    - failhard: True

cluster-build-releases-the-repair-lock:
  heal.unlocked:
    - name: control_plane
    - order: last
