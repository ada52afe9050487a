# The one-machine lab only (pillar/top.sls adds it when the master's config has k8sha_lab: true).
# Lab machines are containers: the kernel is the host's, and Kubernetes comes from the
# lab image's local repository of stand-in packages (lab/standin) instead of pkgs.k8s.io.
k8sha:
  lookup:
    kubernetes:
      repo_url: file:/opt/k8sha-lab/apt/v{minor}/
      repo_trusted: true
      kernel_prerequisites: false
      apiserver_restart: systemctl restart k8sha-standin-apiserver
      drain_before_removal: false          # the stand-in runs no pods (no eviction API)
      drain_before_upgrade: false
      pod_network:
        manage: false                      # the stand-in gives nodes no pod CIDRs
    debian_repo: file:/opt/k8sha-lab/debian/    # the image's stand-in for the machines' Debian mirror
    cloud:
      provision: true
      profiles:                # cloud/lab.profiles.conf
        loadbalancer: lab-loadbalancer
        control_plane: lab-control-plane
        worker: lab-worker
