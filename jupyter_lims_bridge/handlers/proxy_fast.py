"""The port proxy's fast path: a proxied request below tornado's ``RequestHandler``.

Owns: which requests take it (:func:`takes`: a bodyless request that carries
a proxy token, or any in mode ``open``, to a Host that Jupyter's
DNS-rebinding guard lets in), and their whole exchange as an
``HTTPMessageDelegate``, on tornado's HTTP/1.1 connection (a route in front
of the application's) or on the connection-level front (proxy/front.py,
:func:`front_route`). Everything else (the owner's session, a body to stream,
a websocket handshake, a CORS preflight, the slash redirect, a refused Host)
falls through to :mod:`.proxy`'s handler, untouched.

Why: on small GETs, tornado's ``RequestHandler`` machinery (its construction,
``_execute``, ``finish`` and ``flush``) cost the proxying server as much as
the relay itself (``bench/proxy.py``, CPU per request). What a request gets
here is what it gets from the handler: the same access decision
(``Access.admit``), the same upstream exchange and header hygiene
(:mod:`..proxy.upstream`, :mod:`..proxy.headers`), the same JSON errors and
refusal log lines.

Must not: decide who may pass itself, read a request body (none is let in), or
put a token in a log line or an error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from http.client import responses
from typing import TYPE_CHECKING, Any

from tornado import httputil
from tornado.routing import PathMatches, Router

from ..errors import LimsError
from ..proxy import headers as hdr
from ..proxy import upstream
from ..proxy.access import Presented
from ..proxy.relay import Relay
from .base import json_error, log_refusal
from .proxy import AbsoluteProxyHandler, ProxyHandler

if TYPE_CHECKING:
    from ..app import LimsBridge

log = logging.getLogger("ServerApp")

#: methods taken here when they carry no body (OPTIONS is CORS's: the handler's)
_METHODS = frozenset({"GET", "HEAD", "DELETE", "POST", "PUT", "PATCH"})


def takes(
    request: httputil.HTTPServerRequest,
    service: Any,
    *,
    bare: bool,
    host_allowed: Callable[[], bool],
) -> bool:
    """Whether ``request`` takes the fast path (else the handler has it).
    ``host_allowed``: Jupyter's DNS-rebinding guard passes its Host (asked last)."""
    headers = request.headers
    return (
        (hdr.TOKEN_HEADER in headers or service.mode == "open")
        and request.method in _METHODS
        and not bare  # lims/proxy/<port> without the slash: the handler redirects
        and "Content-Length" not in headers
        and "Transfer-Encoding" not in headers
        and "Upgrade" not in headers
        and host_allowed()  # a refused Host: the handler answers it
    )


class FastRoute(Router):
    """The rule target in front of the proxy handlers: a :class:`FastExchange`
    for a request that :func:`takes` the fast path, else no match."""

    def __init__(self, bridge: LimsBridge, *, absolute: bool) -> None:
        self.bridge = bridge
        self.absolute = absolute

    def find_handler(
        self, request: httputil.HTTPServerRequest, **kwargs: Any
    ) -> httputil.HTTPMessageDelegate | None:
        path = kwargs.get("path_kwargs") or {}
        bare = not self.absolute and not path.get("proxied_path")
        service = self.bridge.port_proxy

        def check_host() -> bool:
            # asked of the handler that would have the request (it is never run)
            handler_class = AbsoluteProxyHandler if self.absolute else ProxyHandler
            web_app = self.bridge.serverapp.web_app
            handler = handler_class(web_app, request, name=self.bridge.name)
            request.connection.set_close_callback(None)  # its own, set by tornado
            return bool(handler.check_host())

        def host_allowed() -> bool:
            return service.host_allowed(request.host, check_host)  # once per Host value

        if not takes(request, service, bare=bare, host_allowed=host_allowed):
            return None
        # (tornado hands a Router its path parameters as bytes; the port pattern is ASCII)
        port = path["port"].decode("ascii")
        return FastExchange(self.bridge, request, port, absolute=self.absolute)


def front_route(
    routes: list[tuple[str, FastRoute]],
) -> Callable[[httputil.HTTPServerRequest], httputil.HTTPMessageDelegate | None]:
    """``routes`` (``handlers.fast_routes``) as the route of the connection-level
    front (proxy/front.py): matched on the request's path as tornado's rules
    match it, in the same order, each :class:`FastRoute` deciding as in tornado."""
    matchers = [(PathMatches(pattern), fast) for pattern, fast in routes]

    def route(request: httputil.HTTPServerRequest) -> httputil.HTTPMessageDelegate | None:
        for matcher, fast in matchers:
            matched = matcher.match(request)
            if matched is not None:
                delegate = fast.find_handler(request, **matched)
                if delegate is not None:
                    return delegate
        return None

    return route


class FastExchange(httputil.HTTPMessageDelegate):
    """One bodyless proxied request and its response, straight on the connection."""

    def __init__(
        self, bridge: LimsBridge, request: httputil.HTTPServerRequest, port: str, *, absolute: bool
    ) -> None:
        self.bridge = bridge
        self.request = request
        self.port = port
        self.absolute = absolute
        self.connection: Any = request.connection
        self.relay: Relay | None = None
        self.cors_origin: str | None = None
        self._task: asyncio.Future[None] | None = None
        self._refusal: BaseException | None = None
        self.connection.set_close_callback(self.on_connection_close)

    async def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> None:
        try:
            await self._begin()
        except Exception as error:
            # answered in finish(): tornado closes a connection whose answer was
            # finished before it had read the whole request
            self._refusal = error

    async def _begin(self) -> None:
        request, service = self.request, self.bridge.port_proxy
        origin = request.headers.get("Origin")
        if origin and origin in service.cors_origins:
            self.cors_origin = origin
        client = hdr.attempt_key(request, trust_xheaders=service.trust_xheaders)
        presented = Presented(token=request.headers.get(hdr.TOKEN_HEADER), client=client)
        target = int(self.port) if self.port.isdigit() else self.port  # a port or a service
        caller = await self.bridge.proxy_access.admit(target, presented)
        route, exchange = await service.connect(
            request,
            self.port,
            target,
            caller,
            client,
            base_url=self.bridge.serverapp.base_url,
            absolute=self.absolute,
        )
        settings = self.bridge.serverapp.web_app.settings
        # (the stream's own close: a bound method of ours would make a reference
        # cycle per request, left to the cyclic GC, whose full passes stall the server)
        stream = self.connection.stream
        self.relay = Relay(service, route, exchange, settings=settings, cut=stream.close)

    def data_received(self, chunk: bytes) -> None:
        return None  # takes() lets no request with a body in

    def finish(self) -> None:
        # tornado calls this once the (empty) body is read; it waits for our
        # connection.finish() before reading the next request on the connection
        if self._refusal is not None:
            self._refuse(self._refusal)
        elif self.relay is not None:
            self._task = asyncio.ensure_future(self._respond())

    async def _respond(self) -> None:
        try:
            await self._relay_response()
        except Exception as error:  # a bug: never leave the client waiting on it
            log_refusal(log, self.request.method, self.request.path, error)
            self._closed()
            self._cut()

    async def _relay_response(self) -> None:
        relay = self.relay
        assert relay is not None
        exchange, route, service = relay.exchange, relay.route, relay.service
        method = self.request.method or "GET"
        exchange.end_body()
        try:
            start, up_headers = await exchange.read_head(method)
        except upstream.BackendUnavailable:
            self._refuse(LimsError("backend_unavailable"))
            return
        if start.code == 101:  # nobody asked: no Upgrade went upstream
            exchange.abort()
            self._refuse(
                LimsError("backend_unavailable", "The backend switched protocols unasked.")
            )
            return
        headers, pass_chunked = upstream.response_head(
            exchange, start, up_headers, route, service, self.cors_origin, self.request.version
        )
        line = httputil.ResponseStartLine(
            "HTTP/1.1", start.code, start.reason or responses.get(start.code, "Unknown")
        )
        connection, settings = self.connection, relay.settings
        try:
            small = await exchange.read_small_body()
        except upstream.BackendUnavailable:
            self._refuse(LimsError("backend_unavailable"))
            return
        if small is not None:
            connection.write_headers(line, headers, small if method != "HEAD" else None)
            service.touch_activity(settings)
            self._finish()
            return
        relay.go_live()  # a stream may run for hours
        upstream.close_after_unframed_body(self.request, headers)
        connection.write_headers(line, headers)
        if pass_chunked:
            upstream.pass_chunked_through(connection)

        def write(piece: Any) -> Any:
            service.touch_activity(settings)  # a long download is activity while it runs
            return connection.write(piece)

        try:
            await exchange.relay_body(write, pass_chunked=pass_chunked)
        except upstream.BackendUnavailable:
            stream = connection.stream
            if stream is not None and not stream.closed():
                log.warning("lims-bridge: proxy: port %s failed mid-body", exchange.port)
                stream.close()  # a truncated body must not pass for a whole one
            self._closed()
            return
        service.touch_activity(settings)
        self._finish()

    def _finish(self) -> None:
        if self.relay is not None:
            self.relay.done()
        self.connection.finish()

    def _cut(self) -> None:
        stream = self.connection.stream
        if stream is not None:
            stream.close()

    def on_connection_close(self) -> None:
        self._closed()

    def _closed(self) -> None:
        if self.relay is not None:
            self.relay.abort()  # the client left mid-exchange

    def _refuse(self, error: BaseException) -> None:
        """Answer with the JSON error the handler would give, and log it as it would."""
        status, fields, data = json_error(
            getattr(error, "status_code", 500), error, cors_origin=self.cors_origin
        )
        request = self.request
        log_refusal(log, request.method, request.path, error)
        if self.relay is not None:
            self.relay.abort()
            self.relay = None
        headers = httputil.HTTPHeaders(fields)
        headers["Content-Length"] = str(len(data))
        line = httputil.ResponseStartLine("HTTP/1.1", status, responses.get(status, "Unknown"))
        try:
            self.connection.write_headers(line, headers, data)
            self.connection.finish()
        except Exception:  # the client is gone
            self._closed()


__all__ = ["FastExchange", "FastRoute", "front_route", "takes"]
