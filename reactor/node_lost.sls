{#- minions stopped answering (master presence_events: salt/presence/change).
    One reaction: start orch.heal_node_lost with the tag and the lost minions; every check and
    every decision is made there (reactors run with no safety checks of their own). #}
heal-node-lost:
  runner.state.orchestrate:
    - args:
      - mods: orch.heal_node_lost
      - pillar:
          heal:
            tag: {{ tag | json }}
            sender: {{ data.get('id') | json }}
            lost: {{ data.get("lost", []) | json }}
