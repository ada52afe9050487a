{#- A load balancer's keepalived changed state (its notify script). One reaction: the master
    asks every load balancer whether more than one is MASTER or holds the VIP, and reports a
    split brain (k8sha/keepalived/split_brain); the event itself is only the reason to look. #}
keepalived-split-brain-checked:
  runner.cluster.split_brain: []
