{#- HAProxy in TCP mode in front of the API servers, bound to the VIP. #}
include:
  - haproxy.sysctl
  - haproxy.service
  - haproxy.config
