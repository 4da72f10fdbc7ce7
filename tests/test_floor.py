"""The dependency floors of pyproject.toml are the versions the floor job installs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .support.floor_check import pins

ROOT = Path(__file__).resolve().parent.parent


def test_each_pinned_floor_is_the_floor_in_pyproject():
    tomllib = pytest.importorskip("tomllib")
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = {}
    for spec in dependencies:
        m = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*>=\s*([0-9][0-9.]*)", spec)
        if m:
            floors[m.group(1).lower().replace("-", "_")] = m.group(2)
    pinned = pins()
    assert {"pyjwt", "tornado", "jupyter_server"} <= {n.lower() for n in pinned}
    for name, version in pinned.items():
        floor = floors[name.lower().replace("-", "_")]
        # "2.14" in pyproject is the floor "2.14.0" pinned here
        assert _release(floor) == _release(version), (name, floor, version)


def _release(version: str) -> tuple[int, ...]:
    parts = [int(p) for p in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)
