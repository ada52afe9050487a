{#- kubelet, kubeadm and kubectl from pkgs.k8s.io for the description's minor version,
    pinned and held so that an apt upgrade never moves a node to another Kubernetes.
    Only orch.upgrade moves a member's held packages: it applies this state with pillar
    k8sha_upgrade:packages naming the ones to move now (kubeadm first, the kubelet and kubectl
    after kubeadm upgrade apply/node, as kubeadm's documented order). #}
{%- from 'k8sha/map.jinja' import settings, topology with context %}
{%- set kubernetes = settings.kubernetes %}
{%- set version = topology.cluster.kubernetes.version %}
{%- set minor = version.split('.')[:2] | join('.') %}
{%- set pin = version ~ '-*' if version.count('.') == 2 else minor ~ '.*' %}
{%- set upgrading = salt['pillar.get']('k8sha_upgrade:packages', []) %}
{%- set refusal = '' if upgrading else salt['kubeadm_member.version_refusal'](version) %}

{%- if refusal %}
{#- A node already in the cluster keeps its version: only kubeadm's upgrade procedure
    (orch.upgrade) may move it. Nothing below runs. #}
kubernetes-version-kept-on-a-built-cluster:
  test.fail_without_changes:
    - comment: {{ refusal | json }}
    - failhard: True
{%- else %}

{%- if kubernetes.repo_trusted %}
{#- The lab's local repository of stand-in packages (lab/standin): unsigned, so trusted. #}
kubernetes-apt-repository:
  pkgrepo.managed:
    - name: deb [trusted=yes] {{ kubernetes.repo_url.format(minor=minor) }} /
    - file: /etc/apt/sources.list.d/kubernetes.list
    - clean_file: True      # one minor's repository: an upgrade replaces the previous one
{%- else %}
kubernetes-apt-keyring-directory:
  file.directory:
    - name: {{ salt['file.dirname'](kubernetes.keyring) }}
    - mode: '0755'

kubernetes-apt-repository:
  pkgrepo.managed:
    - name: deb [signed-by={{ kubernetes.keyring }}] {{ kubernetes.repo_url.format(minor=minor) }} /
    - file: /etc/apt/sources.list.d/kubernetes.list
    - clean_file: True      # one minor's repository: an upgrade replaces the previous one
    - key_url: {{ kubernetes.repo_url.format(minor=minor) }}Release.key
    - signedby: {{ kubernetes.keyring }}
    - aptkey: False
    - require:
      - file: kubernetes-apt-keyring-directory
{%- endif %}

kubernetes-packages:
  pkg.installed:
    - pkgs:
{%- for package in upgrading or kubernetes.packages %}
      - {{ package }}: '{{ pin }}'
{%- endfor %}
    - hold: True
    - update_holds: True
    - require:
      - pkgrepo: kubernetes-apt-repository
{%- endif %}
