{#- A lock that a build or a run by hand held was released with events coalesced under it
    (k8sha/heal/recheck, sent by heal.unlocked): heal.admit re-checks each once. #}
heal-rechecked:
  runner.heal.recheck:
    - args:
      - lock: {{ data.get('lock') | json }}
