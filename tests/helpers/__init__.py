"""Helpers the test tiers share (pytest.ini puts tests/ and lab/ on the import path):

- salt_render: the project's states, templates and modules rendered by real Salt in-process;
- fake_openstack: the OpenStack APIs the project uses, over HTTP, as Nova/Neutron document them;
- tls_backends: API server stand-ins over TLS for the health checks;
- lab_session: the lab tier's handle on the one-machine lab.
"""
