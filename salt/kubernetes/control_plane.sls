{#- A control-plane node: a Kubernetes node plus kubeadm's configuration and the etcd client
    the project's checks use (etcd itself runs in kubeadm's static pod). #}
include:
  - kubernetes
  - kubernetes.config
  - kubernetes.etcd_client
