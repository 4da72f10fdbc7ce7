"""Streaming HTTP/1.1 relay to services on ``127.0.0.1:<port>``.

Owns: the pool of keep-alive upstream connections (kept apart per caller,
reused only between two messages); the request head written
from the parsed request; the response head parsed; bodies relayed stream to
stream in 256 KiB pieces read into reusable buffers, with backpressure both
ways; header hygiene (hop-by-hop, Jupyter cookies, the proxy token, forwarded
headers set from our own view of the request, ``Location``) and Jupyter's
credentials dropped from the query; the client's body framing, checked
before anything goes upstream; the websocket handshake's headers (the frames
after it are tunnel.py's); the proxy session events;
the proxy's live settings (mode, ports, CORS origins) as plain attributes
so a request reads no traitlets; and the registry of live sessions
(websockets, streamed bodies) with the sweeper that closes those whose client
is no longer admitted (the decision itself is the handlers').

Must not: authenticate anyone (handlers/proxy.py and proxy_tokens.py do),
hold a body in memory, or connect anywhere but 127.0.0.1.

Tornado internals: with tornado 6.5/6.6 (tested) the response head is handed
to tornado as a prepared ``HTTPHeaders`` and chunked framing from the backend
is passed through untouched (``HTTP1Connection._chunking_output``). With any
other version the plain path de-chunks and lets tornado re-chunk.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote_plus, urlsplit

import tornado
from tornado import httputil
from tornado.iostream import IOStream, StreamClosedError

from . import events

log = logging.getLogger(__name__)

#: Tornado minor versions whose internals the fast path was tested against.
FAST_PATH = tornado.version_info[:2] in {(6, 5), (6, 6)}

CHUNK = 256 * 1024
HEAD_LIMIT = 64 * 1024
UPLOAD_HIGH_WATER = 1024 * 1024
SMALL_BODY = 64 * 1024

# RFC 9110 7.6.1 plus the legacy ones still seen in the wild.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
TOKEN_HEADER = "X-Proxy-Token"
# Never forwarded upstream, whatever the auth mode. ``Expect`` because tornado
# has already answered ``100-continue`` to the client; ``Host`` is rewritten.
_DROP_REQUEST = HOP_BY_HOP | {
    "x-proxy-token",
    "expect",
    "host",
    "cookie",
    "x-xsrftoken",
    "x-csrftoken",
}
# Set from the request as this server sees it; a client's own values never pass
# (X-Scheme: tornado-style backends take it for X-Forwarded-Proto).
_FORWARDING = frozenset(
    {
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "forwarded",
        "x-real-ip",
        "x-scheme",
    }
)
_DROP_RESPONSE = HOP_BY_HOP | {"content-length"}
_CORS_PREFIX = "access-control-"
_NO_BODY_STATUS = frozenset({204, 304})


def is_jupyter_cookie(name: str, extra: frozenset[str] = frozenset()) -> bool:
    """Cookies that carry the user's Jupyter or JupyterHub credentials; ``extra``
    names the ones an operator configured (``IdentityProvider.cookie_name``)."""
    name = name.strip()
    return name == "_xsrf" or name.startswith(("username-", "jupyterhub-")) or name in extra


def strip_jupyter_cookies(header: str, extra: frozenset[str] = frozenset()) -> str:
    """A ``Cookie`` header without the Jupyter/JupyterHub cookies (others pass)."""
    kept = [
        part.strip()
        for part in header.split(";")
        if part.strip() and not is_jupyter_cookie(part.split("=", 1)[0], extra)
    ]
    return "; ".join(kept)


def peer_address(request: httputil.HTTPServerRequest) -> str | None:
    """The TCP peer's address (whatever headers say)."""
    address = getattr(getattr(request.connection, "context", None), "address", None)
    if isinstance(address, tuple) and address:
        return str(address[0])
    return None


def attempt_key(request: httputil.HTTPServerRequest, *, trust_xheaders: bool) -> str:
    """The client address failed proxy-token attempts are counted under (and
    the ``X-Real-Ip``/``Forwarded: for=`` the backend is told).

    The TCP peer; behind a front proxy (``ServerApp.trust_xheaders``, which
    JupyterHub's single-user server sets) the last ``X-Forwarded-For`` entry,
    the one that proxy appended. Never ``X-Real-Ip``, which tornado would
    prefer: configurable-http-proxy passes a client's own value through, so a
    client could pick a new address for every guess.

    Trust assumption: ``trust_xheaders`` is on only when every request comes
    through a front proxy that appends the real peer to ``X-Forwarded-For``.
    Without one, the client writes that entry itself and may claim any address.
    """
    if trust_xheaders:
        forwarded = request.headers.get("X-Forwarded-For", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last
    return peer_address(request) or request.remote_ip or "?"


def drop_query_params(query: str, names: frozenset[str]) -> str:
    """``query`` without the parameters whose *decoded* name is in ``names``.

    Names are compared as the server decodes them (``%74oken`` and ``%5fxsrf``
    are ``token`` and ``_xsrf`` to Jupyter as to most backends), every
    occurrence; the parameters kept are passed on byte for byte as sent.
    """
    if not query:
        return query
    parts = query.split("&")
    kept = [p for p in parts if unquote_plus(p.split("=", 1)[0]) not in names]
    return query if len(kept) == len(parts) else "&".join(kept)


_DIGITS = re.compile(r"[0-9]{1,18}")


class BadFraming(ValueError):
    """The request's body framing is ambiguous; it must not reach a backend."""


def request_body_framing(headers: httputil.HTTPHeaders) -> str:
    """``none``, ``length`` or ``chunked`` for a client's request body.

    Checked before the request head goes anywhere, strictly, so that no
    backend parser (however lenient) can read a different body length than
    we relay: one ``Content-Length`` of digits only; ``Transfer-Encoding``
    only as a single ``chunked``; never both. Anything else raises
    :class:`BadFraming`. tornado refuses most of these itself, but only after
    the handler's ``prepare`` (which contacts the backend) has run, and it
    accepts repeated equal lengths (``5, 5``) that it then merges.
    """
    lengths = headers.get_list("Content-Length")
    encodings = headers.get_list("Transfer-Encoding")
    if lengths and encodings:
        raise BadFraming("both Content-Length and Transfer-Encoding")
    if encodings:
        if len(encodings) != 1 or encodings[0].strip().lower() != "chunked":
            raise BadFraming("Transfer-Encoding other than a single 'chunked'")
        return "chunked"
    if lengths:
        if len(lengths) != 1 or not _DIGITS.fullmatch(lengths[0].strip()):
            raise BadFraming("Content-Length must be one number")
        return "length" if int(lengths[0]) else "none"
    return "none"


def _connection_tokens(headers: httputil.HTTPHeaders) -> set[str]:
    named: set[str] = set()
    for value in headers.get_list("Connection"):
        named.update(t.strip().lower() for t in value.split(",") if t.strip())
    return named


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


#: How often live sessions are re-checked while any exist, seconds.
SWEEP_PERIOD = 0.25


class LiveSession:
    """A websocket tunnel or a streamed HTTP body in progress, and how its
    client got in: ``via`` ``"session"``, ``"token"`` (with ``token_id``) or
    ``"open"``. ``close`` ends it at once (a websocket with 1008)."""

    __slots__ = ("close", "kind", "port", "token_id", "via")

    def __init__(
        self, port: int, via: str, token_id: str | None, kind: str, close: Callable[[], None]
    ) -> None:
        self.port = port
        self.via = via
        self.token_id = token_id
        self.kind = kind
        self.close = close


class ProxySettings:
    """What a proxied request needs to know, read once per request without
    traitlets; and the live sessions (websockets, streamed bodies), which are
    closed as soon as their client would no longer be let in."""

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
    ) -> None:
        self.mode = mode
        self.ports = ports
        self.cors_origins = frozenset(cors_origins)
        self.websocket_max_message_size = websocket_max_message_size
        self.event_logger = event_logger
        #: whether a front proxy's X-Forwarded-For is believed (attempt_key)
        self.trust_xheaders = trust_xheaders
        #: cookie names of this server's Jupyter login besides the usual ones
        self.jupyter_cookies = frozenset(jupyter_cookies)
        self.pool = UpstreamPool()
        #: Host header -> result of Jupyter's check_host (the handlers fill it)
        self.host_checks: dict[str, bool] = {}
        self._activity_next = 0.0
        #: websockets and streamed bodies in progress
        self.sessions: set[LiveSession] = set()
        #: the admission decision re-made for a live session (the handlers'
        #: ``still_admitted``, wired by the app); ``None``: nothing is re-checked
        self.admits: Callable[[LiveSession], bool] | None = None
        self._sweeper: asyncio.Task[None] | None = None

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

    def sweep(self) -> int:
        """Close every live session whose client would no longer be let in (its
        token revoked or expired, the mode changed); how many were closed."""
        admits = self.admits
        if admits is None or not self.sessions:
            return 0
        refused = [s for s in list(self.sessions) if not admits(s)]
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
                self.sweep()
            except Exception:
                log.exception("lims-bridge: proxy: re-checking live sessions failed")

    # -- websocket sessions (the manager emits, not the handler) -------------------

    def session_started(self, port: int, path: str, via: str, subprotocol: str | None) -> float:
        events.emit(
            self.event_logger,
            events.PROXY_SESSION,
            {
                "action": "started",
                "port": port,
                "path": path,
                "via": via,
                "subprotocol": subprotocol,
            },
        )
        return time.monotonic()

    def session_ended(
        self, port: int, path: str, via: str, started: float, messages: int, close_code: int | None
    ) -> None:
        events.emit(
            self.event_logger,
            events.PROXY_SESSION,
            {
                "action": "ended",
                "port": port,
                "path": path,
                "via": via,
                "durationSeconds": round(time.monotonic() - started, 3),
                "messages": messages,
                "closeCode": close_code,
            },
        )

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.pool.close()


class BackendUnavailable(Exception):
    """The backend refused or dropped the connection before answering."""


class UpstreamPool:
    """Idle keep-alive connections to 127.0.0.1, kept apart per ``(port, caller)``,
    newest first; and the relay buffers, reused across requests (allocating
    2 x 256 KiB per request would cost more than a small request itself).

    ``caller`` is who was let in: ``"session"`` (the owner's Jupyter session),
    ``"token:<id>"`` (one proxy token) or ``"open"`` (mode ``open``). A
    connection is pooled only for the caller whose exchange it carried, so even
    a backend that loses track of message boundaries (reads no body on a GET,
    sends one after a HEAD) can hand that caller's bytes to nobody else. And a
    connection is pooled only when its exchange ended exactly at a message
    boundary: nothing in tornado's read buffer, no read or write pending; it
    is reused only if that still holds and the socket has nothing unread.
    """

    def __init__(
        self, max_idle_per_port: int = 64, idle_timeout: float = 60.0, max_idle: int = 256
    ) -> None:
        self.max_idle_per_port = max_idle_per_port
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self._idle: dict[tuple[int, str], list[tuple[IOStream, float]]] = {}
        self._idle_count = 0
        self._next_prune = 0.0
        self._buffers: list[tuple[memoryview, memoryview]] = []
        #: connections opened so far (the benchmark reports connects per request)
        self.connects = 0

    async def acquire(self, port: int, caller: str) -> tuple[IOStream, bool]:
        """A connected stream for ``caller`` and whether it was reused from the pool."""
        idle = self._idle.get((port, caller))
        now = time.monotonic()
        while idle:
            stream, since = idle.pop()
            self._idle_count -= 1
            # one non-blocking peek per reuse (a few microseconds): it sees the
            # backend's FIN and any byte that arrived after the exchange ended
            if now - since < self.idle_timeout and _quiescent(stream) and _alive(stream):
                return stream, True
            stream.close()
        return await self._connect(port), False

    async def _connect(self, port: int) -> IOStream:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream = IOStream(sock, read_chunk_size=CHUNK, max_buffer_size=4 * CHUNK + HEAD_LIMIT)
        self.connects += 1
        try:
            await asyncio.wait_for(stream.connect(("127.0.0.1", port)), 10)
        except (StreamClosedError, OSError, asyncio.TimeoutError) as e:
            stream.close()
            raise BackendUnavailable(str(e)) from None
        return stream

    def take_buffers(self) -> tuple[memoryview, memoryview]:
        # two buffers per exchange: one is read into while the other is flushed
        if self._buffers:
            return self._buffers.pop()
        return memoryview(bytearray(CHUNK)), memoryview(bytearray(CHUNK))

    def give_buffers(self, buffers: tuple[memoryview, memoryview]) -> None:
        if len(self._buffers) < 16:
            self._buffers.append(buffers)

    def release(self, port: int, caller: str, stream: IOStream) -> None:
        """Keep ``stream`` for ``caller``'s next request on ``port``, if it is
        exactly between two messages; else close it."""
        now = time.monotonic()
        if now >= self._next_prune:
            self._prune(now)
        if not _quiescent(stream):
            stream.close()
            return
        idle = self._idle.setdefault((port, caller), [])
        if len(idle) >= self.max_idle_per_port or self._idle_count >= self.max_idle:
            stream.close()
            return
        idle.append((stream, now))
        self._idle_count += 1

    def _prune(self, now: float) -> None:
        # idle lists of callers that stopped coming (a revoked token) would
        # otherwise hold their sockets until the server stops
        self._next_prune = now + self.idle_timeout / 2
        for key, idle in list(self._idle.items()):
            fresh = [(s, t) for s, t in idle if now - t < self.idle_timeout and not s.closed()]
            for stream, since in idle:
                if now - since >= self.idle_timeout:
                    stream.close()
            self._idle_count -= len(idle) - len(fresh)
            if fresh:
                self._idle[key] = fresh
            else:
                del self._idle[key]

    def close(self) -> None:
        for idle in self._idle.values():
            for stream, _ in idle:
                stream.close()
        self._idle.clear()
        self._idle_count = 0


def _quiescent(stream: IOStream) -> bool:
    """Whether the last exchange on ``stream`` ended exactly at a message
    boundary: not closed, nothing buffered by tornado, no read or write pending.

    tornado keeps no public size of its read buffer; ``_read_buffer_size`` is
    there on the tested versions (6.5, 6.6). Without it nothing is pooled.
    """
    if stream.closed() or stream.reading() or stream.writing():
        return False
    return getattr(stream, "_read_buffer_size", None) == 0


def _alive(stream: IOStream) -> bool:
    """Whether an idle connection is still open: a non-blocking peek sees the
    backend's FIN (keep-alive timeouts of 2-5 s are common) before we reuse it."""
    if stream.closed():
        return False
    try:
        data = stream.socket.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError:
        return False
    # b"" is EOF; unexpected bytes on an idle connection make it unusable too
    del data
    return False


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def request_headers(
    incoming: httputil.HTTPHeaders,
    *,
    port: int,
    peer: str | None,
    client: str | None,
    protocol: str,
    host: str,
    prefix: str,
    drop_authorization: bool,
    websocket: bool = False,
    jupyter_cookies: frozenset[str] = frozenset(),
) -> httputil.HTTPHeaders:
    """The headers sent upstream, per the proxy's header hygiene.

    ``peer`` is the TCP peer, ``client`` the client address as :func:`attempt_key`
    decides it, ``protocol`` and ``host`` the request as this server sees it
    (tornado's, which honour the front proxy under ``trust_xheaders``). What a
    client wrote itself in ``X-Forwarded-Host``/``-Proto``/``-Port``/``-Prefix``,
    ``Forwarded`` or ``X-Real-Ip`` never reaches the backend: a backend building
    URLs from them would send the user to the client's choice of host.
    """
    drop = _DROP_REQUEST | _connection_tokens(incoming)
    if websocket:
        # the client's handshake (Sec-WebSocket-*) goes to the backend as it
        # came, so the backend's answer is valid for the client; but not its
        # Origin: tornado-style backends refuse one that differs from their Host
        drop = drop | {"origin"}
    out = httputil.HTTPHeaders()
    for name, value in incoming.get_all():
        lname = name.lower()
        if lname in drop or lname in _FORWARDING:
            continue
        if lname == "authorization" and (
            drop_authorization or value.split(" ", 1)[0].lower() == "token"
        ):
            # consumed by Jupyter (or Jupyter's own scheme): never the backend's business
            continue
        out.add(name, value)
    cookie = "; ".join(incoming.get_list("Cookie"))
    if cookie:
        cookie = strip_jupyter_cookies(cookie, jupyter_cookies)
        if cookie:
            out["Cookie"] = cookie
    out["Host"] = f"127.0.0.1:{port}"
    # each hop appends its peer: the chain as it came (a front proxy's entry
    # last), then whoever connected to us
    xff = ", ".join(incoming.get_list("X-Forwarded-For"))
    if peer:
        out["X-Forwarded-For"] = f"{xff}, {peer}" if xff else peer
    elif xff:
        out["X-Forwarded-For"] = xff
    if client:
        out["X-Real-Ip"] = client
    out["X-Forwarded-Proto"] = protocol
    out["X-Forwarded-Host"] = host
    out["X-Forwarded-Prefix"] = prefix
    node = f"[{client}]" if client and ":" in client else client
    out["Forwarded"] = (
        f"for={_quoted(node)};" if node else ""
    ) + f"host={_quoted(host)};proto={protocol}"
    if websocket:
        out["Connection"] = "Upgrade"
        out["Upgrade"] = "websocket"
    return out


def format_head(first_line: str, headers: httputil.HTTPHeaders) -> bytes:
    """An HTTP/1.1 message head, ready for the wire."""
    lines = [first_line]
    lines.extend(f"{n}: {v}" for n, v in headers.get_all())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def rewrite_location(location: str, *, port: int, prefix: str, absolute: bool) -> str:
    """Keep a backend's redirect usable under ``prefix``."""
    parts = urlsplit(location)
    if parts.scheme or parts.netloc:
        host = (parts.hostname or "").lower()
        if host not in ("127.0.0.1", "localhost") or (parts.port or 80) != port:
            return location  # somewhere else entirely: leave it
        location = parts.path or "/"
        if parts.query:
            location += "?" + parts.query
        if parts.fragment:
            location += "#" + parts.fragment
    elif not location.startswith("/") or location.startswith("//"):
        return location  # relative: already resolves under the prefix
    if absolute and location.startswith(prefix):
        return location  # the app knows its prefix
    return prefix + location


def response_headers(
    upstream: httputil.HTTPHeaders,
    *,
    port: int,
    prefix: str,
    absolute: bool,
    cors_origin: str | None,
    jupyter_cookies: frozenset[str] = frozenset(),
) -> httputil.HTTPHeaders:
    """The headers sent to the client: no hop-by-hop, no backend CORS, no Jupyter cookies."""
    drop = _DROP_RESPONSE | _connection_tokens(upstream)
    out = httputil.HTTPHeaders()
    for name, value in upstream.get_all():
        lname = name.lower()
        if lname in drop or lname.startswith(_CORS_PREFIX):
            continue
        if lname == "location":
            value = rewrite_location(value, port=port, prefix=prefix, absolute=absolute)
        elif lname == "set-cookie" and is_jupyter_cookie(value.split("=", 1)[0], jupyter_cookies):
            continue  # a backend must not overwrite the user's Jupyter session
        out.add(name, value)
    if cors_origin:
        out["Access-Control-Allow-Origin"] = cors_origin
        out.add("Vary", "Origin")
    return out


class UpstreamExchange:
    """One request and its response over a pooled upstream connection.

    The handler calls :meth:`start` (request head), :meth:`send` per body
    piece, :meth:`end_body`, :meth:`read_head`, then :meth:`relay_body` with a
    ``write`` callable for the client; :meth:`done` returns the connection to
    the pool when the exchange ended cleanly, else closes it.
    """

    def __init__(self, pool: UpstreamPool, port: int, caller: str) -> None:
        self.pool = pool
        self.port = port
        #: who was let in (see UpstreamPool): the connection is pooled for them only
        self.caller = caller
        self.stream: IOStream | None = None
        self.reused = False
        self.chunked_body = False
        self.body_sent = False
        self.reusable = False
        #: whether this exchange may leave its connection in the pool at all
        self.poolable = True
        self.failed: BaseException | None = None
        self._head: bytes = b""
        self._no_body = True

    async def start(
        self, method: str, target: str, headers: httputil.HTTPHeaders, body: str
    ) -> None:
        """Connect (or reuse) and write the request head.

        ``body`` is ``"none"``, ``"length"`` (a Content-Length is in
        ``headers``) or ``"chunked"`` (pieces are framed here).

        A request with a body, and any HEAD, goes out with ``Connection: close``
        and its connection is never pooled. Whether a backend consumed a body
        cannot be seen from here: Python's ``http.server`` reads none on a GET,
        and any backend may answer a POST before reading it; the unread bytes
        would then be parsed as the next request on that connection. And
        whether a HEAD answer was really bodiless is not certain either. Bodies
        are relayed rather than refused (GET/DELETE with a body is used by real
        APIs); the price is one loopback connect for such requests.
        """
        self.chunked_body = body == "chunked"
        if self.chunked_body:
            headers["Transfer-Encoding"] = "chunked"
        self.body_sent = self._no_body = body == "none"
        if not self._no_body or method == "HEAD":
            self.poolable = False
            if headers.get("Upgrade") is None:
                headers["Connection"] = "close"
        self._head = format_head(f"{method} {target} HTTP/1.1", headers)
        await self._open()

    async def _open(self) -> None:
        self.stream, self.reused = await self.pool.acquire(self.port, self.caller)
        try:
            self.stream.write(self._head)
        except StreamClosedError as e:
            raise BackendUnavailable(str(e)) from None

    def send(self, chunk: bytes) -> Awaitable[None] | None:
        """Write a body piece; an awaitable only when the backend is behind."""
        if self.failed is not None or self.stream is None:
            return None
        try:
            if self.chunked_body:
                if not chunk:
                    return None
                self.stream.write(b"%x\r\n" % len(chunk))
                self.stream.write(chunk)
                future = self.stream.write(b"\r\n")
            else:
                future = self.stream.write(chunk)
        except StreamClosedError as e:
            # keep reading the client's body; the response (often an early
            # error from the backend) or a 502 follows in read_head
            self.failed = e
            return None
        if self.stream.writing() and self._write_backlog() > UPLOAD_HIGH_WATER:
            return _quiet(future)
        return None

    def _write_backlog(self) -> int:
        # tornado keeps no public size of the pending write buffer
        return getattr(self.stream, "_write_buffer_size", UPLOAD_HIGH_WATER + 1)

    def end_body(self) -> None:
        if self.chunked_body and self.failed is None and self.stream is not None:
            try:
                self.stream.write(b"0\r\n\r\n")
            except StreamClosedError as e:
                self.failed = e
        self.body_sent = True

    async def read_head(
        self, method: str
    ) -> tuple[httputil.ResponseStartLine, httputil.HTTPHeaders]:
        """Parse the response head (skipping 1xx); retry once on a stale pooled
        connection when nothing but the head had been sent."""
        assert self.stream is not None
        while True:
            try:
                data = await self.stream.read_until(b"\r\n\r\n", max_bytes=HEAD_LIMIT)
            except (StreamClosedError, OSError) as e:
                if self.reused and self._retryable(method):
                    self.reused = False
                    self.stream.close()
                    await self._open()
                    continue
                self.stream.close()
                raise BackendUnavailable(str(e)) from None
            text = data.decode("latin-1")
            first, _, rest = text.partition("\r\n")
            try:
                start = httputil.parse_response_start_line(first)
                headers = httputil.HTTPHeaders.parse(rest)
            except httputil.HTTPInputError as e:
                self.stream.close()
                raise BackendUnavailable(f"malformed response: {e}") from None
            if 100 <= start.code < 200 and start.code != 101:
                continue  # 100 Continue and friends are hop-by-hop
            self._method = method
            self._start = start
            self._headers = headers
            return start, headers

    def _retryable(self, method: str) -> bool:
        # only a request without a body can be sent again as it was
        return self._no_body and method in ("GET", "HEAD", "OPTIONS", "DELETE")

    def body_framing(self) -> str:
        """``none``, ``length``, ``chunked`` or ``close`` for the response body."""
        if self._method == "HEAD" or self._start.code in _NO_BODY_STATUS:
            return "none"
        te = self._headers.get("Transfer-Encoding", "")
        if te:
            return "chunked" if te.lower().rsplit(",", 1)[-1].strip() == "chunked" else "close"
        if "Content-Length" in self._headers:
            return "length"
        return "close"

    async def read_small_body(self) -> bytes | None:
        """The whole body when it is known to be small (so the client gets head
        and body in one write), else ``None`` and :meth:`relay_body` streams it."""
        framing = self.body_framing()
        if framing == "none":
            body = b""
        elif framing == "length" and int(self._headers["Content-Length"]) <= SMALL_BODY:
            assert self.stream is not None
            try:
                body = await self.stream.read_bytes(int(self._headers["Content-Length"]))
            except (StreamClosedError, OSError) as e:
                self.failed = e
                self.stream.close()
                raise BackendUnavailable(str(e)) from None
        else:
            return None
        self.reusable = (
            self.poolable
            and _keep_alive(self._start, self._headers)
            and self.body_sent
            and self.failed is None
        )
        return body

    async def relay_body(
        self,
        write: Callable[[Any], Awaitable[None]],
        *,
        pass_chunked: bool,
    ) -> None:
        """Copy the response body to ``write``; raises on an upstream failure mid-body.

        ``write`` must return an awaitable that resolves when the piece has
        been handed to the client socket; each piece is awaited before the
        next write, but the next read into the *other* buffer happens first,
        so reading upstream and flushing downstream overlap.
        """
        assert self.stream is not None
        framing = self.body_framing()
        stream = self.stream
        reusable = _keep_alive(self._start, self._headers)
        try:
            if framing == "length":
                await self._relay_exact(int(self._headers["Content-Length"]), write)
            elif framing == "chunked":
                while True:
                    line = await stream.read_until(b"\r\n", max_bytes=1024)
                    size = int(line.split(b";", 1)[0].strip(), 16)
                    if pass_chunked:
                        await write(line)
                    if size == 0:
                        trailer = await stream.read_until(b"\r\n", max_bytes=HEAD_LIMIT)
                        while trailer != b"\r\n":  # trailer fields, then the empty line
                            if pass_chunked:
                                await write(trailer)
                            trailer = await stream.read_until(b"\r\n", max_bytes=HEAD_LIMIT)
                        if pass_chunked:
                            await write(trailer)
                        break
                    await self._relay_exact(size, write)
                    crlf = await stream.read_bytes(2)
                    if crlf != b"\r\n":
                        raise ValueError("bad chunk framing")
                    if pass_chunked:
                        await write(crlf)
            elif framing == "close":
                reusable = False
                await self._relay_until_close(write)
        except (StreamClosedError, OSError, ValueError) as e:
            self.failed = e
            stream.close()
            raise BackendUnavailable(str(e)) from None
        self.reusable = self.poolable and reusable and self.body_sent and self.failed is None

    async def _relay_exact(self, remaining: int, write: Callable[[Any], Awaitable[None]]) -> None:
        stream = self.stream
        assert stream is not None
        if remaining <= SMALL_BODY:
            # small bodies: one read from tornado's buffer, no relay buffers
            await write(await stream.read_bytes(remaining))
            return
        bufs = self.pool.take_buffers()
        i = 0
        pending: Awaitable[None] | None = None
        try:
            while remaining > 0:
                view = bufs[i]
                n = await stream.read_into(view[: min(CHUNK, remaining)], partial=True)
                remaining -= n
                if pending is not None:
                    await pending  # the other buffer is free again
                pending = write(view[:n])
                i ^= 1
            if pending is not None:
                await pending
        except BaseException:
            # a write may still reference a buffer: never hand it out again
            raise
        else:
            self.pool.give_buffers(bufs)

    async def _relay_until_close(self, write: Callable[[Any], Awaitable[None]]) -> None:
        stream = self.stream
        assert stream is not None
        # not returned to the pool: simpler than tracking a failed last write
        bufs = self.pool.take_buffers()
        i = 0
        pending: Awaitable[None] | None = None
        while True:
            try:
                n = await stream.read_into(bufs[i], partial=True)
            except StreamClosedError as e:
                if e.real_error is None:
                    break  # a clean EOF ends the body
                raise
            if pending is not None:
                await pending
            pending = write(bufs[i][:n])
            i ^= 1
        if pending is not None:
            await pending

    def take_stream(self) -> IOStream:
        """The upstream connection, for good (a websocket tunnel): never pooled."""
        assert self.stream is not None
        stream, self.stream = self.stream, None
        return stream

    def done(self) -> None:
        """Return the connection to the pool, or close it."""
        if self.stream is None:
            return
        if self.reusable and not self.stream.closed():
            self.pool.release(self.port, self.caller, self.stream)
        else:
            self.stream.close()
        self.stream = None


def _keep_alive(start: httputil.ResponseStartLine, headers: httputil.HTTPHeaders) -> bool:
    conn = headers.get("Connection", "").lower()
    if start.version == "HTTP/1.1":
        return "close" not in conn
    return "keep-alive" in conn


async def _quiet(future: Awaitable[None]) -> None:
    try:
        await future
    except StreamClosedError:
        pass


__all__ = [
    "FAST_PATH",
    "BackendUnavailable",
    "BadFraming",
    "LiveSession",
    "ProxySettings",
    "UpstreamExchange",
    "UpstreamPool",
    "attempt_key",
    "drop_query_params",
    "format_head",
    "peer_address",
    "request_body_framing",
    "request_headers",
    "response_headers",
    "rewrite_location",
]
