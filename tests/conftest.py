import os
import pathlib

import pytest

TESTS = pathlib.Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        tier = pathlib.Path(str(item.fspath)).relative_to(TESTS).parts[0]
        if tier in ("unit", "integration", "lab"):
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture
def needs_root():
    if os.geteuid() != 0:
        pytest.skip("needs root")


def pytest_configure(config):
    for tier, text in (
        ("unit", "in-process, seconds"),
        ("integration", "a real salt-master and minions"),
        ("lab", "end to end in the one-machine lab, as root"),
    ):
        config.addinivalue_line("markers", f"{tier}: {text}")
