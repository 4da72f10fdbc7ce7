"""The upstream side of the port proxy: connections to ``127.0.0.1:<port>`` and
one HTTP/1.1 exchange over them; and every tornado internal the proxy relies on.

Owns: the pool of keep-alive upstream connections (kept apart per caller,
reused only between two messages); the request head written from the parsed
request; the response head parsed; bodies relayed stream to stream in 256 KiB
pieces read into reusable buffers, with backpressure both ways; and, in one
place, the tornado tricks of the relay (below).

Must not: decide who may pass (access.py), choose which headers pass
(headers.py), hold a body in memory, or connect anywhere but 127.0.0.1.

Tornado internals, used only here (tested with tornado 6.5/6.6, ``FAST_PATH``):
a websocket's two sockets are taken from their ``IOStream``s with what tornado
had buffered (``detach_socket``: ``_read_buffer``, ``_state``); the response head is handed to tornado as a prepared ``HTTPHeaders``
(``RequestHandler._headers``); chunked framing from the backend is passed
through untouched (``HTTP1Connection._chunking_output``); an HTTP/1.0 client's
connection is closed after a body without length
(``HTTP1Connection._disconnect_on_finish``); an upload is read in
relay-sized pieces (``HTTP1Connection.params.chunk_size``); the pending size of
a stream's buffers is read from ``_write_buffer_size``/``_read_buffer_size``.
With any other version the plain path de-chunks and lets tornado re-chunk,
nothing is pooled, and websockets are relayed over the two ``IOStream`` s.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import socket
import time
from collections.abc import Awaitable, Callable
from http.client import responses
from typing import Any

import tornado
from tornado import httputil
from tornado.iostream import IOStream, StreamClosedError

from .headers import (
    BadFraming,
    format_head,
    peer_address,
    request_body_framing,
    request_headers,
    response_headers,
    upstream_target,
)

log = logging.getLogger(__name__)

#: Tornado minor versions whose internals the fast path was tested against.
FAST_PATH = tornado.version_info[:2] in {(6, 5), (6, 6)}

CHUNK = 256 * 1024
HEAD_LIMIT = 64 * 1024
UPLOAD_HIGH_WATER = 1024 * 1024
SMALL_BODY = 64 * 1024
_NO_BODY_STATUS = frozenset({204, 304})
# a proxied body has no size limit of ours; tornado's default (100 MiB) would cut it
_UNLIMITED_BODY = 1 << 62


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


#: a chunk-size line: hex digits (at most 2^64), then optional extensions
#: (whitespace only before an extension, RFC 9112 7.1.1)
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[^\r\n]*)?")
CHUNK_LINE_LIMIT = 1024


class ChunkedScanner:
    """Where a chunked body ends (RFC 9112 7.1), followed as its bytes pass.

    :meth:`feed` takes each piece as read and answers how many of its bytes
    belong to the body; ``done`` once the last chunk and the trailer section
    have passed. Chunk data is skipped whole, never copied; only size lines
    (at most 1 KiB, hex digits only) and the trailer section (at most 64 KiB)
    are read. Anything else raises ``ValueError``: the client's parser must
    end the body exactly where this one does, or the backend could write the
    start of the client's next response.
    """

    __slots__ = ("_line", "_remaining", "_state", "_trailer", "clean", "done")

    until_close = False

    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self) -> None:
        self._state = self._SIZE
        self._remaining = 0  # data bytes of the current chunk still to pass
        self._line = bytearray()  # a line cut by a piece's end
        self._trailer = 0  # bytes of trailer section so far
        self.done = False
        #: whether the body ended exactly where a piece ended (nothing after it)
        self.clean = True

    def want(self) -> int:
        return CHUNK

    def take(self, data: bytearray, n: int) -> int:
        """:meth:`feed`, remembering whether bytes followed the body."""
        used = self.feed(data, n)
        self.clean = used == n
        return used

    def feed(self, data: bytes | bytearray, end: int) -> int:
        """How many of ``data[:end]`` belong to the body."""
        pos = 0
        while pos < end and not self.done:
            if self._state == self._DATA:
                take = min(self._remaining, end - pos)
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = self._DATA_END
                continue
            pos, line = self._take_line(data, pos, end)
            if line is None:
                break  # the rest of the line comes with the next piece
            if self._state == self._SIZE:
                match = _CHUNK_SIZE.fullmatch(line)
                if match is None:
                    raise ValueError("bad chunk size line")
                self._remaining = int(match[1], 16)
                self._state = self._DATA if self._remaining else self._TRAILER
            elif self._state == self._DATA_END:
                if line:
                    raise ValueError("chunk data longer than its size")
                self._state = self._SIZE
            else:  # trailer fields, then the empty line that ends the body
                self._trailer += len(line) + 2
                if self._trailer > HEAD_LIMIT:
                    raise ValueError("trailer section too large")
                self.done = not line
        return pos

    def _take_line(self, data: bytes | bytearray, pos: int, end: int) -> tuple[int, bytes | None]:
        newline = data.find(b"\n", pos, end)
        stop = end if newline < 0 else newline + 1
        self._line += data[pos:stop]
        if len(self._line) > CHUNK_LINE_LIMIT and self._state != self._TRAILER:
            raise ValueError("chunk size line too long")
        if len(self._line) > HEAD_LIMIT:
            raise ValueError("trailer line too long")
        if newline < 0:
            return stop, None
        line = bytes(self._line)
        self._line.clear()
        if not line.endswith(b"\r\n"):
            raise ValueError("chunk line not ended by CRLF")
        return stop, line[:-2]


class _Exact:
    """A body of ``remaining`` bytes (Content-Length, or one chunk's data)."""

    until_close = False

    def __init__(self, remaining: int) -> None:
        self.remaining = remaining

    @property
    def done(self) -> bool:
        return self.remaining <= 0

    def want(self) -> int:
        return min(CHUNK, self.remaining)

    def take(self, data: bytearray, n: int) -> int:
        self.remaining -= n
        return n


class _UntilClose:
    """A body that ends where the backend closes the connection."""

    until_close = True
    done = False

    def want(self) -> int:
        return CHUNK

    def take(self, data: bytearray, n: int) -> int:
        return n


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

    @property
    def has_body(self) -> bool:
        """Whether the request has a body to relay (it may run for hours)."""
        return not self._no_body

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
        assert self.stream is not None
        return write_backlog(self.stream, UPLOAD_HIGH_WATER + 1)

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
            elif framing == "chunked" and pass_chunked:
                # the backend's bytes as they came, in big reads; the scanner
                # only finds where the body ends
                if not await self._relay_chunked(write):
                    reusable = False  # bytes followed the body: the connection is spent
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
        await self._pump(_Exact(remaining), write)

    async def _relay_chunked(self, write: Callable[[Any], Awaitable[None]]) -> bool:
        """Relay a chunked body with its framing as it came; whether it ended
        exactly at the end of what was read (nothing after it)."""
        scanner = ChunkedScanner()
        await self._pump(scanner, write)
        return scanner.clean

    async def _relay_until_close(self, write: Callable[[Any], Awaitable[None]]) -> None:
        await self._pump(_UntilClose(), write)

    async def _pump(self, body: Any, write: Callable[[Any], Awaitable[None]]) -> None:
        """Copy ``body``'s bytes (its ``want()``, ``take()``, ``done``) to ``write``
        through the two relay buffers: the next read fills one while the other
        is being flushed. A buffer goes back to the pool only after a clean
        end: a failed write may still reference it."""
        stream = self.stream
        assert stream is not None
        bufs = self.pool.take_buffers()
        i = 0
        pending: Awaitable[None] | None = None
        while not body.done:
            view = bufs[i]
            try:
                n = await stream.read_into(view[: body.want()], partial=True)
            except StreamClosedError as e:
                if body.until_close and e.real_error is None:
                    break  # a clean EOF ends the body
                raise
            used = body.take(view.obj, n)
            if pending is not None:
                await pending  # the other buffer is free again
            pending = write(view[:used])
            i ^= 1
        if pending is not None:
            await pending
        self.pool.give_buffers(bufs)

    def take_stream(self) -> IOStream:
        """The upstream connection, for good (a websocket tunnel): never pooled."""
        assert self.stream is not None
        stream, self.stream = self.stream, None
        return stream

    def abort(self) -> None:
        """Close the connection mid-exchange (the client left, or was shut out)."""
        if self.stream is not None:
            self.reusable = False
            self.stream.close()

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


# -- tornado's side of the relay (the client connection) --------------------------


def write_backlog(stream: IOStream, unknown: int) -> int:
    """Bytes waiting in ``stream``'s write buffer (``unknown`` when tornado
    keeps no such attribute: then the caller waits for every write)."""
    return getattr(stream, "_write_buffer_size", unknown)


class NotDetachable(Exception):
    """tornado's stream cannot be handed over (untested tornado, or busy)."""


def detach_socket(stream: IOStream) -> tuple[socket.socket, bytes]:
    """Take ``stream``'s socket away from tornado, with the bytes tornado had
    read from it but not handed out yet (a frame that came with the 101).

    Raises :class:`NotDetachable` (and changes nothing) with an untested
    tornado, or while a read or a write is pending. Afterwards tornado no
    longer watches the socket, and ``stream.close()`` leaves it open.
    """
    if not detachable(stream):
        raise NotDetachable()
    buffered = bytes(stream._read_buffer[: stream._read_buffer_size])
    if stream._state is not None:
        stream.io_loop.remove_handler(stream.fileno())
        stream._state = None
    stream._closed = True  # so that nothing of tornado's closes the socket now
    return stream.socket, buffered


def detachable(stream: IOStream) -> bool:
    """Whether :func:`detach_socket` can take ``stream``'s socket."""
    return (
        FAST_PATH
        and type(stream) is IOStream  # not TLS: its bytes are not the socket's
        and not (stream.closed() or stream.reading() or stream.writing())
        and not getattr(stream, "_user_read_buffer", True)
        and len(getattr(stream, "_read_buffer", b"")) == getattr(stream, "_read_buffer_size", -1)
    )


def accept_streamed_body(connection: Any) -> None:
    """Let a client's request body of any size stream through, read in
    relay-sized pieces rather than tornado's 64 KiB."""
    connection.set_max_body_size(_UNLIMITED_BODY)
    if FAST_PATH:
        # params are shared by the server's connections: copy, then change
        params = copy.copy(connection.params)
        params.chunk_size = CHUNK
        connection.params = params
        stream = connection.stream
        stream.read_chunk_size = max(stream.read_chunk_size, CHUNK)


def set_response_head(handler: Any, headers: httputil.HTTPHeaders) -> None:
    """Make ``headers`` the response headers of a ``RequestHandler``, none of its own."""
    if FAST_PATH:
        handler._headers = headers
        return
    for name in ("Content-Type", "Server", "Date"):
        handler.clear_header(name)
    for name, value in headers.get_all():
        handler.add_header(name, value)


def can_pass_chunked(framing: str, client_version: str) -> bool:
    """Whether a chunked response goes to the client with the backend's framing."""
    return FAST_PATH and framing == "chunked" and client_version == "HTTP/1.1"


def pass_chunked_through(connection: Any) -> None:
    """After the head went out: the body's chunk framing is the backend's, as it came."""
    connection._chunking_output = False


def close_after_unframed_body(request: Any, headers: httputil.HTTPHeaders) -> None:
    """Before a streamed head goes out: an HTTP/1.0 client finds the end of a
    body without ``Content-Length`` only where the connection closes, and
    tornado keeps a 1.0 keep-alive connection open whatever the body's framing
    (the client would wait forever). The request's ``Connection`` header is
    what tornado answers ``Keep-Alive`` from."""
    if FAST_PATH and request.version == "HTTP/1.0" and "Content-Length" not in headers:
        request.connection._disconnect_on_finish = True
        request.headers["Connection"] = "close"


class Route:
    """Where one let-in request goes: ``port``, the URL ``prefix`` it came
    under (``absolute``: the backend sees the full path), ``caller``
    (access.Caller: ``via``, ``token_id``, ``pool_key``), and ``service``, the
    named service whose port it is (None: the client named the port)."""

    __slots__ = ("absolute", "caller", "port", "prefix", "service")

    def __init__(
        self, port: int, prefix: str, absolute: bool, caller: Any, service: str | None = None
    ) -> None:
        self.port = port
        self.prefix = prefix
        self.absolute = absolute
        self.caller = caller
        self.service = service

    @property
    def target(self) -> int | str:
        """What the client asked for (access decisions are about it)."""
        return self.service if self.service is not None else self.port

    def response_headers(
        self, upstream: httputil.HTTPHeaders, service: Any, cors_origin: str | None
    ) -> httputil.HTTPHeaders:
        """The backend's response headers as the client gets them (headers.py)."""
        return response_headers(
            upstream,
            port=self.port,
            prefix=self.prefix,
            absolute=self.absolute,
            cors_origin=cors_origin,
            jupyter_cookies=service.jupyter_cookies,
        )


async def open_exchange(
    request: httputil.HTTPServerRequest,
    service: Any,
    route: Route,
    *,
    websocket: bool,
    client: str,
) -> UpstreamExchange:
    """Start the exchange for a client's request already let in: the request head, per the header
    hygiene of headers.py, written to a pooled connection; a body set up to
    stream. A body whose framing is ambiguous (or any on a websocket
    handshake) raises :class:`BadFraming` before anything goes upstream."""
    try:
        body = request_body_framing(request.headers)
    except BadFraming as e:
        raise BadFraming(f"Ambiguous request body framing: {e}.") from None
    if websocket and body != "none":
        raise BadFraming("A websocket handshake carries no body.")
    via, port, prefix = route.caller.via, route.port, route.prefix
    headers = request_headers(
        request.headers,
        port=port,
        peer=peer_address(request),
        client=client,
        protocol=request.protocol,
        host=request.host,
        prefix=prefix,
        drop_authorization=via == "session",
        websocket=websocket,
        jupyter_cookies=service.jupyter_cookies,
    )
    if body != "none":
        accept_streamed_body(request.connection)
    target = upstream_target(request.path, request.query, prefix, absolute=route.absolute, via=via)
    exchange = UpstreamExchange(service.pool, port, route.caller.pool_key)
    await exchange.start(request.method or "GET", target, headers, body)
    return exchange


def response_head(
    exchange: UpstreamExchange,
    start: httputil.ResponseStartLine,
    upstream_headers: httputil.HTTPHeaders,
    route: Route,
    service: Any,
    cors_origin: str | None,
    client_version: str,
) -> tuple[httputil.HTTPHeaders, bool]:
    """The response headers for the client (headers.py's hygiene, the body's
    length), and whether the backend's chunked framing passes through as it came."""
    headers = route.response_headers(upstream_headers, service, cors_origin)
    framing = exchange.body_framing()
    length = upstream_headers.get("Content-Length")
    if length is not None and framing in ("length", "none") and start.code != 204:
        headers["Content-Length"] = length
    pass_chunked = can_pass_chunked(framing, client_version)
    if pass_chunked:
        headers["Transfer-Encoding"] = "chunked"
    return headers, pass_chunked


async def respond(
    handler: Any,
    exchange: UpstreamExchange,
    start: httputil.ResponseStartLine,
    upstream_headers: httputil.HTTPHeaders,
    route: Route,
    service: Any,
    cors_origin: str | None,
    *,
    on_stream: Callable[[], None],
) -> None:
    """Send the backend's answer (its headers per headers.py) to the client
    of ``handler``, a tornado ``RequestHandler``, then finish it.

    A small body goes out with the head in one write; a larger or unframed
    one is streamed (``on_stream`` is called first: it may run for hours),
    chunked framing passed through as it came where tornado allows. A backend
    failing mid-body aborts the client connection: ending cleanly would pass
    a truncated body off as complete. ``touch.touch_activity`` marks server
    activity for JupyterHub's idle culler while the body flows.
    """
    request, touch = handler.request, service
    headers, pass_chunked = response_head(
        exchange, start, upstream_headers, route, service, cors_origin, request.version
    )
    handler.set_status(start.code, start.reason or responses.get(start.code, "Unknown"))
    set_response_head(handler, headers)
    settings = handler.settings
    small = await exchange.read_small_body()
    if small is not None:
        if small and request.method != "HEAD":
            handler.write(small)
        touch.touch_activity(settings)
        handler.finish()
        return
    connection = request.connection
    on_stream()
    close_after_unframed_body(request, headers)
    try:
        await handler.flush()
    except StreamClosedError:
        return
    if pass_chunked:
        pass_chunked_through(connection)

    def write(piece: Any) -> Awaitable[None]:
        touch.touch_activity(settings)  # a long download is activity while it runs
        return connection.write(piece)

    try:
        await exchange.relay_body(write, pass_chunked=pass_chunked)
    except BackendUnavailable:
        if not connection.stream.closed():
            log.warning("lims-bridge: proxy: port %s failed mid-body", exchange.port)
            connection.stream.close()
    touch.touch_activity(settings)
    handler.finish()


__all__ = [
    "CHUNK",
    "FAST_PATH",
    "BackendUnavailable",
    "ChunkedScanner",
    "NotDetachable",
    "Route",
    "UpstreamExchange",
    "UpstreamPool",
    "accept_streamed_body",
    "can_pass_chunked",
    "close_after_unframed_body",
    "detach_socket",
    "detachable",
    "open_exchange",
    "pass_chunked_through",
    "respond",
    "response_head",
    "set_response_head",
    "write_backlog",
]
