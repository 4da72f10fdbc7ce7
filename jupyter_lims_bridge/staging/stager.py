"""The job registry: links, download jobs, their pool, events and shutdown.

Owns :class:`DataStager`, what the open use case and the staging API call:
``plan`` (checks only, :mod:`.plan`), ``apply`` (symlinks for mount items,
download jobs for URL items, answered at once), the jobs of this server (in
memory; the newest ``MAX_FINISHED_JOBS`` finished ones are kept), ``retry``,
the bounded pool of worker threads that run :class:`~.download.Downloader`,
the staging events (emitted on the event loop's thread) and shutdown.

Must not: block the event loop on a transfer or on hashing a big file, or log
a URL's query.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .. import events
from ..claims import DataItem
from ..errors import LimsError
from .download import (
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    Downloader,
    Job,
    JobFailed,
    Stopped,
    human_size,
    install_log_filters,
    interrupt,
    is_disk_full,
    partial_meta_path,
    partial_path,
    sha256_of,
    unlink,
)
from .plan import PlannedItem, Planner, safe_url

#: An existing file up to this size is hashed before ``apply`` answers; a bigger one
#: is checked by a job (``running`` while it is hashed), so an open answers at once.
INLINE_VERIFY_BYTES = 32 << 20
#: Finished jobs kept for ``GET lims/api/staging`` before the oldest are dropped.
MAX_FINISHED_JOBS = 500


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
        self.planner = Planner(
            mounts=mounts, url_prefixes=url_prefixes, max_download_bytes=max_download_bytes
        )
        self.max_concurrent = max(1, max_concurrent)
        self.event_logger = event_logger
        self.log = log or logging.getLogger(__name__)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._active: dict[Path, Job] = {}  # final path -> its queued/running job
        self._verified: dict[
            Path, tuple[int, int, int, str]
        ] = {}  # path -> (ino, size, mtime, sha)
        self._executor: ThreadPoolExecutor | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        # urllib3 logs request lines with their query (a signature): filtered from now on
        install_log_filters()
        self.downloader = Downloader(
            url_prefixes=url_prefixes,
            max_download_bytes=max_download_bytes,
            stopping=self._stopping,
            verified=self._verified,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries=retries,
            backoff=backoff,
            log=self.log,
        )

    @property
    def mounts(self) -> dict[str, Path]:
        return self.planner.mounts

    def plan(
        self, items: tuple[DataItem, ...], data_dir: Path, data_api_dir: str, root: Path
    ) -> list[PlannedItem]:
        """Check every item of an open; raise the first refusal. Writes nothing."""
        return self.planner.plan(items, data_dir, data_api_dir, root)

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
            unlink(partial_path(p.target))
            unlink(partial_meta_path(p.target))
            return {**result, "status": "done"}
        job = Job(
            id=secrets.token_urlsafe(9),
            item=p.item,
            path=p.api_path,
            target=p.target,
            bytes_total=p.item.size,
            verify_only=existing == "verify",
        )
        self._jobs[job.id] = job
        self._forget_old_jobs()
        if not self._submit(job):  # refused at once: the server is shutting down
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
        digest = await asyncio.to_thread(sha256_of, target)
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

    def _submit(self, job: Job) -> bool:
        """Hand ``job`` to a worker; False when refused (the server is stopping).

        (A worker may finish a quick job before this returns: its state is no
        sign of a refusal.)"""
        if self._stopping.is_set():
            job.state, job.reason = FAILED, "download_failed"
            job.message = "The server is shutting down."
            return False
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.max_concurrent, thread_name_prefix="lims-staging"
            )
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        with self._lock:
            self._active[job.target] = job
        self._executor.submit(self._run, job)
        return True

    def _forget_old_jobs(self) -> None:
        finished = [j for j in self._jobs.values() if not j.active]
        for job in finished[: max(0, len(finished) - MAX_FINISHED_JOBS)]:
            del self._jobs[job.id]

    # -- the worker thread -----------------------------------------------------

    def _run(self, job: Job) -> None:
        """Run ``job`` to its end in a worker thread; never raises."""
        import requests  # not before the first download (see download.py)

        job.state, job.started = RUNNING, time.monotonic()
        try:
            self.downloader.run(job)
        except JobFailed as e:
            self._finish_failed(job, e.reason, e.message, keep_partial=e.keep_partial)
        except Stopped:
            self._finish_failed(
                job,
                "download_failed",
                "The server stopped before the download finished; it resumes on the next open.",
                keep_partial=True,
            )
        except OSError as e:
            if is_disk_full(e):
                self._finish_failed(
                    job, "download_failed", f"The disk is full: {job.name} could not be stored."
                )
            else:
                self.log.warning(
                    "lims-bridge: staging %s: %s", job.name, e.strerror or type(e).__name__
                )
                self._finish_failed(
                    job,
                    "download_failed",
                    f"{job.name} could not be written ({e.strerror or 'I/O error'}).",
                )
        except requests.RequestException as e:
            # its text holds the URL (and so the query): only its type is logged
            self.log.warning("lims-bridge: staging %s failed: %s", job.name, type(e).__name__)
            self._finish_failed(
                job, "download_failed", f"The download failed ({type(e).__name__})."
            )
        except Exception:
            self.log.exception("lims-bridge: staging %s failed unexpectedly", job.name)
            self._finish_failed(job, "download_failed", "The download failed unexpectedly.")
        else:
            job.state, job.finished = DONE, time.monotonic()
            elapsed = max(job.finished - (job.started or job.finished), 1e-6)
            job.speed = job.bytes_fetched / elapsed
            if job.verify_only:  # the file was there already: nothing was staged
                return
            self.log.info(
                "lims-bridge: staged %s (%s) from %s",
                job.path,
                human_size(job.bytes_done),
                safe_url(job.url),
            )
            self._emit(
                "downloaded",
                job.name,
                job.path,
                url=job.url,
                job=job.id,
                bytes=job.bytes_done,
                bytesFetched=job.bytes_fetched,
                seconds=round(elapsed, 3),
            )
        finally:
            job._response = None
            with self._lock:
                if self._active.get(job.target) is job:
                    del self._active[job.target]

    def _finish_failed(
        self, job: Job, reason: str, message: str, *, keep_partial: bool = False
    ) -> None:
        if not keep_partial:
            unlink(job.partial)
            unlink(job.meta)
        job.state, job.reason, job.message, job.finished = FAILED, reason, message, time.monotonic()
        self.log.info(
            "lims-bridge: staging %s from %s failed: %s", job.path, safe_url(job.url), reason
        )
        action = "conflict" if reason == "conflict" else "failed"
        self._emit(action, job.name, job.path, url=job.url, job=job.id, reason=reason)

    # -- events ------------------------------------------------------------------

    def _emit(
        self, action: str, name: str, path: str, *, url: str | None = None, **data: Any
    ) -> None:
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
            interrupt(job._response)
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
            for job in self._jobs.values():
                if job.state == QUEUED:
                    job.state, job.reason = FAILED, "download_failed"
                    job.message = "The server stopped before the download started."
            # workers notice the flag within one chunk; a stuck read was interrupted above
            await asyncio.to_thread(executor.shutdown, wait=True)
        self.downloader.close()
