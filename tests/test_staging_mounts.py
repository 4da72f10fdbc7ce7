"""Mounted data stores: items become symlinks that never leave the store's root.

Real directories and symlinks in a temporary folder; Given / When / Then.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jupyter_lims_bridge.claims import DataItem
from jupyter_lims_bridge.errors import LimsError
from jupyter_lims_bridge.staging import DataStager


@pytest.fixture
def store(data_mount, tmp_path) -> Path:
    """The shared ``data_mount`` store, plus links that point in and out of it."""
    root = data_mount
    (root / "escape").symlink_to("/etc")
    (root / "2026" / "up").symlink_to("../..")  # the store's parent
    (root / "2026" / "alias").symlink_to("S-42/raw")  # stays inside: fine
    (tmp_path / "secret.txt").write_text("not in the store")
    return root


@pytest.fixture
def workspace(tmp_path) -> Path:
    ws = tmp_path / "ws"
    (ws / "entry").mkdir(parents=True)
    return ws.resolve()


@pytest.fixture
def stager(store) -> DataStager:
    return DataStager(mounts={"archive": str(store)}, url_prefixes=[], max_download_bytes=1024)


def plan(stager: DataStager, workspace: Path, *items: DataItem):
    return stager.plan(tuple(items), workspace / "entry" / "data", "ws/entry/data", workspace)


def item(path: str, name: str = "raw", mount: str = "archive") -> DataItem:
    return DataItem(name, mount=mount, path=path)


async def test_an_item_becomes_a_symlink_to_its_resolved_target(stager, store, workspace):
    # Given a folder and a file in the store
    planned = plan(stager, workspace, item("2026/S-42/raw"), item("plate.csv", name="plate.csv"))
    # When applied
    results = await stager.apply(planned)
    # Then each is a symlink to its place in the store
    assert [r["status"] for r in results] == ["linked", "linked"]
    raw = workspace / "entry" / "data" / "raw"
    assert raw.is_symlink() and raw.resolve() == (store / "2026/S-42/raw").resolve()
    assert (raw / "run1.csv").read_text() == "a,b\n1,2\n"
    # And linking again is idempotent
    assert [
        r["status"] for r in await stager.apply(plan(stager, workspace, item("2026/S-42/raw")))
    ] == ["linked"]


async def test_a_symlink_that_stays_inside_the_store_is_followed(stager, store, workspace):
    [result] = await stager.apply(plan(stager, workspace, item("2026/alias")))
    assert result["status"] == "linked"
    assert os.readlink(workspace / "entry" / "data" / "raw") == str(
        (store / "2026/S-42/raw").resolve()
    )


TRAVERSALS = [
    ("dot-dot", "../secret.txt"),
    ("dot-dot inside", "2026/../../secret.txt"),
    ("deep dot-dot", "2026/S-42/../../../secret.txt"),
    ("absolute", "/etc/passwd"),
    ("absolute into store", None),  # filled in below: the store's own absolute path
    ("backslash", "..\\secret.txt"),
    ("nul", "plate.csv\x00.txt"),
    ("symlink to /etc", "escape"),
    ("through a symlink to /etc", "escape/passwd"),
    ("symlink to the parent", "2026/up/secret.txt"),
]


@pytest.mark.parametrize("case,path", TRAVERSALS, ids=[t[0] for t in TRAVERSALS])
def test_paths_that_leave_the_store_are_refused(case, path, stager, store, workspace):
    path = str(store / "plate.csv") if path is None else path
    with pytest.raises(LimsError) as e:
        plan(stager, workspace, item(path))
    assert (e.value.reason, e.value.status) == ("path_not_allowed", 403)
    assert not (workspace / "entry" / "data").exists()


@pytest.mark.parametrize(
    "path",
    ["%2e%2e/secret.txt", "..%2Fsecret.txt", "%2e%2e%2fsecret.txt", "2026%2F..%2F..%2Fsecret.txt"],
)
def test_encoded_separators_are_not_decoded(path, stager, workspace):
    # Given a path with percent-encoded dots and slashes: it names a file of that
    # literal name inside the store, which does not exist; it never escapes
    with pytest.raises(LimsError) as e:
        plan(stager, workspace, item(path))
    assert e.value.reason == "data_missing"


def test_a_missing_path_is_data_missing(stager, workspace):
    with pytest.raises(LimsError) as e:
        plan(stager, workspace, item("2026/S-99"))
    assert (e.value.reason, e.value.status) == ("data_missing", 422)


def test_an_unknown_mount_is_refused(stager, workspace):
    with pytest.raises(LimsError) as e:
        plan(stager, workspace, item("plate.csv", mount="scratch"))
    assert (e.value.reason, e.value.status) == ("unknown_mount", 422)


@pytest.mark.parametrize(
    "name",
    ["a/b", "../raw", "..", ".", ".hidden", "", "x\\y", "raw\x00", "a\nb", "x" * 101, " lead"],
)
def test_a_name_that_is_not_a_single_file_name_is_refused(name, stager, workspace):
    with pytest.raises(LimsError) as e:
        plan(stager, workspace, item("plate.csv", name=name))
    assert (e.value.reason, e.value.status) == ("path_not_allowed", 403)


def test_one_bad_item_refuses_all_and_writes_nothing(stager, workspace):
    with pytest.raises(LimsError):
        plan(stager, workspace, item("plate.csv", name="good"), item("../secret.txt"))
    assert not (workspace / "entry" / "data").exists()


def test_a_data_folder_that_leaves_the_workspace_is_refused(stager, workspace, tmp_path):
    # Given a user-made symlink 'data' pointing out of the workspace
    (workspace / "entry" / "data").symlink_to(tmp_path)
    with pytest.raises(LimsError) as e:
        plan(stager, workspace, item("plate.csv", name="plate.csv"))
    assert e.value.reason == "path_not_allowed"


async def test_an_existing_different_file_is_a_conflict_and_kept(stager, workspace, tmp_path):
    data = workspace / "entry" / "data"
    data.mkdir()
    (data / "raw").write_text("my notes")
    (data / "plate.csv").symlink_to(tmp_path / "secret.txt")  # a link somewhere else
    results = await stager.apply(
        plan(stager, workspace, item("2026/S-42/raw"), item("plate.csv", name="plate.csv"))
    )
    assert [(r["status"], r.get("reason")) for r in results] == [("conflict", "conflict")] * 2
    assert (data / "raw").read_text() == "my notes"
    assert os.readlink(data / "plate.csv") == str(tmp_path / "secret.txt")


async def test_linked_items_emit_events(store, workspace):
    emitted = []

    class Logger:
        def emit(self, *, schema_id, data):
            emitted.append(data)

    stager = DataStager(
        mounts={"archive": str(store)}, url_prefixes=[], max_download_bytes=1, event_logger=Logger()
    )
    await stager.apply(plan(stager, workspace, item("2026/S-42/raw")))
    assert emitted == [
        {"action": "linked", "name": "raw", "path": "ws/entry/data/raw", "mount": "archive"}
    ]


@pytest.mark.parametrize(
    "path",
    ["", ".", "./", "./.", ".//"],
    ids=["empty", "dot", "dot-slash", "dot-dot", "dot-slashes"],
)
def test_a_path_naming_the_whole_store_is_refused(path, stager, workspace):
    # Given a data item whose path names the mount root itself
    # When it is planned, Then it is refused: an item names something inside the store
    with pytest.raises(LimsError) as e:
        plan(stager, workspace, item(path))
    assert (e.value.reason, e.value.status) == ("path_not_allowed", 403)
    assert not (workspace / "entry" / "data").exists()


def test_a_symlink_back_to_the_store_root_is_refused(stager, store, workspace):
    (store / "2026" / "root").symlink_to("..")
    with pytest.raises(LimsError) as e:
        plan(stager, workspace, item("2026/root"))
    assert e.value.reason == "path_not_allowed"
