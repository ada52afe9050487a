{#- a control plane's API server fails /healthz (beacon k8sha_apiserver).
    One reaction: start orch.heal_apiserver with the event's tag and sender; every check and
    every decision is made there (reactors run with no safety checks of their own). #}
heal-apiserver:
  runner.state.orchestrate:
    - args:
      - mods: orch.heal_apiserver
      - pillar:
          heal:
            tag: {{ tag | json }}
            sender: {{ data.get('id') | json }}
