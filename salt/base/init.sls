{#- Common ground for every node of the cluster. #}
{%- from 'k8sha/map.jinja' import settings, topology with context %}

k8sha-libexec-directory:
  file.directory:
    - name: {{ settings.libexec_dir }}
    - user: root
    - group: root
    - mode: '0755'
    - makedirs: True

{#- Runtime state shared by HAProxy, keepalived and Salt lives on tmpfs: recreate the
    directory at every boot, before the daemons start (keepalived drops a track_file
    whose directory is missing). #}
k8sha-run-directory-at-boot:
  file.managed:
    - name: /etc/tmpfiles.d/k8sha.conf
    - contents: |
        # Managed by Salt (k8sha base state)
        d {{ settings.run_dir }} 0755 root root -

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
