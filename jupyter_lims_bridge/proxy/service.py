"""The port proxy as a service: what a proxied request needs to know, and what
lives longer than one request.

Owns: the proxy mode (``MODES``; the one place it is held at run time, saved
through the token store so the owner's choice survives a restart), the
allowed ports, CORS origins and the other settings as plain attributes (a
request reads no traitlets); the token store and the failed-attempt limiter
the access decision uses; the upstream pool; the registry of live sessions
(websockets, streamed bodies) with the sweeper that closes those whose client
is no longer admitted; the websocket session (tunnel + events) and the
``proxy_session`` events, each with a ``session`` id and the bytes relayed.

Must not: decide who may pass (access.py makes that one decision, for new
requests and for the sweeper), touch tornado handlers, or put a token in a
log line or an event.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timezone
from typing import Any

from tornado import httputil
from tornado.iostream import IOStream

from .. import events
from ..errors import LimsError
from ..urls import url_for
from .headers import BadFraming, format_head
from .services import ServiceUnavailable
from .tunnel import Tunnel
from .upstream import BackendUnavailable, Route, UpstreamExchange, UpstreamPool, open_exchange

log = logging.getLogger(__name__)

#: Who may use the proxy: the owner's session or a proxy token; anyone; nobody.
MODES = ("token", "open", "disabled")

#: How often live sessions are re-checked while any exist, seconds.
SWEEP_PERIOD = 0.25


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class LiveSession:
    """A websocket tunnel or a streamed HTTP body in progress, and how its
    client got in: ``via`` ``"session"``, ``"token"`` (with ``token_id``) or
    ``"open"``. ``close`` ends it at once (a websocket with 1008)."""

    __slots__ = ("close", "kind", "port", "token_id", "via")

    def __init__(
        self, port: int | str, via: str, token_id: str | None, kind: str, close: Callable[[], None]
    ) -> None:
        #: what the client asked for: a port, or a named service
        self.port = port
        self.via = via
        self.token_id = token_id
        self.kind = kind
        self.close = close


class SessionStart:
    """What ``session_started`` hands back for ``session_ended``: the session's
    id (stable for the session; the webhook pairs start and end by it) and
    when it started."""

    __slots__ = ("at", "id")

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex
        self.at = time.monotonic()


class ProxyService:
    """What a proxied request needs to know, read once per request without
    traitlets; the mode; and the live sessions (websockets, streamed bodies),
    which are closed as soon as their client would no longer be let in."""

    def __init__(
        self,
        *,
        mode: str,
        ports: frozenset[int],
        cors_origins: Iterable[str],
        websocket_max_message_size: int,
        event_logger: Any = None,
        trust_xheaders: bool = False,
        jupyter_cookies: Iterable[str] = (),
        tokens: Any = None,
        attempts: Any = None,
        services: Any = None,
    ) -> None:
        #: the operator's configured mode; the owner's saved choice wins until it changes
        self.configured_mode = mode
        self._mode = tokens.startup_mode(mode) if tokens is not None else mode
        self.ports = ports
        self.cors_origins = frozenset(cors_origins)
        self.websocket_max_message_size = websocket_max_message_size
        self.event_logger = event_logger
        #: whether a front proxy's X-Forwarded-For is believed (headers.attempt_key)
        self.trust_xheaders = trust_xheaders
        #: cookie names of this server's Jupyter login besides the usual ones
        self.jupyter_cookies = frozenset(jupyter_cookies)
        #: the proxy token store (proxy_tokens.ProxyTokenStore) and attempt limiter
        self.tokens = tokens
        self.attempts = attempts
        #: the named services (services.NamedServices), if any are allowed
        self.services = services
        self.pool = UpstreamPool()
        #: Host header -> result of Jupyter's check_host (the handlers fill it)
        self.host_checks: dict[str, bool] = {}
        self._activity_next = 0.0
        #: websockets and streamed bodies in progress
        self.sessions: set[LiveSession] = set()
        #: the access decision re-made for a live session (access.Access.still_admitted,
        #: wired by the app); ``None``: nothing is re-checked
        self.admits: Callable[[LiveSession], Awaitable[bool]] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    # -- the mode ---------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    def set_mode(self, mode: str) -> None:
        """The owner's run-time choice, kept across restarts (until the operator
        changes the configured mode); live sessions it no longer admits end now."""
        if mode not in MODES:
            raise LimsError("bad_request", "'mode' must be one of token, open, disabled.")
        if self.tokens is not None:
            self.tokens.save_mode(mode, self.configured_mode)
        self._mode = mode
        if self.sessions and self.admits is not None:
            try:
                asyncio.get_running_loop().create_task(self.sweep())
            except RuntimeError:  # no loop, so no live session either
                pass

    def allows(self, target: int | str) -> bool:
        """Whether ``target`` (a port, or a named service) may be reached at all."""
        if isinstance(target, str):
            return self.services is not None and target in self.services.allowed
        return target in self.ports

    async def connect(
        self,
        request: httputil.HTTPServerRequest,
        port_text: str,
        target: int | str,
        caller: Any,
        client: str,
        *,
        base_url: str,
        absolute: bool,
        websocket: bool = False,
    ) -> tuple[Route, UpstreamExchange]:
        """For a request let in (``caller``, access.Access.admit): its route, and
        the upstream exchange with the request head written. A
        :class:`LimsError` when the backend cannot be reached or started, or the
        request's body framing is refused (before anything reached the backend)."""
        prefix = url_for("proxy_absolute" if absolute else "proxy", base_url, port=port_text)
        try:  # a named service is launched on its first request (services.py)
            port, service_name = await self.resolve(target)
        except ServiceUnavailable:
            raise LimsError("backend_unavailable", "The service could not be started.") from None
        route = Route(port, prefix, absolute, caller, service_name)
        try:
            exchange = await open_exchange(request, self, route, websocket=websocket, client=client)
        except BadFraming as e:
            raise LimsError("bad_request", str(e)) from None
        except BackendUnavailable:
            raise LimsError("backend_unavailable") from None
        return route, exchange

    async def resolve(self, target: int | str) -> tuple[int, str | None]:
        """The port to relay to, and the named service it belongs to; a service
        not running yet is launched (services.ServiceUnavailable if it cannot be)."""
        if isinstance(target, int):
            return target, None
        return await self.services.port_of(target), target

    def host_allowed(self, host: str, check_host: Callable[[], bool]) -> bool:
        """Jupyter's DNS-rebinding guard (``check_host``), remembered per Host
        value: it parses an address and stats a path, a visible cost on small
        requests."""
        allowed = self.host_checks.get(host)
        if allowed is None:
            allowed = bool(check_host())
            if len(self.host_checks) < 256:
                self.host_checks[host] = allowed
        return allowed

    def touch_activity(self, settings: dict[str, Any]) -> None:
        """Count proxied traffic as server activity for JupyterHub's idle culler.

        jupyter_server's ``last_activity()`` takes the newest of every
        ``*_last_activity`` setting; updated at most once a second.
        """
        now = time.monotonic()
        if now >= self._activity_next:
            self._activity_next = now + 1.0
            settings["api_last_activity"] = utcnow()

    # -- live sessions: closed once no longer admitted ------------------------------

    def session_opened(
        self, port: int, via: str, token_id: str | None, kind: str, close: Callable[[], None]
    ) -> LiveSession:
        """Register a live session; the sweeper runs while any exist."""
        session = LiveSession(port, via, token_id, kind, close)
        self.sessions.add(session)
        if self.admits is not None and (self._sweeper is None or self._sweeper.done()):
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_while_live())
        return session

    def session_closed(self, session: LiveSession | None) -> None:
        if session is not None:
            self.sessions.discard(session)

    async def sweep(self) -> int:
        """Close every live session whose client would no longer be let in (its
        token revoked or expired, the mode changed); how many were closed."""
        admits = self.admits
        if admits is None or not self.sessions:
            return 0
        refused = [s for s in list(self.sessions) if not await admits(s)]
        for session in refused:
            self.sessions.discard(session)
            log.info(
                "lims-bridge: proxy: closing a %s on port %s: no longer admitted (via %s)",
                session.kind,
                session.port,
                session.via,
            )
            try:
                session.close()
            except Exception:  # one failed close must not spare the others
                log.exception("lims-bridge: proxy: closing a live %s failed", session.kind)
        return len(refused)

    async def _sweep_while_live(self) -> None:
        # a single cheap task, alive only while sessions exist: a revocation by
        # the API or the CLI, an expiry, a mode change end them within a second
        while self.sessions:
            await asyncio.sleep(SWEEP_PERIOD)
            try:
                await self.sweep()
            except Exception:
                log.exception("lims-bridge: proxy: re-checking live sessions failed")

    # -- websocket sessions (the service emits, not the handler) --------------------

    async def relay_websocket(
        self,
        client: IOStream,
        backend: IOStream,
        start: httputil.ResponseStartLine,
        upstream_headers: httputil.HTTPHeaders,
        route: Route,
        *,
        path: str,
        on_activity: Callable[[], None],
    ) -> None:
        """The backend accepted the upgrade (``start``, its 101): answer the
        client and relay frames both ways until either end leaves; a live
        session with its start and end events."""
        headers = route.response_headers(upstream_headers, self, None)
        headers["Upgrade"], headers["Connection"] = "websocket", "Upgrade"
        answer = format_head(f"HTTP/1.1 101 {start.reason or 'Switching Protocols'}", headers)
        port, via, token_id = route.port, route.caller.via, route.caller.token_id
        subprotocol = upstream_headers.get("Sec-WebSocket-Protocol")
        started = self.session_started(port, path, via, subprotocol, service=route.service)
        tunnel = Tunnel(
            client,
            backend,
            answer,
            max_message_size=self.websocket_max_message_size,
            on_activity=on_activity,
        )
        live = self.session_opened(route.target, via, token_id, "websocket", tunnel.close_policy)
        try:
            await tunnel.run()  # closes both ends, whatever happens
        except Exception:  # the handler is detached: no error page can go out, only a log line
            log.exception("lims-bridge: proxy: websocket tunnel to port %s failed", port)
        finally:
            self.session_closed(live)
            self.session_ended(
                port,
                path,
                via,
                started,
                tunnel.messages,
                tunnel.close_code,
                bytes_up=tunnel.bytes_up,
                bytes_down=tunnel.bytes_down,
                service=route.service,
            )

    def session_started(
        self, port: int, path: str, via: str, subprotocol: str | None, service: str | None = None
    ) -> SessionStart:
        started = SessionStart()
        events.emit(
            self.event_logger,
            events.PROXY_SESSION,
            {
                "action": "started",
                "session": started.id,
                "service": service,
                "port": port,
                "path": path,
                "via": via,
                "subprotocol": subprotocol,
            },
        )
        return started

    def session_ended(
        self,
        port: int,
        path: str,
        via: str,
        started: SessionStart,
        messages: int,
        close_code: int | None,
        *,
        bytes_up: int = 0,
        bytes_down: int = 0,
        service: str | None = None,
    ) -> None:
        events.emit(
            self.event_logger,
            events.PROXY_SESSION,
            {
                "action": "ended",
                "session": started.id,
                "service": service,
                "port": port,
                "path": path,
                "via": via,
                "durationSeconds": round(time.monotonic() - started.at, 3),
                "messages": messages,
                "bytesUp": bytes_up,
                "bytesDown": bytes_down,
                "closeCode": close_code,
            },
        )

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.pool.close()
        if self.services is not None:
            await self.services.close()


__all__ = ["MODES", "SWEEP_PERIOD", "LiveSession", "ProxyService", "SessionStart"]
