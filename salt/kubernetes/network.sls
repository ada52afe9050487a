{#- The pod network, routed: each node's pods on a bridge with addresses from the pod CIDR the
    controller-manager gave the node (CNI bridge + host-local), and a route to every other node's
    pod CIDR through that node. orch.pod_network applies it once the nodes have joined, with what
    a control plane's API reports (pillar k8sha_pod_network; a kubelet may read only its own Node). #}
{%- from 'k8sha/map.jinja' import settings, topology with context %}
{%- set network = settings.kubernetes.pod_network %}
{%- set seen = salt['pillar.get']('k8sha_pod_network', {}) %}
{%- if not seen.get('cidr') %}

kubernetes-pod-network-from-orch:
  test.nop:
    - name: the pod network comes from orch.pod_network (run after the joins; it knows every node's pod CIDR)
{%- else %}

kubernetes-cni-config:
  file.managed:
    - name: {{ network.cni_config }}
    - source: salt://kubernetes/files/cni.conflist.jinja
    - template: jinja
    - makedirs: True
    - mode: '0644'
    - context:
        cidr: {{ seen.cidr | json }}
        bridge: {{ network.bridge | json }}

kubernetes-pod-routes:
  file.managed:
    - name: {{ network.routes_file }}
    - makedirs: True
    - mode: '0644'
    - contents: |
        # Managed by Salt (k8sha kubernetes.network): other nodes' pod CIDRs, through each node.
{%- for cidr, address in seen.routes | dictsort %}
        {{ cidr }} via {{ address }}
{%- endfor %}
{%- if network.service_route %}
        {{ topology.cluster.kubernetes.service_cidr }} dev {{ topology.cluster.vrrp.interface }}
{%- endif %}

kubernetes-pod-routes-script:
  file.managed:
    - name: {{ settings.libexec_dir }}/pod-routes
    - mode: '0755'
    - contents: |
        #!/bin/sh
        # Managed by Salt: routes to other nodes' pods ({{ network.routes_file }}), at boot and on change.
        while read -r cidr how target; do
          case "$cidr" in ''|'#'*) continue ;; esac
          ip route replace "$cidr" "$how" "$target"
        done < {{ network.routes_file }}
        # A node that left: its pod CIDR's route goes too.
        wanted=$(awk '!/^#/ && NF { print $1 }' {{ network.routes_file }})
        ip route show root {{ topology.cluster.kubernetes.pod_cidr }} | while read -r cidr how _; do
          [ "$how" = via ] && ! echo "$wanted" | grep -qxF "$cidr" && ip route del "$cidr"
        done
        exit 0

kubernetes-pod-routes-unit:
  file.managed:
    - name: /etc/systemd/system/k8sha-pod-routes.service
    - contents: |
        # Managed by Salt (k8sha kubernetes.network)
        [Unit]
        Description=k8sha: routes to the other nodes' pod CIDRs
        After=network-online.target
        Wants=network-online.target
        [Service]
        Type=oneshot
        RemainAfterExit=yes
        ExecStart={{ settings.libexec_dir }}/pod-routes
        [Install]
        WantedBy=multi-user.target

kubernetes-pod-routes-service:
  service.running:
    - name: k8sha-pod-routes
    - enable: True
    - watch:
      - file: kubernetes-pod-routes
      - file: kubernetes-pod-routes-script
      - file: kubernetes-pod-routes-unit
{%- endif %}
