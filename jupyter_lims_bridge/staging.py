"""Data staging: an entry's data items placed beside its notebook.

Owns the ``data`` claim after the token is verified: items from mounted
stores (``data_mounts``) become symlinks into ``<notebook dir>/data/``; items
with a ``url`` (allowed by ``data_url_prefixes``) become download jobs.

``plan`` checks every item and writes nothing, so one bad item refuses the
whole open; ``apply`` then links and queues, and answers at once. Nothing here
overwrites an existing file: a different file already at an item's place is a
``conflict`` and is kept.

Downloads run in a bounded pool of worker threads (never on the event loop),
stream into a hidden partial file ``.<name>.part`` beside the final name, and
appear under the final name only once their size and sha256 match, by a
no-clobber hard link (or rename). An interrupted transfer keeps its partial
file and resumes with an HTTP Range request. Jobs live in memory only; a
restart leaves at most a hidden partial file, never a corrupt final one.

This module knows nothing of HTTP handlers, and must never log or report a
download URL's query (it may hold a signature) nor the text of a ``requests``
exception (it embeds the URL).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import os
import queue
import re
import secrets
import shutil
import socket
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import requests

from . import events
from .claims import DataItem
from .errors import LimsError
from .workspace import contained, is_safe_file_name

log = logging.getLogger(__name__)

#: Read and write size of a download, and of hashing a file already on disk.
CHUNK_SIZE = 1 << 20
#: Written bytes after which the kernel is asked to start writing them to disk,
#: so the final fsync waits for little, and a big download does not fill the page cache.
WRITEBACK_BYTES = 16 << 20
#: An existing file up to this size is hashed before ``apply`` answers; a bigger one
#: is checked by a job (``running`` while it is hashed), so an open answers at once.
INLINE_VERIFY_BYTES = 32 << 20
#: Finished jobs kept for ``GET lims/api/staging`` before the oldest are dropped.
MAX_FINISHED_JOBS = 500
#: Redirects followed per request; each hop must stay inside ``data_url_prefixes``.
MAX_REDIRECTS = 5
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")


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
    the prefix's path at a segment boundary (``/files`` admits ``/files`` and
    ``/files/x``, never ``/filesX``), and dot segments and ``;`` (also encoded)
    are refused outright: some servers read ``/files/..;/admin`` as
    ``/admin`` (path parameters), so a ``;`` can smuggle a ``..`` past the check.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
        return False
    decoded = unquote(parts.path)
    if any(s in (".", "..") for s in decoded.split("/")) or "\\" in decoded or ";" in decoded:
        return False
    for prefix in prefixes:
        p = urlsplit(prefix)
        if (p.scheme, p.netloc.lower()) != (parts.scheme, parts.netloc.lower()):
            continue
        if _under(parts.path, p.path):
            return True
    return False


def _under(path: str, prefix_path: str) -> bool:
    """Whether URL path ``path`` is below ``prefix_path``, on a segment boundary."""
    if prefix_path in ("", "/"):
        return True  # the whole host
    if prefix_path.endswith("/"):
        return path.startswith(prefix_path)  # "/files/" admits "/files/x", not "/files"
    return path == prefix_path or path.startswith(prefix_path + "/")


def safe_url(url: str) -> str:
    """``url`` without its query, fragment and credentials: what may be logged or emitted."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class _RedactQuery(logging.Filter):
    """urllib3 logs each request line at DEBUG; a signed URL's query must not reach a log."""

    _QUERY = re.compile(r"\?[^\s\"')]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self._QUERY.sub("?…", a) if isinstance(a, str) and "?" in a else a
                for a in record.args
            )
        return True


# the request line (connectionpool) and "Incremented Retry for (url=…)" (util.retry)
for _name in ("urllib3.connectionpool", "urllib3.util.retry"):
    logging.getLogger(_name).addFilter(_RedactQuery())


# ---------------------------------------------------------------------------
# jobs


QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"


@dataclass(eq=False)
class Job:
    """One download. Written by its worker thread, read by the event loop:
    plain attribute stores, which the GIL keeps whole."""

    id: str
    name: str
    path: str  # api path of the final file
    target: Path
    url: str = field(repr=False)
    sha256: str | None = None
    size: int | None = None
    state: str = QUEUED
    bytes_done: int = 0
    bytes_total: int | None = None
    speed: float = 0.0  # bytes per second, over the last half second (average when done)
    reason: str | None = None
    message: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    #: bytes received from the network (not counting a resumed partial), for tests and events
    bytes_fetched: int = 0
    #: only check the file already at ``target`` against ``sha256``; fetch nothing
    verify_only: bool = False
    _response: Any = field(default=None, repr=False)

    @property
    def partial(self) -> Path:
        return self.target.with_name(f".{self.target.name}.part")

    @property
    def meta(self) -> Path:
        return self.target.with_name(f".{self.target.name}.part.json")

    @property
    def active(self) -> bool:
        return self.state in (QUEUED, RUNNING)

    def identity(self) -> dict[str, Any]:
        """What a partial file must have been fetched for to be resumed."""
        return {"url": safe_url(self.url), "sha256": self.sha256, "size": self.size}

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "path": self.path,
            "state": self.state,
            "bytesDone": self.bytes_done,
            "bytesTotal": self.bytes_total,
            "speed": round(self.speed),
            "reason": self.reason,
            "message": self.message,
        }


class _JobFailed(Exception):
    """Ends a job: ``reason`` and a display-safe ``message``; ``keep_partial`` for a resume."""

    def __init__(self, reason: str, message: str, *, keep_partial: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.keep_partial = keep_partial


class _Retry(Exception):
    """A transient failure (connection, timeout, 5xx): try again after a pause."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class _Restart(Exception):
    """The partial file cannot be resumed: drop it and fetch from the start at once."""


class _Stopped(Exception):
    """The server is shutting down."""


def _is_disk_full(error: OSError) -> bool:
    return error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _human(n: int | float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# ---------------------------------------------------------------------------
# the stager


class DataStager:
    """Links mount items and runs download jobs for URL items."""

    def __init__(
        self,
        *,
        mounts: dict[str, str],
        url_prefixes: list[str],
        max_download_bytes: int,
        max_concurrent: int = 4,
        event_logger: Any = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 1.0,
        log: logging.Logger | None = None,
    ) -> None:
        self.mounts = {name: Path(path).expanduser() for name, path in mounts.items()}
        self.url_prefixes = list(url_prefixes)
        self.max_download_bytes = max_download_bytes
        self.max_concurrent = max(1, max_concurrent)
        self.event_logger = event_logger
        self.timeout = (connect_timeout, read_timeout)
        self.retries = retries
        self.backoff = backoff
        self.log = log or logging.getLogger(__name__)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._active: dict[Path, Job] = {}  # final path -> its queued/running job
        self._verified: dict[Path, tuple[int, int, int, str]] = {}  # path -> (ino, size, mtime, sha)
        self._executor: ThreadPoolExecutor | None = None
        self._stopping = threading.Event()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- planning: checks only -------------------------------------------------

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
                    raise LimsError("bad_claims", f"Data item {item.name!r}: sha256 is not 64 hex digits.")
                planned.append(PlannedItem(item, target, api_path))
            else:
                planned.append(PlannedItem(item, target, api_path, self._mount_source(item, roots)))
        return planned

    def _mount_source(self, item: DataItem, roots: dict[str, Path] | None = None) -> Path:
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
            raise LimsError("path_not_allowed", f"Data item {item.name!r}: path names no item of the store.")
        # resolve() follows symlinks inside the store: one pointing out of it is refused
        source = contained(root / rel, root)
        if source == root:
            # a symlink in the store that leads back to its root
            raise LimsError("path_not_allowed", f"Data item {item.name!r}: path names the whole store.")
        if not source.exists():
            raise LimsError("data_missing", f"Data item {item.name!r} does not exist in the store.")
        return source

    # -- applying: links and jobs ----------------------------------------------

    async def apply(self, planned: list[PlannedItem]) -> list[dict[str, Any]]:
        """Link mount items and queue downloads; returns one status dict per item.

        Answers at once: a download only gets queued here. The one exception is
        a file already at an item's place, which is hashed (in a worker thread)
        to tell ``done`` from ``conflict``.
        """
        self._loop = asyncio.get_running_loop()
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
                self._emit("linked", p.item.name, p.api_path, mount=p.item.mount)
                return {**result, "status": "linked"}
            self._emit("conflict", p.item.name, p.api_path, mount=p.item.mount, reason="conflict")
            return {**result, "status": "conflict", "reason": "conflict"}
        self._emit("linked", p.item.name, p.api_path, mount=p.item.mount)
        return {**result, "status": "linked"}

    async def start_download(self, p: PlannedItem) -> dict[str, Any]:
        """Queue a download job for ``p`` unless its file is already there."""
        assert p.item.url is not None
        result: dict[str, Any] = {"name": p.item.name, "path": p.api_path}
        active = self._active.get(p.target)
        if active is not None and active.active:
            # a second open of the same entry while the first still fetches
            return {**result, "status": active.state, "job": active.id}
        existing = await self._existing_state(p)
        if existing == "conflict":
            self._emit("conflict", p.item.name, p.api_path, url=p.item.url, reason="conflict")
            return {**result, "status": "conflict", "reason": "conflict"}
        if existing == "done":
            # a partial file left by an earlier, interrupted job is of no use now
            _unlink(p.target.with_name(f".{p.target.name}.part"))
            _unlink(p.target.with_name(f".{p.target.name}.part.json"))
            return {**result, "status": "done"}
        job = Job(
            id=secrets.token_urlsafe(9),
            name=p.item.name,
            path=p.api_path,
            target=p.target,
            url=p.item.url,
            sha256=p.item.sha256.lower() if p.item.sha256 else None,
            size=p.item.size,
            bytes_total=p.item.size,
            verify_only=existing == "verify",
        )
        self._jobs[job.id] = job
        self._forget_old_jobs()
        self._submit(job)
        if job.state == FAILED:  # refused at once: the server is shutting down
            return {**result, "status": FAILED, "reason": job.reason, "job": job.id}
        # the worker may already run it; from the caller's view it was just queued
        return {**result, "status": QUEUED, "job": job.id}

    async def _existing_state(self, p: PlannedItem) -> str | None:
        """``None`` when nothing is at the item's place, else ``"done"``, ``"conflict"``,
        or ``"verify"`` (a big file to be hashed by a job)."""
        target = p.target
        if not target.is_symlink() and not target.exists():
            return None
        if target.is_symlink() or not target.is_file():
            return "conflict"
        st = target.stat()
        if p.item.size is not None and st.st_size != p.item.size:
            return "conflict"
        if p.item.sha256 is None:
            # nothing to compare with: the file is kept either way, and is what the entry names
            return "done"
        want = p.item.sha256.lower()
        known = self._verified.get(target)
        if known == (st.st_ino, st.st_size, st.st_mtime_ns, want):
            return "done"
        if st.st_size > INLINE_VERIFY_BYTES:
            return "verify"
        digest = await asyncio.to_thread(_sha256_of, target)
        if digest != want:
            return "conflict"
        self._verified[target] = (st.st_ino, st.st_size, st.st_mtime_ns, want)
        return "done"

    # -- jobs ------------------------------------------------------------------

    def jobs(self) -> list[dict[str, Any]]:
        """Every job this server knows of, oldest first (the body of ``GET lims/api/staging``)."""
        return [job.to_json() for job in self._jobs.values()]

    def job(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise LimsError("not_found", "There is no staging job with that id.")
        return job

    def retry(self, job_id: str) -> Job:
        """Queue a failed job again; it resumes from its partial file when it can."""
        job = self.job(job_id)
        if job.state != FAILED:
            raise LimsError("bad_request", "Only a failed job can be retried.", status=409)
        if job.reason == "conflict":
            raise LimsError(
                "bad_request", "A different file sits at this item's place; it is kept.", status=409
            )
        active = self._active.get(job.target)
        if active is not None and active.active:
            raise LimsError("bad_request", "Another job is fetching this file.", status=409)
        job.state, job.reason, job.message = QUEUED, None, None
        job.bytes_done, job.bytes_fetched, job.speed = 0, 0, 0.0
        job.bytes_total, job.started, job.finished = job.size, None, None
        self._jobs.move_to_end(job.id)
        self._submit(job)
        return job

    def _submit(self, job: Job) -> None:
        if self._stopping.is_set():
            job.state, job.reason = FAILED, "download_failed"
            job.message = "The server is shutting down."
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.max_concurrent, thread_name_prefix="lims-staging"
            )
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        with self._lock:
            self._active[job.target] = job
        self._executor.submit(self._run, job)

    def _forget_old_jobs(self) -> None:
        finished = [j for j in self._jobs.values() if not j.active]
        for job in finished[: max(0, len(finished) - MAX_FINISHED_JOBS)]:
            del self._jobs[job.id]

    # -- the worker thread -----------------------------------------------------

    def _run(self, job: Job) -> None:
        """Run ``job`` to its end in a worker thread; never raises."""
        job.state, job.started = RUNNING, time.monotonic()
        try:
            self._download(job)
        except _JobFailed as e:
            self._finish_failed(job, e.reason, e.message, keep_partial=e.keep_partial)
        except _Stopped:
            self._finish_failed(
                job,
                "download_failed",
                "The server stopped before the download finished; it resumes on the next open.",
                keep_partial=True,
            )
        except OSError as e:
            if _is_disk_full(e):
                self._finish_failed(
                    job, "download_failed", f"The disk is full: {job.name} could not be stored."
                )
            else:
                self.log.warning("lims-bridge: staging %s: %s", job.name, e.strerror or type(e).__name__)
                self._finish_failed(
                    job, "download_failed", f"{job.name} could not be written ({e.strerror or 'I/O error'})."
                )
        except requests.RequestException as e:
            # its text holds the URL (and so the query): only its type is logged
            self.log.warning("lims-bridge: staging %s failed: %s", job.name, type(e).__name__)
            self._finish_failed(job, "download_failed", f"The download failed ({type(e).__name__}).")
        except Exception:  # noqa: BLE001 - a job ends as failed, whatever went wrong
            self.log.exception("lims-bridge: staging %s failed unexpectedly", job.name)
            self._finish_failed(job, "download_failed", "The download failed unexpectedly.")
        else:
            job.state, job.finished = DONE, time.monotonic()
            elapsed = max(job.finished - (job.started or job.finished), 1e-6)
            job.speed = job.bytes_fetched / elapsed
            if job.verify_only:  # the file was there already: nothing was staged
                return
            self.log.info(
                "lims-bridge: staged %s (%s) from %s", job.path, _human(job.bytes_done), safe_url(job.url)
            )
            self._emit(
                "downloaded", job.name, job.path, url=job.url, job=job.id,
                bytes=job.bytes_done, bytesFetched=job.bytes_fetched, seconds=round(elapsed, 3),
            )
        finally:
            job._response = None
            with self._lock:
                if self._active.get(job.target) is job:
                    del self._active[job.target]

    def _finish_failed(self, job: Job, reason: str, message: str, *, keep_partial: bool = False) -> None:
        if not keep_partial:
            _unlink(job.partial)
            _unlink(job.meta)
        job.state, job.reason, job.message, job.finished = FAILED, reason, message, time.monotonic()
        self.log.info(
            "lims-bridge: staging %s from %s failed: %s", job.path, safe_url(job.url), reason
        )
        action = "conflict" if reason == "conflict" else "failed"
        self._emit(action, job.name, job.path, url=job.url, job=job.id, reason=reason)

    def _verify_existing(self, job: Job) -> None:
        """Hash the file already at the item's place: ``done`` if it matches, else ``conflict``."""
        st = job.target.stat()
        job.bytes_total = st.st_size
        hasher = _sha256_prefix(job.target, None, self._stopping, progress=job)
        if hasher.hexdigest() != job.sha256:
            raise _JobFailed("conflict", f"A different file named {job.name} is already there; it is kept.")
        self._verified[job.target] = (st.st_ino, st.st_size, st.st_mtime_ns, job.sha256)

    def _download(self, job: Job) -> None:
        """Fetch into the partial file (resuming it), verify, and move into place."""
        if job.verify_only:
            self._verify_existing(job)
            return
        job.target.parent.mkdir(parents=True, exist_ok=True)
        hasher: Any = None
        hashed = -1  # bytes of the partial file ``hasher`` has seen
        attempt = 0
        while True:
            self._check_stopping()
            if job.target.exists() or job.target.is_symlink():
                raise _JobFailed("conflict", f"A different file named {job.name} appeared; it is kept.")
            offset, validator = self._resumable_offset(job)
            if hasher is None or hashed != offset:
                hasher = _new_hasher(job)
                if offset and job.sha256 is not None:
                    hasher = _sha256_prefix(job.partial, offset, self._stopping)
                hashed = offset
            try:
                hasher = self._fetch(job, offset, validator, hasher)
                break
            except _Restart:
                _unlink(job.partial)
                hasher, hashed = None, -1
                attempt += 1
                if attempt > self.retries + 1:
                    raise _JobFailed("download_failed", "The server keeps sending inconsistent ranges.")
                continue
            except _Retry as e:
                attempt += 1
                # the bytes written so far stay: the next attempt resumes after them
                hasher, hashed = None, -1
                if attempt > self.retries:
                    raise _JobFailed(
                        "download_failed",
                        f"The download failed after {attempt} attempts ({e.what}); it resumes on the next open.",
                        keep_partial=True,
                    ) from None
                delay = min(self.backoff * 2 ** (attempt - 1), 30.0)
                self.log.info(
                    "lims-bridge: staging %s: %s; retrying in %.1f s", job.name, e.what, delay
                )
                if self._stopping.wait(delay):
                    raise _Stopped() from None
        self._verify_and_place(job, hasher)

    def _check_stopping(self) -> None:
        if self._stopping.is_set():
            raise _Stopped()

    def _resumable_offset(self, job: Job) -> tuple[int, str | None]:
        """Bytes of a partial file that may be resumed, and the ETag/Last-Modified it
        was fetched under; drops a partial file fetched for other data."""
        try:
            size = job.partial.stat().st_size
        except FileNotFoundError:
            _unlink(job.meta)
            return 0, None
        try:
            meta = json.loads(job.meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = None
        if not isinstance(meta, dict) or {k: meta.get(k) for k in ("url", "sha256", "size")} != job.identity():
            _unlink(job.partial)
            _unlink(job.meta)
            return 0, None
        limit = job.size if job.size is not None else self.max_download_bytes
        if size > limit:
            _unlink(job.partial)
            _unlink(job.meta)
            return 0, None
        validator = meta.get("validator")
        return size, validator if isinstance(validator, str) else None

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # our own loop retries and resumes; urllib3's would refetch from the start
            session.mount("http://", requests.adapters.HTTPAdapter(max_retries=0))
            session.mount("https://", requests.adapters.HTTPAdapter(max_retries=0))
            session.trust_env = True
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def _get(self, job: Job, headers: dict[str, str]) -> requests.Response:
        """GET ``job.url``, following redirects only while they stay allowed."""
        url = job.url
        session = self._session()
        for _ in range(MAX_REDIRECTS + 1):
            try:
                response = session.get(
                    url, headers=headers, stream=True, timeout=self.timeout, allow_redirects=False
                )
            except requests.Timeout:
                raise _Retry("timed out") from None
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
                raise _Retry("connection failed") from None
            except requests.RequestException as e:
                raise _JobFailed("download_failed", f"The request failed ({type(e).__name__}).") from None
            if response.is_redirect:
                location = response.headers.get("Location", "")
                response.close()
                url = urljoin(url, location)
                if not url_allowed(url, self.url_prefixes):
                    raise _JobFailed("url_not_allowed", "The server redirected to a URL that is not allowed.")
                continue
            return response
        raise _JobFailed("download_failed", "Too many redirects.")

    def _fetch(self, job: Job, offset: int, validator: str | None, hasher: Any) -> Any:
        """One HTTP attempt. Returns the finished hasher, or raises to retry/restart/fail."""
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if validator:
                # the server answers 200 with the whole new file if it changed since
                headers["If-Range"] = validator
        response = self._get(job, headers)
        job._response = response
        with response:
            status = response.status_code
            if status >= 500 or status == 429:
                raise _Retry(f"HTTP {status}")
            if status == 416 and offset:
                if job.size is not None and offset == job.size:
                    job.bytes_done = offset
                    return hasher  # the partial already holds everything
                raise _Restart()
            if status not in (200, 206):
                if status in (404, 410):
                    raise _JobFailed("download_failed", f"The server answered HTTP {status}: not found.")
                raise _JobFailed(
                    "download_failed", f"The server answered HTTP {status}.", keep_partial=True
                )
            length = _int_or_none(response.headers.get("Content-Length"))
            if response.headers.get("Content-Encoding", "identity").lower() != "identity":
                length = None  # the length of the encoded body, not of the file
            if status == 206:
                m = _CONTENT_RANGE_RE.match(response.headers.get("Content-Range", ""))
                if not offset or m is None or int(m.group(1)) != offset:
                    raise _Restart()
                total = int(m.group(3)) if m.group(3) != "*" else (
                    offset + length if length is not None else None
                )
                mode = "ab"
            else:
                # no Range sent, or the server ignored it: the whole file, from the start
                if offset:
                    hasher = _new_hasher(job)
                offset = 0
                total = length
                mode = "wb"
            if total is not None:
                if total > self.max_download_bytes:
                    raise _JobFailed(
                        "too_large",
                        f"{job.name} is {_human(total)}, more than the {_human(self.max_download_bytes)} allowed.",
                    )
                if job.size is not None and total != job.size:
                    raise _JobFailed(
                        "checksum_mismatch",
                        f"The server sent {total} bytes for {job.name}; the entry says {job.size}.",
                    )
                job.bytes_total = total
                free = shutil.disk_usage(job.target.parent).free
                if free < total - offset:
                    raise _JobFailed(
                        "download_failed",
                        f"The disk is full: {job.name} needs {_human(total - offset)}, "
                        f"only {_human(free)} is free.",
                    )
            meta = {**job.identity(), "validator": response.headers.get("ETag")
                    or response.headers.get("Last-Modified")}
            if mode == "wb" or not job.meta.exists():
                _write_small(job.meta, json.dumps(meta))
            self._stream(job, response, offset, mode, hasher)
            return hasher

    def _stream(self, job: Job, response: requests.Response, offset: int, mode: str, hasher: Any) -> None:
        """Copy the body into the partial file, hashing as it goes."""
        limit = job.size if job.size is not None else self.max_download_bytes
        done = offset
        job.bytes_done = done
        window_t, window_b = time.monotonic(), done
        flushed = done
        writeback = getattr(os, "posix_fadvise", None)
        raw = response.raw
        # hashing runs beside the transfer in its own thread (hashlib releases the GIL)
        digest = _HashThread(hasher) if job.sha256 is not None else None
        fd = os.open(job.partial, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "ab" else os.O_TRUNC), 0o644)
        try:
            while True:
                if self._stopping.is_set():
                    raise _Stopped()
                try:
                    # read1: what has arrived, so a cut connection loses no received byte
                    chunk = raw.read1(CHUNK_SIZE, decode_content=True)
                except (requests.exceptions.ChunkedEncodingError, requests.ConnectionError):
                    raise _Retry("connection cut") from None
                except requests.Timeout:
                    raise _Retry("timed out") from None
                except Exception as e:  # urllib3's own errors: protocol, read timeout
                    if e.__class__.__module__.startswith(("urllib3", "http.client", "socket")) or isinstance(
                        e, (ConnectionError, socket.timeout)
                    ):
                        raise _Retry("connection cut") from None
                    raise
                n = len(chunk)
                if not n:
                    break
                if done + n > limit:
                    if job.size is not None:
                        raise _JobFailed(
                            "checksum_mismatch", f"The server sent more than {job.size} bytes for {job.name}."
                        )
                    raise _JobFailed(
                        "too_large", f"{job.name} is more than the {_human(self.max_download_bytes)} allowed."
                    )
                written = os.write(fd, chunk)
                while written < n:
                    written += os.write(fd, memoryview(chunk)[written:])
                if digest is not None:
                    digest.update(chunk)
                done += n
                job.bytes_done = done
                if writeback is not None and done - flushed >= WRITEBACK_BYTES:
                    # DONTNEED starts asynchronous writeback of these dirty pages (and
                    # drops them from the cache once written); it never blocks on the disk
                    writeback(fd, flushed, done - flushed, os.POSIX_FADV_DONTNEED)
                    flushed = done
                job.bytes_fetched += n
                now = time.monotonic()
                if now - window_t >= 0.5:
                    job.speed = (done - window_b) / (now - window_t)
                    window_t, window_b = now, done
            # a later crash must not leave a final name pointing at unwritten data
            os.fsync(fd)
        finally:
            os.close(fd)
            if digest is not None:
                digest.close()  # ``hasher`` has now seen exactly the bytes written
        if job.bytes_total is not None and done < job.bytes_total:
            raise _Retry("connection cut")

    def _verify_and_place(self, job: Job, hasher: Any) -> None:
        size = job.partial.stat().st_size if job.partial.exists() else 0
        if job.size is not None and size != job.size:
            raise _JobFailed(
                "checksum_mismatch", f"{job.name} has {size} bytes; the entry says {job.size}."
            )
        digest = hasher.hexdigest() if job.sha256 is not None else None
        if job.sha256 is not None and digest != job.sha256:
            raise _JobFailed("checksum_mismatch", f"{job.name} does not match its sha256 checksum.")
        job.bytes_done = job.bytes_total = size
        _place(job.partial, job.target, job.name)
        _unlink(job.meta)
        if digest is not None:
            try:
                st = job.target.stat()
                self._verified[job.target] = (st.st_ino, st.st_size, st.st_mtime_ns, digest)
            except OSError:
                pass

    # -- events ------------------------------------------------------------------

    def _emit(self, action: str, name: str, path: str, *, url: str | None = None, **data: Any) -> None:
        """Emit a staging event on the event loop's thread (listeners are asyncio tasks)."""
        if self.event_logger is None:
            return
        payload = {"action": action, "name": name, "path": path, **data}
        if url is not None:
            payload["url"] = safe_url(url)
        loop = self._loop
        try:
            on_loop = loop is None or asyncio.get_running_loop() is loop
        except RuntimeError:  # no running loop: a worker thread
            on_loop = False
        if on_loop:
            events.emit(self.event_logger, events.STAGING, payload)
            return
        try:
            loop.call_soon_threadsafe(events.emit, self.event_logger, events.STAGING, payload)
        except RuntimeError:  # the loop is closed: the server is gone
            pass

    # -- shutdown ----------------------------------------------------------------

    async def close(self) -> None:
        """Stop running jobs (server shutdown). Partial files stay hidden, for a resume."""
        self._stopping.set()
        for job in list(self._active.values()):
            _interrupt(job._response)
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
            for job in self._jobs.values():
                if job.state == QUEUED:
                    job.state, job.reason = FAILED, "download_failed"
                    job.message = "The server stopped before the download started."
            # workers notice the flag within one chunk; a stuck read was interrupted above
            await asyncio.to_thread(executor.shutdown, wait=True)
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()


# ---------------------------------------------------------------------------
# files


class _NoHash:
    """Stands in for a hasher when the entry gives no sha256: size is all there is to check."""

    def update(self, data: Any) -> None:
        pass

    def hexdigest(self) -> None:
        return None


def _new_hasher(job: Job) -> Any:
    return hashlib.sha256() if job.sha256 is not None else _NoHash()


class _HashThread:
    """Feeds ``hasher`` from a thread of its own, so hashing overlaps receiving and
    writing on another core. The queue is bounded: at most a few chunks in memory."""

    def __init__(self, hasher: Any) -> None:
        self.hasher = hasher
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
        self._thread = threading.Thread(target=self._run, name="lims-staging-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self.hasher.update(chunk)

    def update(self, chunk: bytes) -> None:
        self._queue.put(chunk)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()


def _sha256_of(path: Path) -> str:
    return _sha256_prefix(path, None, None).hexdigest()


def _sha256_prefix(
    path: Path, length: int | None, stopping: threading.Event | None, progress: Job | None = None
) -> Any:
    """A sha256 of the first ``length`` bytes of ``path`` (all of it when None)."""
    hasher = hashlib.sha256()
    buf = bytearray(CHUNK_SIZE)
    view = memoryview(buf)
    left = length
    with open(path, "rb", buffering=0) as f:
        while left is None or left > 0:
            if stopping is not None and stopping.is_set():
                raise _Stopped()
            n = f.readinto(view if left is None or left >= CHUNK_SIZE else view[:left])
            if not n:
                break
            hasher.update(view[:n])
            if progress is not None:
                progress.bytes_done += n
            if left is not None:
                left -= n
    return hasher


def _place(partial: Path, target: Path, name: str) -> None:
    """Move ``partial`` to ``target`` atomically without ever replacing an existing file."""
    try:
        os.link(partial, target)  # fails if anything appeared at ``target`` meanwhile
    except FileExistsError:
        raise _JobFailed("conflict", f"A different file named {name} appeared; it is kept.") from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # a filesystem without hard links: rename, after checking (a narrow race remains)
        if target.exists() or target.is_symlink():
            raise _JobFailed("conflict", f"A different file named {name} appeared; it is kept.") from None
        os.rename(partial, target)
    else:
        os.unlink(partial)
    try:
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _write_small(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _interrupt(response: Any) -> None:
    """Wake a worker blocked reading ``response`` (best effort, at shutdown)."""
    if response is None:
        return
    try:
        sock = response.raw._connection.sock  # urllib3 2.x
        sock.shutdown(socket.SHUT_RDWR)
    except Exception:  # noqa: BLE001 - the read timeout ends it otherwise
        pass
