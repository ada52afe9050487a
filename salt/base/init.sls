{#- Common ground for every node of the cluster. #}
{%- from 'k8sha/map.jinja' import settings, topology with context %}

k8sha-libexec-directory:
  file.directory:
    - name: {{ settings.libexec_dir }}
    - user: root
    - group: root
    - mode: '0755'
    - makedirs: True

k8sha-run-directory:
  file.directory:
    - name: {{ settings.run_dir }}
    - user: root
    - group: root
    - mode: '0755'

{%- if settings.manage_hosts %}
{%- for node in topology.cluster.nodes %}

k8sha-hosts-entry-{{ node.name }}:
  host.only:
    - name: {{ node.address }}
    - hostnames:
      - {{ node.name }}
{%- endfor %}
{%- endif %}
