"""The download worker: one job's transfer, from the first byte to its final name.

Owns a job (:class:`Job`, its states and progress), fetching over HTTP with
redirects re-checked against the prefixes, resuming a hidden partial file
``.<name>.part`` with a Range request (``If-Range`` on its validator),
retrying transient failures with exponential backoff, verifying size and
sha256 (hashing beside the transfer in a thread of its own), and placing the
file under its final name by a no-clobber hard link, fsynced. Runs in a
worker thread, never on the event loop; :meth:`Downloader.run` raises
:class:`JobFailed` or :class:`Stopped` to end a job.

Must not: overwrite an existing file, leave a partial file under a final name,
or log a URL's query or a ``requests`` exception's text (both hold the URL's
signature): :func:`install_log_filters` keeps urllib3's own log lines clean.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import queue
import re
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from ..claims import DataItem
from .plan import safe_url, url_allowed

if TYPE_CHECKING:
    import requests

#: Read and write size of a download, and of hashing a file already on disk.
CHUNK_SIZE = 1 << 20
#: Written bytes after which the kernel is asked to start writing them to disk,
#: so the final fsync waits for little, and a big download does not fill the page cache.
WRITEBACK_BYTES = 16 << 20
#: Redirects followed per request; each hop must stay inside ``data_url_prefixes``.
MAX_REDIRECTS = 5
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")


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


def install_log_filters() -> None:
    """Redact queries from urllib3's request-line and retry log records (once).

    Called when the extension starts, not on import: importing a module
    should not change how a library logs."""
    for name in ("urllib3.connectionpool", "urllib3.util.retry"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactQuery) for f in logger.filters):
            logger.addFilter(_RedactQuery())


# ---------------------------------------------------------------------------
# jobs


QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"


def partial_path(target: Path) -> Path:
    """The hidden file a download of ``target`` is written to until it is verified."""
    return target.with_name(f".{target.name}.part")


def partial_meta_path(target: Path) -> Path:
    """What the partial file of ``target`` was fetched for (URL, size, sha256, validator)."""
    return target.with_name(f".{target.name}.part.json")


@dataclass(eq=False)
class Job:
    """One download. Written by its worker thread, read by the event loop:
    plain attribute stores, which the GIL keeps whole."""

    id: str
    #: the data item of the token: name, URL, expected size and sha256 (one source)
    item: DataItem = field(repr=False)
    path: str  # api path of the final file
    target: Path
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
    def name(self) -> str:
        return self.item.name

    @property
    def url(self) -> str:
        assert self.item.url is not None
        return self.item.url

    @property
    def sha256(self) -> str | None:
        return self.item.sha256.lower() if self.item.sha256 else None

    @property
    def size(self) -> int | None:
        return self.item.size

    @property
    def partial(self) -> Path:
        return partial_path(self.target)

    @property
    def meta(self) -> Path:
        return partial_meta_path(self.target)

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


class JobFailed(Exception):
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


class Stopped(Exception):
    """The server is shutting down."""


def is_disk_full(error: OSError) -> bool:
    return error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def human_size(n: int | float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# ---------------------------------------------------------------------------
# the worker


class Downloader:
    """Runs jobs to their end in the calling worker thread (one per job at a time).

    ``verified`` is shared with the stager: ``path -> (inode, size, mtime, sha256)``
    of files already hashed, so an unchanged file is not hashed twice."""

    def __init__(
        self,
        *,
        url_prefixes: list[str],
        max_download_bytes: int,
        stopping: threading.Event,
        verified: dict[Path, tuple[int, int, int, str]],
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 1.0,
        log: logging.Logger | None = None,
    ) -> None:
        self.url_prefixes = list(url_prefixes)
        self.max_download_bytes = max_download_bytes
        self.timeout = (connect_timeout, read_timeout)
        self.retries = retries
        self.backoff = backoff
        self.log = log or logging.getLogger(__name__)
        self._stopping = stopping
        self._verified = verified
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def _verify_existing(self, job: Job) -> None:
        """Hash the file already at the item's place: ``done`` if it matches, else ``conflict``."""
        st = job.target.stat()
        job.bytes_total = st.st_size
        hasher = _sha256_prefix(job.target, None, self._stopping, progress=job)
        if hasher.hexdigest() != job.sha256:
            raise JobFailed(
                "conflict", f"A different file named {job.name} is already there; it is kept."
            )
        self._verified[job.target] = (st.st_ino, st.st_size, st.st_mtime_ns, job.sha256)

    def run(self, job: Job) -> None:
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
                raise JobFailed(
                    "conflict", f"A different file named {job.name} appeared; it is kept."
                )
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
                unlink(job.partial)
                hasher, hashed = None, -1
                attempt += 1
                if attempt > self.retries + 1:
                    raise JobFailed(
                        "download_failed", "The server keeps sending inconsistent ranges."
                    ) from None
                continue
            except _Retry as e:
                attempt += 1
                # the bytes written so far stay: the next attempt resumes after them
                hasher, hashed = None, -1
                if attempt > self.retries:
                    raise JobFailed(
                        "download_failed",
                        f"The download failed after {attempt} attempts ({e.what}); it resumes on the next open.",
                        keep_partial=True,
                    ) from None
                delay = min(self.backoff * 2 ** (attempt - 1), 30.0)
                self.log.info(
                    "lims-bridge: staging %s: %s; retrying in %.1f s", job.name, e.what, delay
                )
                if self._stopping.wait(delay):
                    raise Stopped() from None
        self._verify_and_place(job, hasher)

    def _check_stopping(self) -> None:
        if self._stopping.is_set():
            raise Stopped()

    def _resumable_offset(self, job: Job) -> tuple[int, str | None]:
        """Bytes of a partial file that may be resumed, and the ETag/Last-Modified it
        was fetched under; drops a partial file fetched for other data."""
        try:
            size = job.partial.stat().st_size
        except FileNotFoundError:
            unlink(job.meta)
            return 0, None
        try:
            meta = json.loads(job.meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = None
        if (
            not isinstance(meta, dict)
            or {k: meta.get(k) for k in ("url", "sha256", "size")} != job.identity()
        ):
            unlink(job.partial)
            unlink(job.meta)
            return 0, None
        limit = job.size if job.size is not None else self.max_download_bytes
        if size > limit:
            unlink(job.partial)
            unlink(job.meta)
            return 0, None
        validator = meta.get("validator")
        return size, validator if isinstance(validator, str) else None

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            # imported by the first download, not when the extension loads (~4 MiB RSS)
            import requests

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
        import requests

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
                raise JobFailed(
                    "download_failed", f"The request failed ({type(e).__name__})."
                ) from None
            if response.is_redirect:
                location = response.headers.get("Location", "")
                response.close()
                url = urljoin(url, location)
                if not url_allowed(url, self.url_prefixes):
                    raise JobFailed(
                        "url_not_allowed", "The server redirected to a URL that is not allowed."
                    )
                continue
            return response
        raise JobFailed("download_failed", "Too many redirects.")

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
                    raise JobFailed(
                        "download_failed", f"The server answered HTTP {status}: not found."
                    )
                raise JobFailed(
                    "download_failed", f"The server answered HTTP {status}.", keep_partial=True
                )
            length = _int_or_none(response.headers.get("Content-Length"))
            if response.headers.get("Content-Encoding", "identity").lower() != "identity":
                length = None  # the length of the encoded body, not of the file
            if status == 206:
                m = _CONTENT_RANGE_RE.match(response.headers.get("Content-Range", ""))
                if not offset or m is None or int(m.group(1)) != offset:
                    raise _Restart()
                total = (
                    int(m.group(3))
                    if m.group(3) != "*"
                    else (offset + length if length is not None else None)
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
                    raise JobFailed(
                        "too_large",
                        f"{job.name} is {human_size(total)}, more than the {human_size(self.max_download_bytes)} allowed.",
                    )
                if job.size is not None and total != job.size:
                    raise JobFailed(
                        "checksum_mismatch",
                        f"The server sent {total} bytes for {job.name}; the entry says {job.size}.",
                    )
                job.bytes_total = total
                free = shutil.disk_usage(job.target.parent).free
                if free < total - offset:
                    raise JobFailed(
                        "download_failed",
                        f"The disk is full: {job.name} needs {human_size(total - offset)}, "
                        f"only {human_size(free)} is free.",
                    )
            meta = {
                **job.identity(),
                "validator": response.headers.get("ETag") or response.headers.get("Last-Modified"),
            }
            if mode == "wb" or not job.meta.exists():
                _write_small(job.meta, json.dumps(meta))
            self._stream(job, response, offset, mode, hasher)
            return hasher

    def _stream(
        self, job: Job, response: requests.Response, offset: int, mode: str, hasher: Any
    ) -> None:
        """Copy the body into the partial file, hashing as it goes."""
        import requests

        limit = job.size if job.size is not None else self.max_download_bytes
        done = offset
        job.bytes_done = done
        window_t, window_b = time.monotonic(), done
        flushed = done
        writeback = getattr(os, "posix_fadvise", None)
        raw = response.raw
        # hashing runs beside the transfer in its own thread (hashlib releases the GIL)
        digest = _HashThread(hasher) if job.sha256 is not None else None
        fd = os.open(
            job.partial,
            os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "ab" else os.O_TRUNC),
            0o644,
        )
        try:
            while True:
                if self._stopping.is_set():
                    raise Stopped()
                try:
                    # read1: what has arrived, so a cut connection loses no received byte
                    chunk = raw.read1(CHUNK_SIZE, decode_content=True)
                except (requests.exceptions.ChunkedEncodingError, requests.ConnectionError):
                    raise _Retry("connection cut") from None
                except requests.Timeout:
                    raise _Retry("timed out") from None
                except Exception as e:  # urllib3's own errors: protocol, read timeout
                    if e.__class__.__module__.startswith(
                        ("urllib3", "http.client", "socket")
                    ) or isinstance(e, (ConnectionError, socket.timeout)):
                        raise _Retry("connection cut") from None
                    raise
                n = len(chunk)
                if not n:
                    break
                if done + n > limit:
                    if job.size is not None:
                        raise JobFailed(
                            "checksum_mismatch",
                            f"The server sent more than {job.size} bytes for {job.name}.",
                        )
                    raise JobFailed(
                        "too_large",
                        f"{job.name} is more than the {human_size(self.max_download_bytes)} allowed.",
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
            raise JobFailed(
                "checksum_mismatch", f"{job.name} has {size} bytes; the entry says {job.size}."
            )
        digest = hasher.hexdigest() if job.sha256 is not None else None
        if job.sha256 is not None and digest != job.sha256:
            raise JobFailed("checksum_mismatch", f"{job.name} does not match its sha256 checksum.")
        job.bytes_done = job.bytes_total = size
        _place(job.partial, job.target, job.name)
        unlink(job.meta)
        if digest is not None:
            try:
                st = job.target.stat()
                self._verified[job.target] = (st.st_ino, st.st_size, st.st_mtime_ns, digest)
            except OSError:
                pass

    def close(self) -> None:
        """Close every worker thread's HTTP session (the server is stopping)."""
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


def sha256_of(path: Path) -> str:
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
                raise Stopped()
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
        raise JobFailed(
            "conflict", f"A different file named {name} appeared; it is kept."
        ) from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # a filesystem without hard links: rename, after checking (a narrow race remains)
        if target.exists() or target.is_symlink():
            raise JobFailed(
                "conflict", f"A different file named {name} appeared; it is kept."
            ) from None
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


def unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def interrupt(response: Any) -> None:
    """Wake a worker blocked reading ``response`` (best effort, at shutdown)."""
    if response is None:
        return
    try:
        sock = response.raw._connection.sock  # urllib3 2.x
        sock.shutdown(socket.SHUT_RDWR)
    except Exception:
        pass
