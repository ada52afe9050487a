{#- firewalld with one zone for the node's role, bound to the cluster interface.
    The zone file is checked by firewalld itself before it replaces the live one. #}
{%- from 'k8sha/map.jinja' import settings, topology with context %}
{%- set fw = settings.firewall %}

include:
  - base

firewalld-package:
  pkg.installed:
    - name: {{ fw.package }}

firewalld-zone-checker:
  file.managed:
    - name: {{ settings.libexec_dir }}/check-firewalld-zone
    - source: salt://firewall/files/check-firewalld-zone
    - user: root
    - group: root
    - mode: '0755'
    - require:
      - file: k8sha-libexec-directory

firewalld-zone-{{ fw.zone }}:
  file.managed:
    - name: {{ fw.zones_dir }}/{{ fw.zone }}.xml
    - source: salt://firewall/files/zone.xml.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: True
    - check_cmd: {{ settings.libexec_dir }}/check-firewalld-zone {{ fw.zone }}
    - context:
        zone: {{ fw.zone | json }}
        services: {{ fw.services | json }}
        ports: {{ salt['cluster_ports.zone_ports'](topology.role) | json }}
        metrics_ports: {{ salt['cluster_ports.metrics_ports'](topology.role) | json }}
        metrics_sources: {{ salt['cluster_ports.metrics_sources']() | json }}
        pod_network_sources: {{ salt['cluster_ports.pod_network_sources'](topology.role) | json }}
        pod_bridge: {{ settings.kubernetes.pod_network.bridge | json }}
        role: {{ topology.role | json }}
        interface: {{ topology.cluster.vrrp.interface | json }}
        vrrp: {{ (topology.get('vrrp') or {}) | json }}
        vrrp_mode: {{ topology.cluster.vrrp.mode | json }}
        salt_master: {{ salt['cluster_topology.salt_master']() | json }}
    - require:
      - pkg: firewalld-package
      - file: firewalld-zone-checker

firewalld-service:
  service.running:
    - name: {{ fw.service }}
    - enable: True
    - reload: True
    - require:
      - pkg: firewalld-package
    - watch:
      - file: firewalld-zone-{{ fw.zone }}
