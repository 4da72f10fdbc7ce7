"""Events to the LIMS: the bridge's events POSTed to a webhook, signed per Standard Webhooks.

Owns: the subscription to the bridge's own events on jupyter_server's event bus,
the payload ``{"type", "timestamp", "owner", "data"}``, the Standard Webhooks
signature, a bounded on-disk queue (an append-only journal in the state
directory, mode 0600, compacted by atomic rewrite; one per running server,
taken over when its server is gone), delivery (one event at a
time, in order, at least once, retried with exponential backoff and jitter), and
the proxy sessions that started but have not ended, so that a session cut by a
stop or a crash is reported ended at the next start.

Must not: block a request (a listener only appends a line to the journal; the
network is touched in one worker thread), change what the emitters emit, emit
on the bus itself, or let a secret out: the signing key is never logged, written
or put in an error, payloads carry only what the events carry (whose schemas
hold no token), and a key named like a credential is dropped all the same.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import fcntl
import hashlib
import hmac
import json
import logging
import os
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import events
from .statefile import write_private_text
from .urlrules import check_url, safe_url

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
MIN_KEY_BYTES = 24  # the Standard Webhooks recommendation (24-64 bytes)

#: webhook type -> schema id on the event bus.
SCHEMAS = {
    "open": events.OPEN,
    "staging": events.STAGING,
    "proxy_session": events.PROXY_SESSION,
    "proxy_tokens": events.PROXY_TOKENS,
    "save": events.SAVE,
}
TYPES = {schema_id: name for name, schema_id in SCHEMAS.items()}
DEFAULT_EVENTS = ["open", "save", "staging", "proxy_session"]

# Names that would hold a credential. No schema has one; this is the second
# lock, so that a future field named so never reaches a third party.
_CREDENTIAL_KEYS = frozenset(
    {"token", "lims_token", "grant", "secret", "password", "authorization", "cookie"}
)

JOURNAL = "webhook_queue.jsonl"
MAX_JOURNALS = 32  # servers running at once on one state directory


# -- configuration checks (used by the traits' validators) --------------------------


def parse_secret(text: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; ``ValueError`` says why not (never echoing it)."""
    if not text.startswith(SECRET_PREFIX):
        raise ValueError(
            "must be a Standard Webhooks secret 'whsec_<base64 key>' "
            "(e.g. 'whsec_' + base64 of 32 random bytes)"
        )
    encoded = text[len(SECRET_PREFIX) :].strip()
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64 after 'whsec_'") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"must hold at least {MIN_KEY_BYTES} bytes of key, not {len(key)} (32 is usual)"
        )
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``."""
    digest = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _iso(ts: float) -> str:
    return (
        datetime.fromtimestamp(ts, tz=timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


# -- the queue on disk ---------------------------------------------------------------


class WebhookJournal:
    """Pending messages and open proxy sessions, kept in memory and in an append-only file.

    Each change is one JSON line appended (``os.write`` on an ``O_APPEND`` fd, so a
    crash loses at most the line being written, which loading skips). No fsync per
    line: a killed process loses nothing the kernel has; a machine crash may lose the
    last lines. The file is rewritten atomically (temp file, fsync, rename) at start
    and whenever dead lines outnumber live ones.
    """

    def __init__(self, path: Path, max_size: int, lock_fd: int | None = None) -> None:
        self.path = path
        self.max_size = max_size
        self._lock_fd = lock_fd
        self.pending: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.sessions: dict[str, dict[str, Any]] = {}
        self.dropped = 0
        self._new_drops = 0
        self._lines = 0
        self._fd: int | None = None
        self._load()
        self._trim()
        self.compact()

    @classmethod
    def claim(cls, state_dir: Path, max_size: int) -> WebhookJournal:
        """The journal of this server, and the queues of servers that are gone.

        Servers may share a state directory (JupyterHub's named servers of one
        user, ``jupyter lab`` beside ``jupyter server``), so each running server
        holds its own journal under an exclusive ``flock`` (released by the kernel
        however the process ends). A journal nobody holds belonged to a server
        that stopped: its events and open sessions are taken over here.
        """
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        journal: WebhookJournal | None = None
        orphans: list[tuple[Path, int]] = []
        for n in range(MAX_JOURNALS):
            path = state_dir / (JOURNAL if n == 0 else f"webhook_queue.{n}.jsonl")
            if journal is not None and not path.exists():
                continue
            fd = _try_lock(path)
            if fd is None:
                continue  # a running server's
            if journal is None:
                journal = cls(path, max_size, lock_fd=fd)
            else:
                orphans.append((path, fd))
        if journal is None:
            raise RuntimeError(
                f"more than {MAX_JOURNALS} servers share the state directory "
                f"{state_dir}; give this one its own state_dir"
            )
        for path, fd in orphans:
            journal.adopt(cls(path, max_size=len(journal.pending) + max_size + 1, lock_fd=fd))
        return journal

    def adopt(self, other: WebhookJournal) -> None:
        """Take over the events and open sessions of a stopped server's journal, then delete it."""
        for session in other.sessions.values():
            self.open_session(session)
        for msg in other.pending.values():
            self._new_drops += self.add(msg)
        self.dropped += other.dropped
        self._append({"op": "dropped", "total": self.dropped})
        other.path.unlink(missing_ok=True)
        other.release()

    # -- loading

    def _load(self) -> None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return
        unreadable = 0
        for line in text.splitlines():
            try:
                entry = json.loads(line)
                self._apply(entry)
            except (ValueError, KeyError, TypeError):
                unreadable += 1
        if unreadable:
            # the last line of a crash, or a damaged file: keep what is readable
            log.warning(
                "lims-bridge: webhook queue: skipped %d unreadable line(s) of %s",
                unreadable,
                self.path.name,
            )

    def _apply(self, entry: dict[str, Any]) -> None:
        op = entry["op"]
        if op == "add":
            msg = entry["msg"]
            if not isinstance(msg.get("body"), str) or not isinstance(msg.get("id"), str):
                raise ValueError("bad message")
            self.pending[msg["id"]] = msg
        elif op in ("done", "drop"):
            if self.pending.pop(entry["id"], None) is not None and op == "drop":
                self.dropped += 1
        elif op == "dropped":
            self.dropped = int(entry["total"])
        elif op == "open":
            session = entry["session"]
            self.sessions[session["id"]] = session
        elif op == "close":
            self.sessions.pop(entry["id"], None)
        else:
            raise ValueError(op)

    def _trim(self) -> None:
        # the bound may have been lowered since these were queued
        while len(self.pending) > self.max_size:
            self.pending.popitem(last=False)
            self.dropped += 1
            self._new_drops += 1

    # -- writing

    def _append(self, entry: dict[str, Any]) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(self._fd, (json.dumps(entry, separators=(",", ":")) + "\n").encode())
        self._lines += 1
        if self._lines > 1000 + 2 * (len(self.pending) + len(self.sessions)):
            self.compact()

    def compact(self) -> None:
        """Rewrite the file with only what is live (atomic: temp file + rename)."""
        self.close()
        entries: list[dict[str, Any]] = [{"op": "dropped", "total": self.dropped}]
        entries += [{"op": "open", "session": s} for s in self.sessions.values()]
        entries += [{"op": "add", "msg": m} for m in self.pending.values()]
        text = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries)
        write_private_text(self.path, text)
        self._lines = len(entries)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def release(self) -> None:
        """Close the file and let another server take it over."""
        self.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- operations

    def add(self, msg: dict[str, Any]) -> int:
        """Queue ``msg``; returns how many of the oldest were dropped to make room."""
        dropped = 0
        while len(self.pending) >= self.max_size:
            oldest, _ = self.pending.popitem(last=False)
            self._append({"op": "drop", "id": oldest})
            self.dropped += 1
            dropped += 1
        self.pending[msg["id"]] = msg
        self._append({"op": "add", "msg": msg})
        return dropped

    def head(self) -> dict[str, Any] | None:
        return next(iter(self.pending.values()), None)

    def done(self, msg_id: str) -> None:
        # it may have been dropped while it was in flight
        if self.pending.pop(msg_id, None) is not None:
            self._append({"op": "done", "id": msg_id})

    def open_session(self, session: dict[str, Any]) -> None:
        self.sessions[session["id"]] = session
        self._append({"op": "open", "session": session})

    def close_session(self, session_id: str) -> None:
        if self.sessions.pop(session_id, None) is not None:
            self._append({"op": "close", "id": session_id})

    def take_new_drops(self) -> int:
        n, self._new_drops = self._new_drops, 0
        return n


def _try_lock(path: Path) -> int | None:
    """An fd holding the exclusive lock of ``path``'s lock file, or None if it is held."""
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


# -- the service -----------------------------------------------------------------------


class WebhookService:
    """Turns bus events into queued webhook messages and delivers them."""

    def __init__(
        self,
        *,
        url: str,
        secret: str,
        types: Iterable[str],
        owner: str,
        state_dir: Path,
        queue_size: int = 10_000,
        timeout: float = 10.0,
        retry_initial: float = 1.0,
        retry_max: float = 300.0,
        log: logging.Logger | logging.LoggerAdapter = log,
    ) -> None:
        self.url = check_url(url)
        self._key = parse_secret(secret)
        self.owner = owner
        self.timeout = timeout
        self.retry_initial = retry_initial
        self.retry_max = max(retry_max, retry_initial)
        self.log = log
        wanted = list(dict.fromkeys(types))
        unknown = [t for t in wanted if t not in SCHEMAS]
        if unknown:
            # a config written for a newer bridge must not stop this one loading
            self.log.warning(
                "lims-bridge: event_webhook_events: ignoring unknown type(s) %s; known: %s",
                ", ".join(unknown),
                ", ".join(SCHEMAS),
            )
        self.types = [t for t in wanted if t in SCHEMAS]
        self.journal = WebhookJournal.claim(Path(state_dir), queue_size)
        self.last_error: str | None = None
        self._failures = 0
        self._drop_warned_at = 0.0
        self._drops_unreported = self.journal.take_new_drops()
        self._listeners: list[tuple[Any, str, Any]] = []
        self._stopped = False
        self._wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        #: made by the first delivery (requests costs ~4 MiB RSS; not paid before)
        self._session: Any = None
        self._end_sessions_left_open()
        if self._drops_unreported:
            self._warn_dropped()

    # -- intake (on the event loop; must stay cheap)

    def attach(self, event_logger: Any) -> None:
        """Listen to the wanted event types on jupyter_server's event bus."""
        for name in self.types:
            event_logger.add_listener(schema_id=SCHEMAS[name], listener=self._on_event)
            self._listeners.append((event_logger, SCHEMAS[name], self._on_event))

    async def _on_event(self, logger: Any, schema_id: str, data: dict[str, Any]) -> None:
        name = TYPES.get(schema_id)
        if name is None or name not in self.types:
            return
        self.enqueue(name, data)
        if name == "proxy_session":
            self._track_session(data)
        if self._stopped:
            # emitted while the server stopped: on disk for the next start
            self.journal.close()
            return
        self.start()  # a server started without the start hook (pytest-jupyter) still delivers

    def enqueue(self, name: str, data: dict[str, Any], when: float | None = None) -> str:
        """Put one message in the queue (and on disk); returns its ``webhook-id``."""
        when = time.time() if when is None else when
        clean = {}
        for key, value in data.items():
            if key.lower() in _CREDENTIAL_KEYS:
                self.log.warning("lims-bridge: webhook: field %r of a %s event not sent", key, name)
                continue
            clean[key] = value
        payload = {"type": name, "timestamp": _iso(when), "owner": self.owner, "data": clean}
        msg = {
            "id": "msg_" + uuid.uuid4().hex,
            "type": name,
            "body": json.dumps(payload, separators=(",", ":"), ensure_ascii=False),
        }
        dropped = self.journal.add(msg)
        if dropped:
            self._drops_unreported += dropped
            self._warn_dropped()
        if self._wake is not None:
            self._wake.set()
        return msg["id"]

    def _warn_dropped(self) -> None:
        # at most one warning a minute, however fast events arrive
        now = time.monotonic()
        if self._drop_warned_at and now - self._drop_warned_at < 60.0:
            return
        if self._drops_unreported:
            self.log.warning(
                "lims-bridge: webhook queue full (%d events): dropped the %d oldest "
                "(%d dropped in all)",
                self.journal.max_size,
                self._drops_unreported,
                self.journal.dropped,
            )
            self._drop_warned_at = now
            self._drops_unreported = 0

    def _track_session(self, data: dict[str, Any]) -> None:
        key = (data.get("port"), data.get("path"), data.get("via"))
        session_id = data.get("session")  # sent by the emitter since proxy2; older journals lack it
        if data.get("action") == "started":
            self.journal.open_session(
                {
                    "id": str(session_id or uuid.uuid4().hex),
                    "port": key[0],
                    "path": key[1],
                    "via": key[2],
                    "startedAt": time.time(),
                }
            )
        elif data.get("action") == "ended":
            if session_id is not None and str(session_id) in self.journal.sessions:
                self.journal.close_session(str(session_id))
                return
            # An event without a session id (an older emitter): of the open sessions with the same
            # port, path and way in, the one that started closest to now - duration.
            began = time.time() - float(data.get("durationSeconds") or 0)
            candidates = [
                s for s in self.journal.sessions.values() if (s["port"], s["path"], s["via"]) == key
            ]
            if candidates:
                best = min(candidates, key=lambda s: abs(s["startedAt"] - began))
                self.journal.close_session(best["id"])

    def _end_sessions_left_open(self) -> None:
        """Report ``ended`` for each session the previous run started and never ended."""
        for session in list(self.journal.sessions.values()):
            if "proxy_session" in self.types:
                data = {
                    "action": "ended",
                    "session": session["id"],
                    "port": session["port"],
                    "path": session["path"],
                    "via": session["via"],
                    "reason": "server_stopped",
                    "startedAt": _iso(session["startedAt"]),
                }
                self.enqueue("proxy_session", {k: v for k, v in data.items() if v is not None})
            self.journal.close_session(session["id"])

    # -- delivery (one at a time, in order)

    def start(self) -> None:
        """Start delivering (idempotent; needs the running event loop)."""
        if self._task is not None or self._stopped:
            return
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lims-webhook")
        self._task = asyncio.get_running_loop().create_task(self._deliver_forever())

    async def _deliver_forever(self) -> None:
        assert self._wake is not None and self._stopping is not None
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            msg = self.journal.head()
            if msg is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                ok, error = await loop.run_in_executor(self._executor, self._post, msg)
                if ok:
                    self.journal.done(msg["id"])
            except Exception:
                self.log.exception("lims-bridge: webhook delivery")
                ok, error = False, "internal error"
            if ok:
                if self._failures:
                    self.log.info(
                        "lims-bridge: webhook delivered again after %d failed attempt(s)",
                        self._failures,
                    )
                self._failures = 0
                self.last_error = None
                continue
            self._failures += 1
            self.last_error = error
            delay = self.backoff(self._failures)
            if self._failures == 1:
                self.log.warning(
                    "lims-bridge: webhook to %s failed (%s); retrying with backoff",
                    safe_url(self.url),
                    error,
                )
            else:
                self.log.debug(
                    "lims-bridge: webhook attempt %d failed (%s); next in %.1f s",
                    self._failures,
                    error,
                    delay,
                )
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
            except asyncio.TimeoutError:
                pass

    def backoff(self, failures: int) -> float:
        """Seconds before the next attempt: doubling from ``retry_initial`` up to
        ``retry_max``, then "equal jitter" (a random half of it) so many servers cut
        off by the same LIMS outage do not all come back at once."""
        delay = min(self.retry_max, self.retry_initial * 2 ** min(failures - 1, 30))
        return delay / 2 + random.uniform(0, delay / 2)

    def _http(self) -> Any:
        import requests

        if self._session is None:
            session = requests.Session()
            # no urllib3 retries and no redirects: a failure is ours to retry, and a
            # signed body is not sent to wherever a redirect points
            session.mount("http://", requests.adapters.HTTPAdapter(max_retries=0))
            session.mount("https://", requests.adapters.HTTPAdapter(max_retries=0))
            self._session = session
        return self._session

    def _post(self, msg: dict[str, Any]) -> tuple[bool, str | None]:
        """One attempt (in the worker thread). Re-signed each time: receivers
        reject a ``webhook-timestamp`` older than a few minutes."""
        import requests

        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": msg["id"],
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._key, msg["id"], timestamp, msg["body"]),
            "User-Agent": "jupyter-lims-bridge-webhook",
        }
        try:
            response = self._http().post(
                self.url,
                data=msg["body"].encode(),
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
            )
            response.close()
        except requests.Timeout:
            return False, "timeout"
        except requests.ConnectionError:
            return False, "connection failed"
        except requests.RequestException as e:
            # the exception's text may hold the URL (and whatever it carries)
            return False, type(e).__name__
        if 200 <= response.status_code < 300:
            return True, None
        return False, f"HTTP {response.status_code}"

    async def stop(self) -> None:
        """Stop listening and delivering; what is queued stays on disk for the next start."""
        self._stopped = True
        for event_logger, schema_id, listener in self._listeners:
            try:
                event_logger.remove_listener(schema_id=schema_id, listener=listener)
            except Exception:
                pass
        self._listeners.clear()
        if self._task is not None:
            assert self._stopping is not None and self._wake is not None
            self._stopping.set()
            self._wake.set()
            try:
                # an attempt in flight ends within the timeout; it is not waited for
                # longer: the message stays queued and is sent again next time
                await asyncio.wait_for(asyncio.shield(self._task), 1.0)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._task.cancel()
            self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        if self._session is not None:
            self._session.close()
        self.journal.release()

    def status(self) -> dict[str, Any]:
        """``webhook`` in ``GET lims/api/status``."""
        return {
            "queued": len(self.journal.pending),
            "dropped": self.journal.dropped,
            "lastError": self.last_error,
        }
