{#- Prometheus metrics of a load balancer: node-exporter (Debian's prometheus-node-exporter) on
    the node's address, with its textfile collector reading what the keepalived notify script
    writes (k8sha_vrrp.prom: VRRP state, transitions). HAProxy's own exporter is in its config
    (haproxy.config). The firewall opens both ports to k8sha:lookup:metrics:sources only. #}
{%- from 'k8sha/map.jinja' import settings, topology with context %}
{%- set metrics = settings.metrics %}
{%- set exporter = metrics.node_exporter %}

include:
  - base.debian_repo

metrics-node-exporter-package:
  pkg.installed:
    - name: {{ exporter.package }}
    - require:
      - sls: base.debian_repo

metrics-textfile-directory:
  file.directory:
    - name: {{ metrics.textfile_dir }}
    - user: root
    - group: root
    - mode: '0755'
    - makedirs: True

metrics-node-exporter-arguments:
  file.managed:
    - name: {{ exporter.defaults_file }}
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (k8sha metrics state): local edits are reverted.
        ARGS="--web.listen-address={{ topology.node.address }}:{{ settings.ports.node_exporter }} --collector.textfile.directory={{ metrics.textfile_dir }}"
    - require:
      - pkg: metrics-node-exporter-package

metrics-node-exporter-service:
  service.running:
    - name: {{ exporter.service }}
    - enable: True
    - require:
      - file: metrics-textfile-directory
    - watch:
      - file: metrics-node-exporter-arguments
