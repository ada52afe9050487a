{#- etcdctl on a control plane: kubeadm runs etcd in a static pod, so the host has no client.
    The distribution's etcd-client (the v3 API the checks use is the same in etcd 3.4 and 3.5),
    held so that an apt upgrade never changes it under the checks. #}
{%- from 'k8sha/map.jinja' import settings with context %}
{%- set etcd = settings.etcd %}

include:
  - base.debian_repo

etcd-client-package:
  pkg.installed:
    - name: {{ etcd.client_package }}
    - require:
      - sls: base.debian_repo
    - hold: True
    - update_holds: True
