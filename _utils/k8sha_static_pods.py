"""
kubeadm's static pods on a control plane, stopped and started the documented way: the kubelet
stops a pod whose manifest leaves /etc/kubernetes/manifests and starts it when it is back. Used
by etcd_restore (stop, swap the data, start) and kubeadm_member.renew_certs (restart with new
certificates).
"""

import os
import socket
import time


def listening(host, port):
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def wait(what, check, timeout):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.5)


def write(path, text):
    """A manifest written whole (0600), so that the kubelet never reads half of one."""
    fd = os.open(path + ".k8sha-new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(path + ".k8sha-new", path)


def stop(manifests, endpoints, timeout=60):
    """Every manifest of ``manifests`` ({name: path}) removed; waits until none of ``endpoints``
    ([(host, port)]) listens. Returns the manifests' texts, to put them back."""
    texts = {}
    for name, path in manifests.items():
        if os.path.exists(path):  # one already gone is stopped already
            with open(path) as handle:
                texts[name] = handle.read()
            os.unlink(path)
    wait("the static pods to stop", lambda: not any(listening(h, p) for h, p in endpoints), timeout)
    return texts


def start(manifests, texts):
    for name in texts:
        write(manifests[name], texts[name])
