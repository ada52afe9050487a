{#- a managed config file changed outside Salt (beacon inotify).
    One reaction: start orch.heal_config with the event's tag and sender; every check and
    every decision is made there (reactors run with no safety checks of their own). #}
heal-config:
  runner.state.orchestrate:
    - args:
      - mods: orch.heal_config
      - pillar:
          heal:
            tag: {{ tag | json }}
            sender: {{ data.get('id') | json }}
