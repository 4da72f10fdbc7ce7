"""The ELN entries opened recently on this server, newest first.

A small JSON file in the bridge's state directory, rewritten atomically on
each open; shown by ``GET lims/api/status`` and the JupyterLab panel.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .claims import write_private_json

log = logging.getLogger(__name__)


class RecentOpens:
    def __init__(self, path: Path, limit: int = 50) -> None:
        self.path = path
        self.limit = limit
        try:
            loaded = json.loads(path.read_text())
            self._entries: list[dict[str, Any]] = loaded if isinstance(loaded, list) else []
        except FileNotFoundError:
            self._entries = []
        except (OSError, ValueError):
            log.warning("lims-bridge: ignoring unreadable %s", path)
            self._entries = []

    def add(self, entity: dict[str, Any], path: str, opened_at: str) -> None:
        """Put ``entity`` (opened as ``path``) first, dropping an older line of the same notebook."""
        self._entries = [e for e in self._entries if e.get("path") != path]
        self._entries.insert(0, {"entity": entity, "path": path, "openedAt": opened_at})
        del self._entries[self.limit :]
        write_private_json(self.path, self._entries)

    def list(self) -> list[dict[str, Any]]:
        return list(self._entries)
