{#- HAProxy stopped answering on a load balancer (beacon k8sha_haproxy).
    One reaction: start orch.heal_haproxy with the event's tag and sender; every check and
    every decision is made there (reactors run with no safety checks of their own). #}
heal-haproxy:
  runner.state.orchestrate:
    - args:
      - mods: orch.heal_haproxy
      - pillar:
          heal:
            tag: {{ tag | json }}
            sender: {{ data.get('id') | json }}
