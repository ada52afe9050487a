# The cluster description: the one file an operator edits (plain YAML: the master reads it too).
# It states only what differs from the defaults; every other key, and what it means:
# salt/k8sha/defaults.yaml (`cluster:`) and docs/configuration.md.
# It is validated before anything is changed: salt '*' cluster_topology.validate
#
# The shape is the seed's (INAP blog): 2 load balancers sharing a VIP, 3 control planes
# with stacked etcd, 1 worker, on one flat subnet. Addresses are the one-machine lab's
# (198.51.100.0/24); on OpenStack use your subnet's.
cluster:
  name: k8sha-lab
  api:
    vip: 198.51.100.100        # the virtual IP clients use; a free address in the LBs' subnet
  nodes:
    - {name: lb1,     role: loadbalancer,  address: 198.51.100.11, vrrp_priority: 150}
    - {name: lb2,     role: loadbalancer,  address: 198.51.100.12, vrrp_priority: 100}
    - {name: cp1,     role: control_plane, address: 198.51.100.21}
    - {name: cp2,     role: control_plane, address: 198.51.100.22}
    - {name: cp3,     role: control_plane, address: 198.51.100.23}
    - {name: worker1, role: worker,        address: 198.51.100.31}
