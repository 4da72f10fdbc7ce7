"""``entry_data()``: the local paths of the current ELN entry's data, from inside a notebook.

Runs in the *kernel*, not in the server: it imports nothing of Jupyter's server
side and does no network I/O. It finds the notebook the kernel belongs to, reads
the ``lims`` provenance metadata the bridge wrote into it, and maps each data
item's name to its place in ``data/`` beside the notebook::

    from jupyter_lims_bridge.data import entry_data
    data = entry_data()            # {"raw": PosixPath('/home/…/data/raw'), …}
    df = pandas.read_csv(data["plate.csv"])

Finding the notebook, most specific first: an explicit ``notebook=`` argument;
the ``__session__`` variable ipykernel sets from ``JPY_SESSION_NAME`` (the
notebook's path, relative to the server root; the kernel runs in the notebook's
folder); the one notebook with ``lims`` metadata in the current directory. When
no such notebook exists, the entries of ``./data/`` are returned.

It must only read: it never creates, links or downloads anything. A download
that is still running has its path returned all the same; ``path.exists()``
tells whether it has arrived.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

from .paths import DATA_DIR

__all__ = ["entry_data", "entry_metadata", "find_entry_notebook"]


def _session_path() -> str | None:
    """The notebook path jupyter_server gave this kernel, if any."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is not None:
        session = shell.user_ns.get("__session__")
        if isinstance(session, str) and session:
            return session
    return os.environ.get("JPY_SESSION_NAME") or None


def _lims_metadata(path: Path) -> dict[str, Any] | None:
    """The ``lims`` metadata of the notebook at ``path``, or None."""
    try:
        with path.open(encoding="utf-8") as f:
            nb = json.load(f)
    except (OSError, ValueError):
        return None
    lims = nb.get("metadata", {}).get("lims") if isinstance(nb, dict) else None
    return lims if isinstance(lims, dict) else None


def _candidates(session: str, cwd: Path) -> list[Path]:
    """Where the notebook named by a session path may be, seen from the kernel."""
    p = Path(session).expanduser()
    if p.is_absolute():
        return [p]
    rel = PurePosixPath(session)
    # the kernel runs in the notebook's folder; the session path is relative to the
    # server root, which is some ancestor of that folder
    found = [cwd / rel.name]
    for ancestor in [cwd, *cwd.parents]:
        found.append(ancestor / rel)
    return found


def find_entry_notebook(notebook: str | os.PathLike[str] | None = None) -> Path | None:
    """The notebook (with ``lims`` metadata) whose entry's data is wanted, or None."""
    cwd = Path.cwd()
    if notebook is not None:
        path = Path(notebook).expanduser()
        path = path if path.is_absolute() else cwd / path
        if _lims_metadata(path) is None:
            raise LookupError(f"{path} is not a notebook opened from the ELN (no 'lims' metadata).")
        return path
    session = _session_path()
    if session and session.endswith(".ipynb"):
        for candidate in _candidates(session, cwd):
            if candidate.is_file() and _lims_metadata(candidate) is not None:
                return candidate
    entries: dict[tuple[str, str], Path] = {}
    for path in sorted(cwd.glob("*.ipynb")):
        lims = _lims_metadata(path)
        if lims is not None:
            entity = lims.get("entity") if isinstance(lims.get("entity"), dict) else {}
            entries.setdefault((str(entity.get("type")), str(entity.get("id"))), path)
    if len(entries) > 1:
        names = ", ".join(sorted(p.name for p in entries.values()))
        raise LookupError(
            f"Several ELN entries have notebooks here ({names}); pass notebook='<name>.ipynb'."
        )
    return next(iter(entries.values()), None)


def entry_metadata(notebook: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The ``lims`` provenance metadata of the current entry's notebook (entity, data…)."""
    path = find_entry_notebook(notebook)
    if path is None:
        raise LookupError("No notebook opened from the ELN was found in this folder.")
    return _lims_metadata(path) or {}


def entry_data(notebook: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """``{name: absolute path}`` of the current ELN entry's data items.

    ``notebook`` names the entry's notebook when it cannot be found on its own
    (a path, absolute or relative to the current directory).
    """
    path = find_entry_notebook(notebook)
    if path is None:
        # not a notebook the bridge made (or its metadata was removed): what is in data/
        folder = Path.cwd() / DATA_DIR
        if not folder.is_dir():
            return {}
        return {
            p.name: p.absolute() for p in sorted(folder.iterdir()) if not p.name.startswith(".")
        }
    folder = path.parent.absolute() / DATA_DIR
    items = (_lims_metadata(path) or {}).get("data") or []
    result: dict[str, Path] = {}
    for item in items:
        name = item.get("name") if isinstance(item, dict) else None
        # the bridge only ever wrote single file names here; anything else was edited in
        if (
            isinstance(name, str)
            and name
            and "/" not in name
            and "\\" not in name
            and name not in (".", "..")
        ):
            result[name] = folder / name
    return result
