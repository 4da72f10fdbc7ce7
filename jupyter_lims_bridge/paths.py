"""Paths from tokens and requests made safe: one component at a time, then contained.

Owns the rules every capability applies to a path it did not choose: how one
component is sanitised (no separators, no leading dot, bounded length), what a
single plain file name is, and the containment check (resolve, symlinks
included, then require the result under a root). Also the one name of the
folder beside an entry's notebook that holds its data.

Must not: import anything of the bridge but ``errors`` (every capability and
the notebook-side ``data`` helper import it), or touch the filesystem beyond
resolving.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from .errors import LimsError

MAX_COMPONENT_LENGTH = 100
#: The folder beside an entry's notebook where its data items are linked or downloaded.
DATA_DIR = "data"

_UNSAFE_CHARS = re.compile(r"[^\w .,()+=@-]+", re.UNICODE)


def sanitize_component(text: str) -> str:
    """Make one path component safe: no separators, no leading dots, bounded length."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    text = _UNSAFE_CHARS.sub("_", text)
    # a leading dot would hide the file (or make it "." / ".."); leading spaces
    # hide it in listings; trailing dots and spaces are dropped silently by
    # some filesystems
    text = text.lstrip(". ")[:MAX_COMPONENT_LENGTH].rstrip(". ")
    return text or "_"


def is_safe_file_name(name: str) -> bool:
    """A single, plain file name: what a data item's ``name`` must be."""
    return bool(name) and name == sanitize_component(name) and len(name) <= MAX_COMPONENT_LENGTH


def contained(path: Path, root: Path) -> Path:
    """``path`` resolved (symlinks included); raises ``path_not_allowed`` unless under ``root``.

    ``root`` is resolved too: compared with an unresolved root (one reached
    through a symlink), every resolved path would seem to leave it."""
    resolved = path.resolve()
    root = root.resolve()
    if resolved != root and not resolved.is_relative_to(root):
        raise LimsError("path_not_allowed", "That path leaves the workspace.")
    return resolved
