{#- keepalived holds the VIP on one load balancer (VRRP) and moves it when HAProxy is gone. #}
include:
  - keepalived.scripts
  - keepalived.config
  - keepalived.service
