{#- kubeadm's certificates renewed on the control planes, one at a time (docs/day-2.md):
        salt-run state.orch orch.renew_certs
        salt-run state.orch orch.renew_certs pillar='{threshold_days: 400}'    (renew what expires within 400 days)
        salt-run state.orch orch.renew_certs pillar='{force: true}'            (every control plane)
    A control plane whose certificates are due leaves HAProxy's pool, renews (kubeadm certs renew
    all, static pods restarted), and comes back when HAProxy sees it UP; /healthz is checked
    through the VIP before the next one. #}
{%- set control_planes = salt['cluster_topology.members']('control_plane') %}

renew-certs-holds-the-repair-lock:
  heal.build_locked:
    - name: control_plane
    - holder: orch.renew_certs
    - failhard: True
{%- for node in control_planes %}

control-plane-{{ node }}-certificates-renewed:
  cluster_certs.renewed:
    - name: {{ node }}
    - threshold_days: {{ pillar.get('threshold_days') | json }}
    - force: {{ pillar.get('force', False) | json }}
    - failhard: True
{%- endfor %}

renew-certs-releases-the-repair-lock:
  heal.unlocked:
    - name: control_plane
    - order: last
