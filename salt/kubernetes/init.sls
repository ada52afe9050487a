{#- A Kubernetes node (control_plane or worker): kernel prerequisites, containerd,
    kubelet/kubeadm/kubectl from pkgs.k8s.io pinned to the description's version and held, and,
    once it has joined, the routed pod network.
    Control planes also get kubeadm's configuration (kubernetes.control_plane). #}
include:
  - kubernetes.prerequisites
  - containerd
  - kubernetes.packages
  - kubernetes.network
