"""The ELN entries opened recently on this server, newest first.

A small JSON file in the bridge's state directory, updated under its lock and
rewritten atomically on each open (:mod:`.statefile`), so servers sharing the
state directory keep one list; shown by ``GET lims/api/status`` and the
JupyterLab panel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .statefile import read_json, update_private_json


class RecentOpens:
    def __init__(self, path: Path, limit: int = 50) -> None:
        self.path = path
        self.limit = limit

    def add(self, entity: dict[str, Any], path: str, opened_at: str) -> None:
        """Put ``entity`` (opened as ``path``) first, dropping an older line of the same notebook."""

        def change(entries: list[Any]) -> bool:
            entries[:] = [e for e in entries if isinstance(e, dict) and e.get("path") != path]
            entries.insert(0, {"entity": entity, "path": path, "openedAt": opened_at})
            del entries[self.limit :]
            return True

        update_private_json(self.path, change, default=list)

    def list(self) -> list[dict[str, Any]]:
        return [e for e in read_json(self.path, list) if isinstance(e, dict)]
