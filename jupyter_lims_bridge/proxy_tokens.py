"""Proxy tokens: creation, verification, revocation, and the failed-attempt limiter.

Owns ``<state_dir>/proxy_tokens.json`` (a :mod:`.statefile`: mode 0600, every
change made under its lock to the file's current content, so the server and
the ``tokens`` command never drop each other's changes): the
tokens' sha256 digests with their name, port scope, expiry and ``lastUsedAt``,
and the proxy mode the owner chose at run time. The file is read once and
kept in memory, so checking a token costs a dictionary lookup and a
constant-time compare, not a file read. A change made by another process (the
``jupyter lims-bridge tokens`` command) is noticed by a cheap ``stat`` at most
every half second (so a live session let in by a token it revoked is closed
within a second, see ``ProxyService.sweep``).

Must not: keep or log a plain token (it exists only in the answer to the
create call), or know anything about HTTP handlers. Emits the token events.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import events
from .errors import LimsError
from .proxy.service import MODES
from .statefile import read_json, update_private_json

log = logging.getLogger(__name__)

PREFIX = "jlb_"
#: 32 random bytes = 256 bits, the floor DESIGN.md sets.
TOKEN_BYTES = 32
FILE_NAME = "proxy_tokens.json"
# A plain token is "jlb_" + 43 url-safe characters; anything far off is refused
# before hashing so a huge header costs nothing.
_MAX_TOKEN_LENGTH = 256
# How long ``lastUsedAt`` may lag in the file: a use marks the store dirty and
# the write happens at most this often (and on shutdown).
LAST_USED_PERSIST_DELAY = 30.0
#: How often a token check may stat the file for another process's changes, seconds.
RELOAD_INTERVAL = 0.5


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class ProxyTokenStore:
    """The owner's proxy tokens, hashed at rest, checked in memory."""

    def __init__(
        self,
        path: Path,
        *,
        event_logger: Any = None,
        clock: Any = time.time,
    ) -> None:
        self.path = Path(path)
        self.event_logger = event_logger
        self.clock = clock
        self._by_digest: dict[str, dict[str, Any]] = {}
        #: the same records by id (live sessions are re-checked by token id)
        self._by_id: dict[str, dict[str, Any]] = {}
        self._mode: dict[str, str] | None = None
        self._file_sig: tuple[int, int] | None = None
        self._next_stat = 0.0
        self._dirty = False
        self._flush_handle: Any = None
        self._load()

    # -- persistence -------------------------------------------------------------

    def _stat_sig(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _load(self) -> None:
        sig = self._stat_sig()
        self._adopt(read_json(self.path) if sig is not None else {}, sig)

    def _adopt(self, data: dict[str, Any], sig: tuple[int, int] | None) -> None:
        """Hold the file's content ``data`` (as of ``sig``) in memory."""
        records: dict[str, dict[str, Any]] = {}
        tokens = data.get("tokens")
        for rec in tokens if isinstance(tokens, list) else []:
            if isinstance(rec, dict) and isinstance(rec.get("hash"), str):
                records[rec["hash"]] = rec
        # keep the fresher in-memory lastUsedAt of tokens that still exist
        for digest, rec in records.items():
            old = self._by_digest.get(digest)
            if old and (old.get("lastUsedAt") or 0) > (rec.get("lastUsedAt") or 0):
                rec["lastUsedAt"] = old["lastUsedAt"]
        self._by_digest = records
        self._by_id = {rec.get("id"): rec for rec in records.values()}
        mode = data.get("mode")
        self._mode = mode if isinstance(mode, dict) else None
        self._file_sig = sig

    def _maybe_reload(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_stat:
            return
        self._next_stat = now + RELOAD_INTERVAL
        if self._stat_sig() != self._file_sig:
            self._load()

    def _change(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Apply ``change`` to the file's current content under its lock, write it,
        and hold the result; a :class:`LimsError` from ``change`` writes nothing."""

        def apply(data: dict[str, Any]) -> bool:
            data["version"] = 1
            if not isinstance(data.get("tokens"), list):
                data["tokens"] = []
            change(data)
            # what this server knows and the file not yet: the newest lastUsedAt
            for rec in data["tokens"]:
                mine = self._by_digest.get(rec.get("hash")) if isinstance(rec, dict) else None
                if mine and (mine.get("lastUsedAt") or 0) > (rec.get("lastUsedAt") or 0):
                    rec["lastUsedAt"] = mine["lastUsedAt"]
            return True

        data = update_private_json(self.path, apply)
        self._dirty = False
        self._adopt(data, self._stat_sig())

    def flush(self) -> None:
        """Write a pending ``lastUsedAt`` now (called on shutdown)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._dirty:
            try:
                self._change(lambda data: None)
            except OSError as e:
                log.warning("lims-bridge: could not write %s: %s", self.path.name, e)

    def _mark_used(self, rec: dict[str, Any], now: float) -> None:
        rec["lastUsedAt"] = now
        if self._dirty:
            return
        self._dirty = True
        try:
            import asyncio

            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (the CLI): written by the next save or flush()
        self._flush_handle = loop.call_later(LAST_USED_PERSIST_DELAY, self.flush)

    # -- the owner's operations --------------------------------------------------

    def create(
        self,
        name: str,
        ports: Iterable[int] | None = None,
        expires_in: float | None = None,
        *,
        allowed_ports: frozenset[int] | None = None,
        services: Iterable[str] | None = None,
        allowed_services: frozenset[str] | None = None,
    ) -> dict[str, Any]:
        """Make a token; the answer is the only place its plain text ever appears.

        ``ports`` and ``services`` scope it (named services: proxy/services.py);
        a token with neither reaches every allowed port and service, one scoped
        to ports only reaches no service, and the other way round."""
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise LimsError("bad_request", "A token needs a name of 1 to 100 characters.")
        scope: list[int] | None = None
        if ports is not None:
            if not isinstance(ports, list) or not all(
                isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 65535 for p in ports
            ):
                raise LimsError("bad_request", "'ports' must be a list of port numbers.")
            if not ports:
                raise LimsError(
                    "bad_request", "'ports' lists no port; leave it out for all allowed ports."
                )
            if allowed_ports is not None and not set(ports) <= allowed_ports:
                raise LimsError(
                    "port_not_allowed", "A token can only be scoped to ports in allowed_ports."
                )
            scope = sorted(set(ports))
        names: list[str] | None = None
        if services is not None:
            if (
                not isinstance(services, list)
                or not services
                or not all(isinstance(n, str) for n in services)
            ):
                raise LimsError("bad_request", "'services' must be a list of service names.")
            if allowed_services is not None and not set(services) <= allowed_services:
                raise LimsError(
                    "service_not_allowed",
                    "A token can only be scoped to services in allowed_services.",
                )
            names = sorted(set(services))
        if expires_in is not None and (
            isinstance(expires_in, bool)
            or not isinstance(expires_in, (int, float))
            or not 0 < expires_in <= 10 * 365 * 86400
        ):
            raise LimsError("bad_request", "'expiresIn' must be a positive number of seconds.")
        now = self.clock()
        token = PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        rec = {
            "id": secrets.token_urlsafe(9),
            "hash": _digest(token),
            "name": name.strip(),
            "ports": scope,
            **({"services": names} if names is not None else {}),
            "createdAt": now,
            "expiresAt": now + expires_in if expires_in is not None else None,
            "lastUsedAt": None,
        }
        self._change(lambda data: data["tokens"].append(rec))
        events.emit(
            self.event_logger,
            events.PROXY_TOKENS,
            {
                "action": "created",
                "tokenId": rec["id"],
                "name": rec["name"],
                "ports": scope,
                "services": names,
            },
        )
        public = self._public(rec)
        del public["lastUsedAt"]  # DESIGN.md: the create answer has no lastUsedAt
        return {**public, "token": token}

    def list(self) -> list[dict[str, Any]]:
        self._maybe_reload(force=True)
        recs = sorted(self._by_digest.values(), key=lambda r: r["createdAt"])
        return [self._public(r) for r in recs]

    def revoke(self, token_id: str) -> None:
        revoked: list[dict[str, Any]] = []

        def remove(data: dict[str, Any]) -> None:
            kept = [
                r for r in data["tokens"] if not (isinstance(r, dict) and r.get("id") == token_id)
            ]
            if len(kept) == len(data["tokens"]):
                raise LimsError("not_found", "No proxy token has that id.")
            revoked.extend(r for r in data["tokens"] if r not in kept)
            data["tokens"] = kept

        self._change(remove)
        events.emit(
            self.event_logger,
            events.PROXY_TOKENS,
            {"action": "revoked", "tokenId": token_id, "name": revoked[0].get("name")},
        )

    @staticmethod
    def _public(rec: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": rec["id"],
            "name": rec["name"],
            "ports": rec.get("ports"),
            **({"services": rec["services"]} if rec.get("services") is not None else {}),
            "createdAt": _iso(rec.get("createdAt")),
            "expiresAt": _iso(rec.get("expiresAt")),
            "lastUsedAt": _iso(rec.get("lastUsedAt")),
        }

    # -- the proxy's check ---------------------------------------------------------

    def check(
        self, token: str | None, port: int | str, client: str | None = None, *, quiet: bool = False
    ) -> dict[str, Any]:
        """The record of a valid ``token`` for ``port`` (a port, or a named
        service's name), or a :class:`LimsError`.

        ``port_not_allowed`` here means outside the token's own scope; the
        caller checks ``allowed_ports`` afterwards, so only a valid token
        learns anything about ports. ``quiet``: a failure emits no event (the
        caller already knows this client is guessing).
        """
        if not token:
            raise LimsError("token_missing", "No proxy token was given (header X-Proxy-Token).")
        self._maybe_reload()
        rec = None
        if token.startswith(PREFIX) and len(token) <= _MAX_TOKEN_LENGTH:
            digest = _digest(token)
            # The dictionary lookup is keyed by a hash of the secret, so its
            # timing says nothing usable about the token; compare_digest makes
            # the final equality constant-time anyway.
            candidate = self._by_digest.get(digest)
            if candidate is not None and hmac.compare_digest(candidate["hash"], digest):
                rec = candidate
        if rec is None:
            if not quiet:
                self._failed("token_invalid", port, client)
            raise LimsError("token_invalid", "The proxy token is not valid.")
        now = self.clock()
        refusal = self._refusal(rec, port, now)
        if refusal == "token_expired":
            self._failed("token_expired", port, client, rec)
            raise LimsError("token_expired", "The proxy token has expired.")
        if refusal == "port_not_allowed":
            self._failed("port_not_allowed", port, client, rec)
            raise LimsError("port_not_allowed", "This proxy token is not valid for that port.")
        if refusal == "service_not_allowed":
            self._failed("service_not_allowed", port, client, rec)
            raise LimsError(
                "service_not_allowed", "This proxy token is not valid for that service."
            )
        self._mark_used(rec, now)
        return rec

    def still_valid(self, token_id: str, port: int | str) -> bool:
        """Whether the token with ``token_id`` still exists (not revoked, here or
        by another process) and is valid for ``port`` now: the rule of
        :meth:`check`, for a session that token let in earlier."""
        self._maybe_reload()
        rec = self._by_id.get(token_id)
        return rec is not None and self._refusal(rec, port, self.clock()) is None

    @staticmethod
    def _refusal(rec: dict[str, Any], port: int | str, now: float) -> str | None:
        expires = rec.get("expiresAt")
        if expires is not None and now >= expires:
            return "token_expired"
        ports, services = rec.get("ports"), rec.get("services")
        if isinstance(port, str):  # a named service
            covered = port in services if services is not None else ports is None
            return None if covered else "service_not_allowed"
        covered = port in ports if ports is not None else services is None
        return None if covered else "port_not_allowed"

    def _failed(
        self, reason: str, port: int | str, client: str | None, rec: dict[str, Any] | None = None
    ) -> None:
        events.emit(
            self.event_logger,
            events.PROXY_TOKENS,
            {
                "action": "use_failed",
                "reason": reason,
                "tokenId": rec.get("id") if rec else None,
                **({"service": port} if isinstance(port, str) else {"port": port}),
                "client": client,
            },
        )

    # -- the proxy mode chosen at run time ------------------------------------------

    def startup_mode(self, configured: str) -> str:
        """The mode to start in: the owner's last choice, unless the operator has
        changed ``proxy_mode`` since that choice was made (then the operator wins)."""
        saved = self._mode
        if saved and saved.get("configured") == configured and saved.get("mode") in MODES:
            return saved["mode"]
        return configured

    def save_mode(self, mode: str, configured: str) -> None:
        if mode not in MODES:
            raise LimsError("bad_request", f"'mode' must be one of {', '.join(MODES)}.")
        self._change(lambda data: data.update(mode={"mode": mode, "configured": configured}))


class AttemptLimiter:
    """Failed proxy-token attempts per client address in a sliding window.

    After ``max_failures`` failures within ``window`` seconds a client's
    further *wrong* tokens are answered ``too_many_attempts`` until the window
    has passed. A valid token is never held back (the caller asks
    :meth:`over_limit` and counts only failures): the address is whatever
    ``attempt_key`` believes, so a limit on good tokens would let anyone who
    can claim an address lock its real client out. What keeps tokens from
    being guessed is their 256 random bits; the limiter keeps guessing loops
    out of the events and answers them with 429.
    """

    def __init__(self, max_failures: int = 10, window: float = 60.0, max_clients: int = 10000):
        self.max_failures = max_failures
        self.window = window
        self.max_clients = max_clients
        self._failures: dict[str, list[float]] = {}

    def over_limit(self, client: str) -> bool:
        """Whether ``client`` has used up its failures for the window."""
        times = self._failures.get(client)
        if not times:
            return False
        now = time.monotonic()
        while times and times[0] <= now - self.window:
            times.pop(0)
        if not times:
            del self._failures[client]
            return False
        return len(times) >= self.max_failures

    def check(self, client: str) -> None:
        """``too_many_attempts`` when :meth:`over_limit`."""
        if self.over_limit(client):
            raise LimsError("too_many_attempts")

    def failed(self, client: str) -> None:
        if len(self._failures) >= self.max_clients and client not in self._failures:
            # bounded memory: forget the oldest client rather than grow forever
            self._failures.pop(next(iter(self._failures)))
        times = self._failures.setdefault(client, [])
        times.append(time.monotonic())
        del times[: -self.max_failures]
