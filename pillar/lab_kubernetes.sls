# The one-machine lab on the real Kubernetes (pillar/top.sls adds it after lab.sls when the
# master's config has k8sha_lab_kubernetes: real). Everything here is a lab difference that
# docs/lab.md lists with its reason.
k8sha:
  lookup:
    debian_repo: file:/opt/k8sha-lab/repos/debian/     # the machines' Debian mirror, with containerd 2 and runc
    kubernetes:
      repo_url: file:/opt/k8sha-lab/repos/kubernetes/v{minor}/   # pkgs.k8s.io's layout, built here
      apiserver_restart: crictl stop $(crictl ps -q --name kube-apiserver)
      drain_before_removal: true
      drain_before_upgrade: true
      # kubeadm's SystemVerification refuses cgroup v1 from 1.35 on; the host's controllers are
      # only in v1 hierarchies (the machines are delegated their subtree there).
      ignore_preflight_errors: [SystemVerification]
      # kubeadm 1.36 names CoreDNS v1.14.2, which the Go module proxy does not serve.
      coredns_image_tag: v1.14.6
      kubelet:
        fail_cgroup_v1: false
      pod_network:
        manage: true               # pillar/lab.sls turns it off for the stand-in
        service_route: true        # the lab's machines have no default route
      kube_proxy:
        mode: nftables             # the lab's kube-proxy image has nft (lab/lablib/images.py)
        # nf_conntrack_max is not per network namespace: the host's, not the lab's to change.
        conntrack_max_per_core: 0
    containerd:
      version: 2.2.9-0k8shalab1    # lab/lablib/gobuild.py RUNTIME_VERSIONS; the image has Debian's 1.6
      config_version: 3
      sandbox_image: registry.k8s.io/pause:3.10.2
      # The lab registry (crane's, in the master's namespace) mirrors registry.k8s.io: nothing is
      # pulled from outside, and kubeadm's image names stay its own.
      registry_mirrors:
        registry.k8s.io: http://198.51.100.5:5000
        198.51.100.5:5000: http://198.51.100.5:5000
      # This host's bounding set has no CAP_SYS_RESOURCE: nothing here may lower an OOM score.
      restrict_oom_score_adj: true
