"""Property-based tests of path handling: nothing a token says escapes the workspace."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_lims_bridge.claims import Entity, NotebookSpec, OpenRequest
from jupyter_lims_bridge.errors import LimsError
from jupyter_lims_bridge.paths import is_safe_file_name, sanitize_component
from jupyter_lims_bridge.workspace import Workspace, relative_notebook_path

HOSTILE = st.sampled_from(
    [
        "..",
        ".",
        "/",
        "\\",
        "%2F",
        "%2e%2e",
        "\x00",
        "~",
        "C:",
        "link",
        ".ipynb",
        " ",
        "\n",
        "é",
        "🧪",
    ]
)
TEXT = st.lists(st.one_of(HOSTILE, st.text(min_size=0, max_size=12)), min_size=1, max_size=6).map(
    "".join
)
PATHS = st.lists(st.one_of(HOSTILE, TEXT), min_size=1, max_size=8).map("/".join)


def request(entity_type: str, entity_id: str, path: str | None) -> OpenRequest:
    return OpenRequest(
        sub="alice",
        jti="j",
        iat=0,
        exp=1,
        iss=None,
        entity=Entity(type=entity_type, id=entity_id),
        notebook=NotebookSpec(path=path),
        data=(),
    )


class RecordingContents:
    """A ContentsManager stand-in that writes real files, so escapes would be real."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def file_exists(self, path: str) -> bool:
        return (self.root / path).is_file()

    def dir_exists(self, path: str) -> bool:
        return (self.root / path).is_dir()

    def save(self, model: dict, path: str) -> dict:
        target = self.root / path
        if model["type"] == "directory":
            target.mkdir()
        else:
            target.write_text("{}")
        return model


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    base = tmp_path_factory.mktemp("paths")
    root = base / "root"
    (root / "lims").mkdir(parents=True)
    outside = base / "outside"
    outside.mkdir()
    # symlinked escapes planted inside the workspace
    (root / "lims" / "link").symlink_to(outside, target_is_directory=True)
    (root / "lims" / "sample-link").symlink_to(outside, target_is_directory=True)
    return root, outside


def all_files(folder: Path) -> set[str]:
    return {str(p) for p in folder.rglob("*")}


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    entity_type=TEXT, entity_id=TEXT, path=st.one_of(st.none(), PATHS.map(lambda p: p + ".ipynb"))
)
def test_no_token_path_writes_outside_the_workspace(sandbox, entity_type, entity_id, path):
    root, outside = sandbox
    workspace = Workspace(
        root_dir=root,
        workspace_dir="lims",
        templates_dir=None,
        contents_manager=RecordingContents(root),
    )
    req = request(entity_type, entity_id, path)
    try:
        plan = workspace.plan(req)
    except LimsError as e:
        assert e.reason in ("path_not_allowed", "bad_claims")
        return
    # Then the planned file lies inside the (resolved) workspace
    assert plan.os_path.is_relative_to(workspace.workspace_root)
    context = {"provenance": {}, "entity": {}, "data_paths": {}, "data": []}
    try:
        api_path, _ = asyncio.run(workspace.create(plan, req, context))
    except LimsError as e:
        assert e.reason == "path_not_allowed"
        return
    written = (root / api_path).resolve()
    assert written.is_relative_to(workspace.workspace_root)
    assert all_files(outside) == set()


@given(TEXT)
def test_sanitized_components_are_single_plain_names(text):
    clean = sanitize_component(text)
    assert clean and "/" not in clean and "\\" not in clean and "\x00" not in clean
    assert not clean.startswith(".") and clean not in (".", "..")
    assert is_safe_file_name(clean)


@given(PATHS)
def test_relative_notebook_paths_never_climb(path):
    try:
        rel = relative_notebook_path(request("t", "i", path))
    except LimsError:
        return
    assert not rel.is_absolute() and ".." not in rel.parts
    assert rel.name.endswith(".ipynb")
    assert os.path.normpath(rel.as_posix()) == rel.as_posix()


def test_builtin_template_is_found_when_the_package_path_holds_a_symlink(tmp_path, monkeypatch):
    # Given the package reached through a symlink (a symlinked checkout, conda, nix)
    from jupyter_lims_bridge import workspace as workspace_module

    real = workspace_module.BUILTIN_TEMPLATES
    (tmp_path / "site-packages").symlink_to(real.parent.parent, target_is_directory=True)
    linked = tmp_path / "site-packages" / real.parent.name / real.name
    assert linked.is_dir() and linked.resolve() != linked
    monkeypatch.setattr(workspace_module, "BUILTIN_TEMPLATES", linked)
    workspace = Workspace(
        root_dir=tmp_path, workspace_dir="lims", templates_dir=None, contents_manager=None
    )
    # Then the built-in default template is found, and a template name cannot climb out
    assert workspace.template("default")["cells"]
    with pytest.raises(LimsError):
        workspace.template("..")


def test_templates_dir_behind_a_symlink_is_used(tmp_path):
    real = tmp_path / "real-templates"
    real.mkdir()
    (real / "mine.ipynb").write_text(
        '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    )
    (tmp_path / "templates").symlink_to(real, target_is_directory=True)
    workspace = Workspace(
        root_dir=tmp_path,
        workspace_dir="lims",
        templates_dir=str(tmp_path / "templates"),
        contents_manager=None,
    )
    assert workspace.template("mine")["cells"] == []
