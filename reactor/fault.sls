{#- An event of the fault catalogue (salt/k8sha/faults.yaml): a beacon's report or a minion's
    start. One reaction: hand its tag and claimed sender to the heal.admit runner, which admits
    at most one repair per fault and node and coalesces the rest; the repair (orch/heal.sls)
    checks the fault from the master before it acts. Reactors run with no safety checks of
    their own, so this one makes no decision. #}
heal-admitted:
  runner.heal.admit:
    - args:
      - tag: {{ tag | json }}
      - sender: {{ data.get('id') | json }}
