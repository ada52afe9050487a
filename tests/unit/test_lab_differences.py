"""Every setting the lab changes (pillar/lab.sls) is a difference from production that the
table "Lab and production: every difference" (docs/lab.md) names, with why and what covers it."""

import re

import yaml
from helpers import salt_render


def keys(tree, prefix=""):
    """The leaf keys of a nested dict as `a:b:c`, stopping at dicts of profiles (values)."""
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and key != "profiles":
            yield from keys(value, path + ":")
        else:
            yield path


def test_every_setting_of_the_lab_is_in_the_lab_and_production_table():
    lab = yaml.safe_load((salt_render.REPO / "pillar" / "lab.sls").read_text())
    settings = sorted(keys(lab["k8sha"]["lookup"]))
    doc = (salt_render.REPO / "docs" / "lab.md").read_text()
    table = doc.split("## Lab and production: every difference", 1)[1].split("\n## ", 1)[0]
    first_cells = [row.split("|")[1] for row in table.splitlines() if row.startswith("| Setting")]
    named = set(re.findall(r"`([a-z_]+(?::[a-z_]+)*)`", "\n".join(first_cells)))
    assert settings and set(settings) <= named, f"pillar/lab.sls sets {sorted(set(settings) - named)}, not in the table"
    assert set(lab) == {"k8sha"}, "pillar/lab.sls may only change settings (k8sha:lookup), never the description"
