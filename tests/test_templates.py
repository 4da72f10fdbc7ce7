"""The built-in notebook template: complete kernel metadata (a notebook opens
clean), and words about the entry's data only when it has data."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest

from jupyter_lims_bridge.workspace import complete_kernel_metadata, render_notebook

TEMPLATES = Path(__file__).parent.parent / "jupyter_lims_bridge" / "notebook_templates"
DEMO = Path(__file__).parent.parent / "jupyter_lims_bridge" / "demo" / "templates"
ENTITY = {"type": "sample", "id": "S-42", "title": "Buffer screen 3", "url": "https://e/x"}


def context(data: list[dict]) -> dict:
    return {
        "entity": ENTITY,
        "notebook": {"template": "default"},
        "data": data,
        "data_paths": {d["name"]: d["path"] for d in data},
        "issuer": None,
        "opened_at": "2026-12-01T10:00:00Z",
        "claims": {},
        "provenance": {},
    }


def sources(nb) -> str:
    return "\n".join(cell.source for cell in nb.cells)


def test_without_data_the_notebook_says_nothing_about_data():
    nb = render_notebook(json.loads((TEMPLATES / "default.ipynb").read_text()), context([]))
    text = sources(nb)
    assert "data" not in text.replace("metadata", "")
    assert nb.cells[1].source == "entity_id = 'S-42'"


def test_with_data_it_says_where_the_data_is():
    data = [{"name": "raw", "path": "data/raw", "kind": "mount"}]
    nb = render_notebook(json.loads((TEMPLATES / "default.ipynb").read_text()), context(data))
    assert "The entry's data is in `data/` next to this notebook." in nb.cells[0].source
    assert "data_paths = {'raw': 'data/raw'}" in nb.cells[1].source
    compile(nb.cells[1].source, "cell", "exec")  # still valid Python


@pytest.mark.parametrize("template", [TEMPLATES / "default.ipynb", DEMO / "instrument.ipynb"])
def test_kernel_metadata_is_what_the_kernel_reports(template):
    nb = render_notebook(json.loads(template.read_text()), context([]))
    assert nb.metadata.kernelspec == {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    info = nb.metadata.language_info
    assert info["version"] == platform.python_version()
    assert info["codemirror_mode"] == {"name": "ipython", "version": 3}
    assert set(info) == {
        "name",
        "version",
        "mimetype",
        "codemirror_mode",
        "pygments_lexer",
        "nbconvert_exporter",
        "file_extension",
    }


def test_a_templates_own_values_are_kept_and_other_kernels_left_alone():
    metadata = {"kernelspec": {"name": "ir", "language": "R"}, "language_info": {"name": "R"}}
    complete_kernel_metadata(metadata)
    assert metadata["language_info"] == {"name": "R"}
    metadata = {"language_info": {"name": "python", "version": "3.9.1"}}
    complete_kernel_metadata(metadata)
    assert metadata["kernelspec"]["name"] == "python3"
    assert metadata["language_info"]["version"] == "3.9.1"
