"""
The one /healthz probe: does an API server (or the VIP) answer 200 over TLS? The certificate is
not checked: like HAProxy's check, it asks "does it answer", not "is it who it says".
Used by kubeadm_member.healthz (nodes, and the beacon through it) and the cluster runner.
"""

import ssl
import urllib.request


def healthz(url, timeout=3):
    """``{'url', 'healthy', 'answer'}``: healthy when the URL answers 200; answer is the status and
    the start of the body, or the error."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            body = response.read(40).decode(errors="replace")
            return {"url": url, "healthy": response.status == 200, "answer": f"{response.status} {body}"}
    except Exception as exc:  # pylint: disable=broad-except
        return {"url": url, "healthy": False, "answer": str(exc)[:200]}
