{#- The Debian packages the states install come from the node's own archive, or (debian_repo
    set: the lab) from an unsigned local repository. #}
{%- from 'k8sha/map.jinja' import settings with context %}
{%- if settings.debian_repo %}

k8sha-debian-repository:
  pkgrepo.managed:
    - name: deb [trusted=yes] {{ settings.debian_repo }} /
    - file: /etc/apt/sources.list.d/k8sha-debian.list
{%- else %}

k8sha-debian-repository-is-the-nodes-own:
  test.nop: []
{%- endif %}
