{#- a minion (re)started: a replaced control plane must rejoin (salt/minion/<id>/start).
    One reaction: start orch.heal_control_plane with the event's tag and sender; every check and
    every decision is made there (reactors run with no safety checks of their own). #}
heal-control-plane:
  runner.state.orchestrate:
    - args:
      - mods: orch.heal_control_plane
      - pillar:
          heal:
            tag: {{ tag | json }}
            sender: {{ data.get('id') | json }}
