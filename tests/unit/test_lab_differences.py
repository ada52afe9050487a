"""Every setting the lab changes (pillar/lab.sls) is a difference from production that the
table "Lab and production: every difference" (docs/lab.md) names, with why and what covers it."""

import re

import yaml
from helpers import salt_render


def keys(tree, prefix=""):
    """The leaf keys of a nested dict as `a:b:c`, stopping at dicts whose keys are values
    (profiles by role, mirrors by registry)."""
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and key not in ("profiles", "registry_mirrors"):
            yield from keys(value, path + ":")
        else:
            yield path


def test_every_setting_of_the_lab_is_in_the_lab_and_production_table():
    lab = yaml.safe_load((salt_render.REPO / "pillar" / "lab.sls").read_text())
    settings = sorted(keys(lab["k8sha"]["lookup"]))
    doc = (salt_render.REPO / "docs" / "lab.md").read_text()
    table = doc.split("## Lab and production: every difference", 1)[1].split("\n## ", 1)[0]
    first_cells = [row.split("|")[1] for row in table.splitlines() if row.startswith("| Setting")]
    named = set(re.findall(r"`([a-z0-9_]+(?::[a-z0-9_]+)*)`", "\n".join(first_cells)))
    assert settings and set(settings) <= named, f"pillar/lab.sls sets {sorted(set(settings) - named)}, not in the table"
    assert set(lab) == {"k8sha"}, "pillar/lab.sls may only change settings (k8sha:lookup), never the description"


def test_every_setting_of_the_real_kubernetes_lab_is_named_in_its_section():
    lab = yaml.safe_load((salt_render.REPO / "pillar" / "lab_kubernetes.sls").read_text())
    settings = sorted(keys(lab["k8sha"]["lookup"]))
    doc = (salt_render.REPO / "docs" / "lab.md").read_text()
    section = doc.split("## The lab on the real Kubernetes", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([a-z0-9_]+(?::[a-z0-9_]+)*)`", section.split("Settings `pillar/lab_kubernetes.sls` adds", 1)[1]))
    assert settings and set(settings) <= named, f"pillar/lab_kubernetes.sls sets {sorted(set(settings) - named)}"
    assert set(lab) == {"k8sha"}, "pillar/lab_kubernetes.sls may only change settings (k8sha:lookup)"
