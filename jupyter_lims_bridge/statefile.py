"""Private (0600) atomic JSON state files.

A leaf shared by the stores that keep state in the bridge's state directory
(the ``jti`` replay store, recent opens, proxy tokens). It owns how such a file
is read, written and updated, never what it holds:

- a write goes to a temporary file beside the target, created 0600, synced, then
  renamed over it: a reader sees the old or the new content, never a mix, and
  nobody else can ever read the secrets in it;
- an update (:func:`update_private_json`) is a read-modify-write under an
  exclusive ``fcntl.flock`` on a lock file beside the state file, so servers
  that share one state directory (named servers of one user, ``jupyter lab``
  next to ``jupyter server``) see each other's entries and never drop them.

It must not import any other module of the package.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def write_private_text(path: Path, text: str) -> None:
    """Write ``text`` atomically to a file only its owner can read (0600 from creation)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # a random part: two writers in one process (threads) never share a temp file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_private_json(path: Path, data: Any) -> None:
    """Write JSON atomically to a file only its owner can read (0600 from creation)."""
    write_private_text(path, json.dumps(data))


def read_json(path: Path, default: Callable[[], Any] = dict) -> Any:
    """The JSON in ``path``; ``default()`` when it is missing, unreadable or of
    another type than ``default()`` (a warning says so, without the content)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return default()
    except (OSError, ValueError):
        log.warning("lims-bridge: ignoring unreadable state file %s", path)
        return default()
    fallback = default()
    if not isinstance(data, type(fallback)):
        log.warning("lims-bridge: ignoring state file %s of unexpected shape", path)
        return fallback
    return data


def lock_path(path: Path) -> Path:
    """The lock file of state file ``path`` (beside it, never renamed over)."""
    return path.with_name(f"{path.name}.lock")


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the exclusive lock of state file ``path`` (across processes and threads).

    ``flock`` locks belong to an open file, so each holder opens the lock file
    anew: two threads of one process exclude each other as two processes do.
    The lock is released when the file is closed, also if the process dies.
    """
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def update_private_json(
    path: Path, change: Callable[[Any], bool], default: Callable[[], Any] = dict
) -> Any:
    """Lock, re-read, change, write atomically, unlock; returns the data as it now is.

    ``change(data)`` edits the freshly read data in place and returns whether it
    changed anything (nothing is written otherwise). Everything another process
    wrote before the lock was taken is in ``data``, so nothing is lost.
    """
    with locked(path):
        data = read_json(path, default)
        if change(data):
            write_private_json(path, data)
        return data
