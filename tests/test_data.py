"""``entry_data()`` as a kernel sees it: finding the entry's notebook and its data paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jupyter_lims_bridge.data import entry_data, entry_metadata


def notebook(
    path: Path, entity_id: str = "S-42", names=("raw", "plate.csv"), lims: bool = True
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "lims": {
            "entity": {"type": "sample", "id": entity_id},
            "data": [{"name": n} for n in names],
        }
    }
    path.write_text(
        json.dumps(
            {"cells": [], "metadata": metadata if lims else {}, "nbformat": 4, "nbformat_minor": 5}
        )
    )
    return path


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """A kernel's surroundings: cwd in the notebook's folder, no session variable yet."""
    folder = tmp_path / "root" / "lims" / "sample-S-42"
    folder.mkdir(parents=True)
    monkeypatch.chdir(folder)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    return folder


def test_the_session_path_names_the_notebook(kernel, monkeypatch):
    notebook(kernel / "S-42.ipynb")
    notebook(
        kernel / "other.ipynb", entity_id="S-43", names=("x",)
    )  # another entry in the same folder
    monkeypatch.setenv("JPY_SESSION_NAME", "lims/sample-S-42/S-42.ipynb")
    assert entry_data() == {
        "raw": kernel / "data" / "raw",
        "plate.csv": kernel / "data" / "plate.csv",
    }
    assert entry_metadata()["entity"]["id"] == "S-42"


def test_an_absolute_session_path(kernel, monkeypatch, tmp_path):
    elsewhere = notebook(tmp_path / "elsewhere" / "E.ipynb", names=("a",))
    monkeypatch.setenv("JPY_SESSION_NAME", str(elsewhere))
    assert entry_data() == {"a": elsewhere.parent / "data" / "a"}


def test_without_a_session_the_one_entry_notebook_here_is_used(kernel):
    notebook(kernel / "S-42.ipynb")
    notebook(kernel / "S-42-1.ipynb")  # a copy of the same entry (notebook.new)
    notebook(kernel / "scratch.ipynb", lims=False)
    assert set(entry_data()) == {"raw", "plate.csv"}


def test_two_entries_here_without_a_session_is_ambiguous(kernel):
    notebook(kernel / "S-42.ipynb")
    notebook(kernel / "S-43.ipynb", entity_id="S-43")
    with pytest.raises(LookupError, match="notebook="):
        entry_data()
    assert set(entry_data("S-43.ipynb")) == {"raw", "plate.csv"}


def test_an_explicit_notebook_without_lims_metadata_is_refused(kernel):
    notebook(kernel / "scratch.ipynb", lims=False)
    with pytest.raises(LookupError):
        entry_data("scratch.ipynb")


def test_without_any_entry_notebook_the_data_folder_is_listed(kernel):
    (kernel / "data").mkdir()
    (kernel / "data" / "a.csv").write_text("x")
    (kernel / "data" / ".a.csv.part").write_text("partial")  # a download under way: hidden
    assert entry_data() == {"a.csv": kernel / "data" / "a.csv"}


def test_nothing_at_all_is_an_empty_mapping(kernel):
    assert entry_data() == {}


def test_edited_metadata_cannot_point_outside_data(kernel):
    notebook(kernel / "S-42.ipynb", names=("ok", "../../etc/passwd", "..", "a\\b", 7))
    assert entry_data() == {"ok": kernel / "data" / "ok"}
