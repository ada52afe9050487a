{#- A control-plane node: a Kubernetes node plus kubeadm's configuration. #}
include:
  - kubernetes
  - kubernetes.config
