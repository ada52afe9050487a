{#- keepalived stopped on a load balancer (beacon service).
    One reaction: start orch.heal_keepalived with the event's tag and sender; every check and
    every decision is made there (reactors run with no safety checks of their own). #}
heal-keepalived:
  runner.state.orchestrate:
    - args:
      - mods: orch.heal_keepalived
      - pillar:
          heal:
            tag: {{ tag | json }}
            sender: {{ data.get('id') | json }}
