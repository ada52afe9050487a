"""The one-machine lab: systemd-nspawn machines in network namespaces on a private bridge."""
