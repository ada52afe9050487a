"""
One-time enrolment values (_utils/k8sha_enrolment.py) and the engine's decision on a
salt/auth event (_engines/k8sha_enrolment.py) against a real Salt key store: accepted only
for the id it was issued to, with the key the master holds in pending; replays, unknown ids,
wrong and expired values refused with the reason; events without a value left to Salt.
"""

import time

import pytest
import salt.config
import salt.key
from helpers import salt_render

enrolment = salt_render.load("_utils", "k8sha_enrolment")
engine = salt_render.load("_engines", "k8sha_enrolment")
UTILS = salt_render.as_utils("k8sha_enrolment")
PUB = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----"


class PendingKeys:
    """The part of salt.key.Key the engine reads: the pending public key of an id."""

    def __init__(self, pending):
        self.pending = pending

    def key_str(self, minion_id):
        return {"minions_pre": {minion_id: self.pending[minion_id]}} if minion_id in self.pending else {}


@pytest.fixture
def pki(tmp_path):
    return str(tmp_path)


def auth(minion_id, value, act="pend", pub=PUB):
    return {"act": act, "id": minion_id, "pub": pub, "autosign_grains": {"k8sha_enrolment": value}}


def test_the_issued_value_enrols_its_own_id_once(pki):
    value = enrolment.issue(pki, "cp1")
    keys = PendingKeys({"cp1": PUB + "\n"})
    assert engine.decide({"pki_dir": pki}, keys, auth("cp1", value), UTILS) == ("accept", "")
    enrolment.consume(pki, "cp1", value)
    action, why = engine.decide({"pki_dir": pki}, keys, auth("cp1", value), UTILS)
    assert action == "refuse" and why.startswith("replayed enrolment value: it was used by cp1")


def test_other_ids_wrong_expired_values_and_other_keys_are_refused(pki):
    value = enrolment.issue(pki, "cp1", now=time.time() - 3 * 3600)
    keys = PendingKeys({"cp1": PUB, "evil": PUB})
    decide = lambda data: engine.decide({"pki_dir": pki}, keys, data, UTILS)  # noqa: E731
    assert decide(auth("evil", value))[1].startswith("no enrolment value was issued for the minion id 'evil'")
    assert "expired" in decide(auth("cp1", value))[1]
    value = enrolment.issue(pki, "cp1")
    assert decide(auth("cp1", value + "x"))[1] == "the enrolment value presented for cp1 is not the one issued for it"
    assert "no pending key for cp1 with the public key" in decide(auth("cp1", value, pub="other"))[1]
    assert "already has an accepted key" in decide(auth("cp1", value, act="denied"))[1]


def test_events_without_a_value_are_left_to_salt(pki):
    keys = PendingKeys({})
    assert engine.decide({"pki_dir": pki}, keys, {"act": "pend", "id": "ops-box", "pub": PUB}, UTILS) == ("ignore", "")
    assert engine.decide({"pki_dir": pki}, keys, auth("cp1", "v", act="accept"), UTILS) == ("ignore", "")


def test_records_are_private_and_the_minion_presents_the_value_as_an_autosign_grain(pki, tmp_path):
    enrolment.issue(pki, "cp1")
    assert (tmp_path / "k8sha_enrolment").stat().st_mode & 0o077 == 0
    assert (tmp_path / "k8sha_enrolment" / "issued" / "cp1").stat().st_mode & 0o077 == 0
    settings = enrolment.minion_settings("v")
    assert settings["autosign_grains"] == ["k8sha_enrolment"] and settings["grains"] == {"k8sha_enrolment": "v"}
    assert enrolment.presented({"k8sha_enrolment": "v"}) == "v" and enrolment.presented(None) is None


def test_the_engine_reads_the_real_key_store(tmp_path):
    """PendingKeys above mirrors salt.key.Key.key_str: check that against Salt itself."""
    opts = salt.config.master_config(None)
    opts.update(pki_dir=str(tmp_path / "pki"), cachedir=str(tmp_path / "cache"), sock_dir=str(tmp_path / "run"))
    with salt.key.get_key(opts) as keys:
        keys.cache.store("keys", "cp1", {"pub": PUB, "state": "pending"})
        assert keys.key_str("cp1") == {"minions_pre": {"cp1": PUB}}
