{#- Minions stopped answering (reactor/node_lost.sls, master presence_events). Deliberately
    no repair: a node that does not answer may only be rebooting, and removing it (its etcd
    member, its machine) could not be undone. The loss is reported (k8sha/heal/node_lost);
    when the node answers again, salt/minion/<id>/start (or the reconciliation) checks it. #}
{%- set heal = pillar.get('heal', {}) %}

heal-node-lost-reported:
  heal.lost_reported:
    - name: presence
    - lost: {{ heal.get('lost', []) | json }}
