{#- containerd, the container runtime kubeadm's nodes use, with the systemd cgroup driver
    (the kubelet's default since 1.22: both must agree). #}
{%- from 'k8sha/map.jinja' import settings with context %}
{%- set containerd = settings.containerd %}

include:
  - base
  - base.debian_repo          # containerd comes from the node's distribution (or the lab's mirror)
  - kubernetes.prerequisites

containerd-package:
  pkg.installed:
    - name: {{ containerd.package }}
{%- if containerd.version %}
    - version: '{{ containerd.version }}'
{%- endif %}
    - require:
      - sls: base.debian_repo

containerd-config-checker:
  file.managed:
    - name: {{ settings.libexec_dir }}/check-containerd-config
    - source: salt://containerd/files/check-containerd-config
    - user: root
    - group: root
    - mode: '0755'
    - require:
      - file: k8sha-libexec-directory

containerd-config:
  file.managed:
    - name: {{ containerd.config }}
    - source: salt://containerd/files/config.toml.jinja
    - template: jinja
    - makedirs: True
    - mode: '0644'
    # containerd's own parser checks the candidate before it replaces the live file.
    - check_cmd: {{ settings.libexec_dir }}/check-containerd-config
    - context:
        containerd: {{ containerd | json }}
    - require:
      - pkg: containerd-package
      - file: containerd-config-checker
{%- for registry, mirror in containerd.registry_mirrors | dictsort %}

containerd-mirror-{{ registry }}:
  file.managed:
    - name: {{ containerd.certs_dir }}/{{ registry }}/hosts.toml
    - source: salt://containerd/files/hosts.toml.jinja
    - template: jinja
    - makedirs: True
    - mode: '0644'
    - context:
        registry: {{ registry | json }}
        mirror: {{ mirror | json }}
    - require:
      - pkg: containerd-package
    - watch_in:
      - service: containerd-service
{%- endfor %}

containerd-service:
  service.running:
    - name: {{ containerd.service }}
    - enable: True
    - require:
      - sls: kubernetes.prerequisites        # the overlay module, when the node has its own kernel
    - watch:
      - file: containerd-config
