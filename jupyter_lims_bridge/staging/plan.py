"""Planning an entry's data: every item checked, nothing written.

Owns what a ``data`` item may be once the token is verified: a single plain
file name; a mount item inside a configured store (resolved, contained, never
the store itself); a URL item under ``data_url_prefixes`` within the size
limit. One bad item refuses the whole open, before anything is written. Also
what of a download URL may be logged (:func:`safe_url`).

Must not: write anything, fetch anything, or log a URL's query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..claims import DataItem
from ..errors import LimsError
from ..paths import contained, is_safe_file_name
from ..urlrules import safe_url, url_allowed

__all__ = ["PlannedItem", "Planner", "safe_url", "url_allowed"]


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


class Planner:
    """Checks data items against the stores and URL prefixes this server allows."""

    def __init__(
        self, *, mounts: dict[str, str], url_prefixes: list[str], max_download_bytes: int
    ) -> None:
        self.mounts = {name: Path(path).expanduser() for name, path in mounts.items()}
        self.url_prefixes = list(url_prefixes)
        self.max_download_bytes = max_download_bytes

    def plan(
        self, items: tuple[DataItem, ...], data_dir: Path, data_api_dir: str, root: Path
    ) -> list[PlannedItem]:
        """Check every item of an open; raise the first refusal. Writes nothing."""
        if not items:
            return []
        contained(data_dir, root)
        planned = []
        roots: dict[str, Path] = {}  # each mount's root, resolved once per open
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
                if item.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", item.sha256):
                    raise LimsError(
                        "bad_claims", f"Data item {item.name!r}: sha256 is not 64 hex digits."
                    )
                planned.append(PlannedItem(item, target, api_path))
            else:
                planned.append(PlannedItem(item, target, api_path, self.mount_source(item, roots)))
        return planned

    def mount_source(self, item: DataItem, roots: dict[str, Path] | None = None) -> Path:
        assert item.mount is not None and item.path is not None
        mount_root = self.mounts.get(item.mount)
        if mount_root is None:
            raise LimsError("unknown_mount", f"There is no data store named {item.mount!r} here.")
        root = roots.get(item.mount) if roots is not None else None
        if root is None:
            root = mount_root.resolve()
            if roots is not None:
                roots[item.mount] = root
        rel = item.path
        if rel.startswith("/") or "\x00" in rel or "\\" in rel:
            raise LimsError("path_not_allowed", f"Data item {item.name!r}: path must be relative.")
        if any(part == ".." for part in rel.split("/")):
            raise LimsError("path_not_allowed", f"Data item {item.name!r}: path must not use '..'.")
        if not any(part not in ("", ".") for part in rel.split("/")):
            # "", "." or "./": a data item names something inside the store, never
            # the whole store
            raise LimsError(
                "path_not_allowed", f"Data item {item.name!r}: path names no item of the store."
            )
        # resolve() follows symlinks inside the store: one pointing out of it is refused
        source = contained(root / rel, root)
        if source == root:
            # a symlink in the store that leads back to its root
            raise LimsError(
                "path_not_allowed", f"Data item {item.name!r}: path names the whole store."
            )
        if not source.exists():
            raise LimsError("data_missing", f"Data item {item.name!r} does not exist in the store.")
        return source
