"""Data staging: an entry's data items placed beside its notebook.

Owns the ``data`` claim after the token is verified: items from mounted
stores (``data_mounts``) become symlinks into ``<notebook dir>/data/``; items
with a ``url`` (allowed by ``data_url_prefixes``) become download jobs.

``plan`` checks every item and writes nothing, so one bad item refuses the
whole open; ``apply`` then links and queues. Nothing here overwrites an
existing file: a different file already at an item's place is a ``conflict``
and is kept.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .claims import DataItem
from .errors import LimsError
from .workspace import contained, is_safe_file_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannedItem:
    """One data item, checked, with where it goes and where it comes from."""

    item: DataItem
    target: Path  # <notebook dir>/data/<name> (not resolved: it is the link itself)
    api_path: str  # the same, relative to the server root
    source: Path | None = None  # resolved target inside a mount, for mount items

    @property
    def is_download(self) -> bool:
        return self.item.url is not None


def url_allowed(url: str, prefixes: list[str]) -> bool:
    """Whether ``url`` lies under one of ``prefixes``, compared part by part.

    Scheme and host must match exactly (so ``https://lims.example.org`` does
    not admit ``https://lims.example.org.evil.test``), the path must continue
    the prefix's path at a segment boundary, and dot segments (also encoded)
    are refused outright.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
        return False
    segments = unquote(parts.path).split("/")
    if any(s in (".", "..") for s in segments) or "\\" in unquote(parts.path):
        return False
    for prefix in prefixes:
        p = urlsplit(prefix)
        if (p.scheme, p.netloc.lower()) != (parts.scheme, parts.netloc.lower()):
            continue
        if not p.path or p.path == "/":
            return True
        if p.path.endswith("/"):
            if parts.path.startswith(p.path):
                return True
        elif parts.path == p.path or parts.path.startswith(p.path + "/"):
            return True
    return False


class DataStager:
    """Links mount items and runs download jobs for URL items."""

    def __init__(
        self,
        *,
        mounts: dict[str, str],
        url_prefixes: list[str],
        max_download_bytes: int,
        max_concurrent: int = 4,
        log: logging.Logger | None = None,
    ) -> None:
        self.mounts = {name: Path(path).expanduser() for name, path in mounts.items()}
        self.url_prefixes = list(url_prefixes)
        self.max_download_bytes = max_download_bytes
        self.max_concurrent = max_concurrent
        self.log = log or logging.getLogger(__name__)

    # -- planning: checks only -------------------------------------------------

    def plan(
        self, items: tuple[DataItem, ...], data_dir: Path, data_api_dir: str, root: Path
    ) -> list[PlannedItem]:
        """Check every item of an open; raise the first refusal. Writes nothing."""
        if not items:
            return []
        contained(data_dir, root)
        planned = []
        for item in items:
            if not is_safe_file_name(item.name):
                raise LimsError(
                    "path_not_allowed",
                    f"Data item name {item.name[:80]!r} is not a single plain file name.",
                )
            target = data_dir / item.name
            api_path = f"{data_api_dir}/{item.name}"
            if item.url is not None:
                if not url_allowed(item.url, self.url_prefixes):
                    raise LimsError("url_not_allowed", f"Data item {item.name!r}: URL not allowed.")
                if item.size is not None and item.size > self.max_download_bytes:
                    raise LimsError("too_large", f"Data item {item.name!r} is too large.")
                planned.append(PlannedItem(item, target, api_path))
            else:
                planned.append(PlannedItem(item, target, api_path, self._mount_source(item)))
        return planned

    def _mount_source(self, item: DataItem) -> Path:
        assert item.mount is not None and item.path is not None
        mount_root = self.mounts.get(item.mount)
        if mount_root is None:
            raise LimsError("unknown_mount", f"There is no data store named {item.mount!r} here.")
        root = mount_root.resolve()
        rel = item.path
        if rel.startswith("/") or "\x00" in rel or "\\" in rel:
            raise LimsError("path_not_allowed", f"Data item {item.name!r}: path must be relative.")
        if any(part == ".." for part in rel.split("/")):
            raise LimsError("path_not_allowed", f"Data item {item.name!r}: path must not use '..'.")
        # resolve() follows symlinks inside the store: one pointing out of it is refused
        source = contained(root / rel, root)
        if not source.exists():
            raise LimsError("data_missing", f"Data item {item.name!r} does not exist in the store.")
        return source

    # -- applying: links and jobs ----------------------------------------------

    async def apply(self, planned: list[PlannedItem]) -> list[dict[str, Any]]:
        """Link mount items and queue downloads; returns one status dict per item."""
        results = []
        for p in planned:
            if p.is_download:
                results.append(await self.start_download(p))
            else:
                results.append(self.link(p))
        return results

    def link(self, p: PlannedItem) -> dict[str, Any]:
        """Symlink ``p.target`` to its source; O(1) whatever the data's size."""
        assert p.source is not None
        result = {"name": p.item.name, "path": p.api_path}
        p.target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.symlink(p.source, p.target, target_is_directory=p.source.is_dir())
        except FileExistsError:
            if p.target.is_symlink() and Path(os.readlink(p.target)) == p.source:
                return {**result, "status": "linked"}
            return {**result, "status": "conflict", "reason": "conflict"}
        return {**result, "status": "linked"}

    async def start_download(self, p: PlannedItem) -> dict[str, Any]:
        """Queue a download job for ``p``; downloads are not supported yet."""
        return {
            "name": p.item.name,
            "path": p.api_path,
            "status": "failed",
            "reason": "download_failed",
        }

    async def close(self) -> None:
        """Stop running jobs (server shutdown)."""
