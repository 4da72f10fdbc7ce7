"""The first look at each request on a connection to Jupyter's port, for the port proxy.

Owns: the request loop of each client connection to Jupyter's HTTP server
(tornado's ``HTTP1ServerConnection`` loop, in its place): a request head
to one of ``paths`` (the proxy's) that ``route`` takes (the proxy's fast
path: a bodyless HTTP/1.1 request with a proxy token, see
handlers/proxy_fast.py) is served through the delegate
``route`` returns, over a lean HTTP/1.1 connection of its own; any other
request is handed to tornado's own ``HTTP1Connection`` with every byte not
yet read, exactly as tornado's loop would, and the next request on the
connection is looked at here again. A connection tornado takes for good (a
websocket) or closes is left to it.

Why: on small proxied requests, tornado's HTTP/1.1 server machinery (its
header read loop with a timeout future per request, the connection state,
the routing of the request through every rule of the Jupyter application)
cost the proxying server as much CPU as the whole relay (bench/proxy.py).
And behind JupyterHub, configurable-http-proxy keeps a pool of connections
to the user's server that carries every kind of request, one after another:
the look has to be per request, not per connection.

Safety: a head is read with tornado's own parsers
(``parse_request_start_line``, ``HTTPHeaders.parse``) so that a request
taken here means what it would mean to tornado; any head tornado would read
differently or refuse (a bare LF, leading blank lines, HTTP/1.0, an
unparsable line, more than tornado's header limit) is tornado's to answer.
Who may pass is decided by the delegate (``Access.admit``), never here.

Tornado internals (6.5/6.6, ``upstream.FAST_PATH``): ``HTTPServer.handle_stream``
is replaced on the one server instance; bytes read here are handed back
into the ``IOStream``'s read buffer (``_read_buffer``, ``_read_buffer_size``)
before tornado reads a request; the request context is tornado's
``_HTTPRequestContext`` (X-Real-Ip and X-Forwarded-Proto applied as tornado
does with ``xheaders``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

from tornado import httputil
from tornado.http1connection import HTTP1Connection
from tornado.httpserver import HTTPServer, _HTTPRequestContext
from tornado.iostream import IOStream, StreamClosedError, UnsatisfiableReadError

from .upstream import FAST_PATH

log = logging.getLogger("ServerApp")

#: the delegate serving a request taken here, or None: tornado reads the request
Route = Callable[[httputil.HTTPServerRequest], "httputil.HTTPMessageDelegate | None"]

_READ = 64 * 1024
_CR_OR_LF = re.compile(rb"[\r\n]")
_HEAD_END = re.compile(rb"\r?\n\r?\n")  # tornado's


class Front:
    """The door in front of one tornado ``HTTPServer``: see the module docstring."""

    def __init__(self, server: HTTPServer, route: Route, paths: tuple[str, ...]) -> None:
        self.server = server
        self.route = route
        self.paths = paths
        self.params = server.conn_params
        self.connections: set[FrontConnection] = set()
        self._tornado_handle_stream = server.handle_stream

    @classmethod
    def install(cls, server: HTTPServer, route: Route, paths: tuple[str, ...]) -> Front | None:
        """Put a door in front of ``server``'s new connections; None where it
        cannot be (an untested tornado, TLS, keep-alive turned off). ``paths``:
        the path prefixes ``route`` may take; a request to any other path is
        tornado's before its headers are parsed here."""
        if not FAST_PATH or server.ssl_options is not None or server.conn_params.no_keep_alive:
            return None
        front = cls(server, route, paths)
        server.handle_stream = front.handle_stream  # type: ignore[method-assign]
        return front

    def uninstall(self) -> None:
        """New connections go straight to tornado again; the front's are closed."""
        self.server.handle_stream = self._tornado_handle_stream  # type: ignore[method-assign]
        for connection in list(self.connections):
            connection.stream.close()

    def handle_stream(self, stream: IOStream, address: Any) -> None:
        if type(stream) is not IOStream:  # TLS on a socket handed in later: tornado's
            self._tornado_handle_stream(stream, address)
            return
        connection = FrontConnection(self, stream, address)
        self.connections.add(connection)  # (holds its task while it runs)
        connection.task = asyncio.ensure_future(connection.serve())


class FrontConnection(httputil.HTTPConnection):
    """One client connection while its requests are served here: the
    ``HTTPConnection`` its delegates write their responses to, with tornado's
    framing rules (chunked output for a body without length, none after HEAD,
    204 or 304; ``Connection: close`` honoured)."""

    def __init__(self, front: Front, stream: IOStream, address: Any) -> None:
        self.front = front
        self.stream = stream
        self.address = address
        server = front.server
        self.context = _HTTPRequestContext(
            stream, address, server.protocol, server.trusted_downstream
        )
        self.xheaders = server.xheaders
        self.buffer = bytearray()
        # the exchange in progress (reset by _exchange)
        self._method = "GET"
        self._close_callback: Callable[[], None] | None = None
        self._done: asyncio.Future[None] | None = None
        self._disconnect_on_finish = False
        self._chunking_output = False
        self._timeout: asyncio.TimerHandle | None = None
        self.task: asyncio.Future[None] | None = None
        stream.set_close_callback(self._on_close)

    async def serve(self) -> None:
        """Serve requests until the client leaves or tornado takes the connection."""
        stream = self.stream
        try:
            while not stream.closed():
                # where tornado sees the head end (it takes bare LFs too)
                head_end = _HEAD_END.search(self.buffer)
                if head_end is None and len(self.buffer) <= self.front.params.max_header_size:
                    await self._read()
                    continue
                taken = None
                if head_end is not None and head_end.group() == b"\r\n\r\n":
                    taken = self._take(head_end.start())
                if taken is None:
                    # anything else (a bare LF, an oversized head too) is tornado's
                    if not await self._tornado_request():
                        return
                    continue
                request, delegate = taken
                del self.buffer[: head_end.end()]
                await self._exchange(request, delegate)
                if self._disconnect_on_finish:
                    stream.close()
        except StreamClosedError:
            return
        except Exception:
            log.exception("lims-bridge: proxy: front connection failed")
            stream.close()
        finally:
            self.front.connections.discard(self)

    async def _tornado_request(self) -> bool:
        """One request read and answered by tornado, as its own loop would;
        whether the connection is ours again for the next one."""
        stream, server = self.stream, self.front.server
        if self.buffer:  # the bytes read here go back, first in tornado's buffer
            stream._read_buffer[:0] = self.buffer
            stream._read_buffer_size += len(self.buffer)
            self.buffer = bytearray()
        connection = HTTP1Connection(stream, False, self.front.params, self.context)
        try:
            keep_alive = await connection.read_response(server.start_request(self, connection))
        except (StreamClosedError, UnsatisfiableReadError, asyncio.CancelledError):
            return False
        except Exception:
            log.error("Uncaught exception", exc_info=True)
            connection.close()
            return False
        if not keep_alive or stream.closed():  # closed, or taken (a websocket)
            return False
        stream.set_close_callback(self._on_close)  # tornado cleared its own
        return True

    async def _read(self) -> None:
        """More of a head; a client silent for tornado's header timeout is closed."""
        loop = asyncio.get_running_loop()
        timeout = self.front.params.header_timeout
        if timeout:
            self._timeout = loop.call_later(timeout, self.stream.close)
        try:
            self.buffer += await self.stream.read_bytes(_READ, partial=True)
        finally:
            if self._timeout is not None:
                self._timeout.cancel()
                self._timeout = None

    def _take(
        self, end: int
    ) -> tuple[httputil.HTTPServerRequest, httputil.HTTPMessageDelegate] | None:
        """The request whose head ends at ``end`` and its delegate, if ``route`` takes it."""
        text = self.buffer[:end].decode("latin-1")
        if text.count("\n") != text.count("\r\n") or text.count("\r") != text.count("\n"):
            return None  # a bare CR or LF: tornado reads those its own way
        first, _, rest = text.partition("\r\n")
        try:
            start_line = httputil.parse_request_start_line(first)
            if start_line.version != "HTTP/1.1" or not start_line.path.startswith(self.front.paths):
                return None  # (Jupyter's own requests: not parsed twice)
            headers = httputil.HTTPHeaders.parse(rest)
            if self.xheaders:
                self.context._apply_xheaders(headers)
            request = httputil.HTTPServerRequest(
                connection=self, start_line=start_line, headers=headers
            )
        except (httputil.HTTPInputError, ValueError):
            if self.xheaders:
                self.context._unapply_xheaders()
            return None  # tornado answers it (400)
        delegate = self.front.route(request)
        if delegate is None:
            if self.xheaders:
                self.context._unapply_xheaders()
            return None
        return request, delegate

    async def _exchange(
        self, request: httputil.HTTPServerRequest, delegate: httputil.HTTPMessageDelegate
    ) -> None:
        self._method = request.method or "GET"
        self._disconnect_on_finish = request.headers.get("Connection", "").lower() == "close"
        self._chunking_output = False
        self._done = done = asyncio.get_running_loop().create_future()
        try:
            start_line = httputil.RequestStartLine(request.method, request.uri, request.version)
            pending = delegate.headers_received(start_line, request.headers)
            if pending is not None:
                await pending
            delegate.finish()
            await done
        finally:
            self._close_callback = None
            self._done = None
            if self.xheaders:
                self.context._unapply_xheaders()

    # -- HTTPConnection, as the delegate sees it ------------------------------

    def set_close_callback(self, callback: Callable[[], None] | None) -> None:
        self._close_callback = callback

    def write_headers(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
        chunk: bytes | None = None,
    ) -> asyncio.Future[None]:
        assert isinstance(start_line, httputil.ResponseStartLine)
        code = start_line.code
        self._chunking_output = (
            self._method != "HEAD"
            and code not in (204, 304)
            and not 100 <= code < 200
            and "Content-Length" not in headers
        )
        if self._disconnect_on_finish:
            headers["Connection"] = "close"
        if self._chunking_output:
            headers["Transfer-Encoding"] = "chunked"
        lines = [b"HTTP/1.1 %d %s" % (code, start_line.reason.encode("latin-1"))]
        lines.extend(f"{name}: {value}".encode("latin-1") for name, value in headers.get_all())
        head = b"\r\n".join(lines)
        if _CR_OR_LF.search(head.replace(b"\r\n", b"")):
            raise ValueError("Illegal characters (CR or LF) in a response header")
        data = head + b"\r\n\r\n"
        if chunk:
            data += self._framed(chunk)
        return self._write(data)

    def write(self, chunk: bytes) -> asyncio.Future[None]:
        return self._write(self._framed(chunk))

    def _write(self, data: bytes) -> asyncio.Future[None]:
        if self.stream.closed():  # as tornado's connection: a failed future, not a raise
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.set_exception(StreamClosedError())
            future.exception()  # (retrieved: nobody need wait on it)
            return future
        return self.stream.write(data)

    def _framed(self, chunk: bytes) -> bytes:
        if self._chunking_output and chunk:
            return b"%x\r\n%s\r\n" % (len(chunk), chunk)
        return chunk

    def finish(self) -> None:
        stream = self.stream
        if self._chunking_output and not stream.closed():
            stream.write(b"0\r\n\r\n")
        self._close_callback = None
        done = self._done
        if done is None or done.done():
            return
        if stream.writing() and not stream.closed():
            # the next request is read once this answer is out, as tornado does
            stream.write(b"").add_done_callback(lambda _: _resolve(done))
        else:
            done.set_result(None)

    def _on_close(self) -> None:
        callback, self._close_callback = self._close_callback, None
        if callback is not None:
            callback()
        if self._done is not None:
            _resolve(self._done)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


__all__ = ["Front", "FrontConnection", "Route"]
