{#- What kubeadm's preflight checks ask of a node: bridge netfilter, forwarding, no swap.
    Where the kernel is not the node's own (kernel_prerequisites false: the lab's containers share
    the host's), kernel modules and swap are left to the host; the sysctls are set all the same,
    since they belong to the node's network namespace. #}
{%- from 'k8sha/map.jinja' import settings with context %}
{%- set kubernetes = settings.kubernetes %}
{%- if not kubernetes.kernel_prerequisites %}

kubernetes-kernel-prerequisites-left-to-the-host:
  test.nop:
    - name: kernel modules and swap belong to the host (k8sha:lookup:kubernetes:kernel_prerequisites is false)
{%- else %}

{%- for module in kubernetes.kernel_modules %}

kubernetes-kernel-module-{{ module }}:
  kmod.present:
    - name: {{ module }}
    - persist: True
{%- endfor %}

{#- The kubelet refuses to run with swap on: off now, and never again at boot. #}
kubernetes-swap-off:
  cmd.run:
    - name: swapoff -a
    - onlyif: test -n "$(swapon --show --noheadings)"

kubernetes-swap-off-at-boot:
  file.replace:
    - name: /etc/fstab
    - pattern: '^([^#\s]\S*\s+\S+\s+swap\s.*)$'
    - repl: '# disabled by Salt (kubelet needs swap off): \1'
    - ignore_if_missing: True
{%- endif %}

{%- for name, value in kubernetes.sysctls | dictsort %}

kubernetes-sysctl-{{ name }}:
  sysctl.present:
    - name: {{ name }}
    - value: {{ value }}
    - config: /etc/sysctl.d/90-k8sha-kubernetes.conf
{%- if kubernetes.kernel_prerequisites %}
    - require:
      - kmod: kubernetes-kernel-module-br_netfilter
{%- endif %}
{%- endfor %}
