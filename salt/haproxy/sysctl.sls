{#- HAProxy binds the VIP on both load balancers, also on the one that does not hold it. #}
haproxy-allow-binding-the-vip:
  sysctl.present:
    - name: net.ipv4.ip_nonlocal_bind
    - value: 1
