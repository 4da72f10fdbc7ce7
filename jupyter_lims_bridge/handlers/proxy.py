"""``* lims/proxy[/absolute]/<port>/<path>``: who may pass, then hand over to proxy.py.

Thin handlers: they decide whether a request may pass (the owner's Jupyter
session, an ``X-Proxy-Token``, or anyone in mode ``open``; nobody in
``disabled``), answer CORS preflights, and wire tornado's request and
connection to :mod:`jupyter_lims_bridge.proxy`, which does the relaying.

A websocket upgrade is a plain request whose handshake the backend answers;
on its 101 the handler hands both connections to :mod:`jupyter_lims_bridge.tunnel`.
Tunnels and streamed bodies are registered as live sessions; ``still_admitted``
re-makes the decision for them, so a revoked or expired token or a mode change
ends them.
``prepare`` does only the auth the request needs: a request with a proxy token never touches the
identity provider, and no proxied request writes an access-log line.

Must not: forward a credential of the user's (proxy.py filters headers), tell
an unauthenticated caller which ports are allowed (the token is checked
before the port), or put a token in a log line or an error.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Callable
from http.client import responses
from typing import Any

from jupyter_server.auth.decorator import allow_unauthenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import httputil, web
from tornado.iostream import StreamClosedError

from .. import proxy, urls
from ..errors import LimsError
from ..tunnel import Tunnel
from .base import AUTH_RESOURCE_PROXY, BridgeMixin

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CORS_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
_CORS_HEADERS = "X-Proxy-Token, Content-Type"
# a proxied body has no size limit of ours; tornado's default (100 MiB) would cut it
_UNLIMITED_BODY = 1 << 62
_QUERY_CREDENTIALS = frozenset({"_xsrf"})
_SESSION_QUERY_CREDENTIALS = frozenset({"_xsrf", "token"})


def still_admitted(bridge: Any, session: proxy.LiveSession) -> bool:
    """Whether a live session's client would still be let in now.

    The rules of :meth:`_ProxyAuthMixin.authorize_proxy`, re-made for a client
    already in (``ProxySettings.sweep`` calls this while sessions live): nobody
    in mode ``disabled``; a client let in by mode ``open`` only while the mode
    is ``open``; a proxy token's client only while that token exists, has not
    expired and covers the port (:meth:`ProxyTokenStore.still_valid`, the rule
    of its ``check``); the owner's session while the mode is not ``disabled``.
    """
    settings = bridge.port_proxy
    mode = settings.mode
    if mode == "disabled" or session.port not in settings.ports:
        return False
    if session.via == "open":
        return mode == "open"
    if session.via == "token":
        return session.token_id is not None and bridge.proxy_tokens.still_valid(
            session.token_id, session.port
        )
    return session.via == "session"


class _ProxyAuthMixin(BridgeMixin):
    """The decision shared by the HTTP and websocket handlers."""

    absolute = False
    #: the answer leaves the request's body unread, so tornado closes the connection
    body_left_unread = False
    proxy_via: str = "none"
    #: the id of the proxy token that let the request in (``proxy_via == "token"``)
    proxy_token_id: str | None = None
    cors_origin: str | None = None

    # annotations for the JupyterHandler attributes used here
    request: httputil.HTTPServerRequest
    identity_provider: Any
    authorizer: Any
    base_url: str

    def check_xsrf_cookie(self) -> None:
        # tornado calls this before prepare(); the XSRF check belongs to the
        # owner-session path only and is made there (a proxy token or mode
        # "open" carries no ambient credential a cross-site form could abuse)
        return

    def set_default_headers(self) -> None:
        # the backend's headers, not Jupyter's CSP, apply to proxied content
        return

    def _log(self) -> None:
        # no per-request access-log line for proxied traffic; refusals are
        # logged once by BridgeMixin.log_exception
        return

    def proxy_prefix(self, port_text: str) -> str:
        return urls.url_for(
            "proxy_absolute" if self.absolute else "proxy", self.base_url, port=port_text
        )

    async def authorize_proxy(self, port_text: str) -> int:
        """The port to reach, or a :class:`LimsError`; sets ``proxy_via``."""
        self.current_user = self._jupyter_current_user = None  # type: ignore[attr-defined]
        # Jupyter's DNS-rebinding guard, remembered per Host value: it parses
        # an address and stats a path, a visible cost on small requests
        host = self.request.host
        checks = self.bridge.port_proxy.host_checks
        allowed = checks.get(host)
        if allowed is None:
            allowed = bool(self.check_host())  # type: ignore[attr-defined]
            if len(checks) < 256:
                checks[host] = allowed
        if not allowed:
            raise web.HTTPError(403)
        settings = self.bridge.port_proxy
        port = int(port_text)
        mode = settings.mode
        if mode == "disabled":
            raise LimsError("proxy_disabled")
        if mode == "open":
            self.proxy_via = "open"
        else:
            token = self.request.headers.get(proxy.TOKEN_HEADER)
            if token:
                self.proxy_token_id = self._check_token(token, port)["id"]
                self.proxy_via = "token"
            else:
                await self._check_session()
                self.proxy_via = "session"
        if port not in settings.ports:
            raise LimsError("port_not_allowed")
        return port

    @property
    def proxy_caller(self) -> str:
        """Who was let in, as the upstream pool keeps callers apart."""
        if self.proxy_via == "token":
            return f"token:{self.proxy_token_id}"
        return self.proxy_via

    def _check_token(self, token: str, port: int) -> dict[str, Any]:
        """The valid token's record, or a :class:`LimsError`.

        A valid token always passes: the limiter sees failures only, so nobody
        guessing from the same address (or, with ``trust_xheaders`` and no front
        proxy, claiming it) can lock a real client out. A client over the limit
        gets ``too_many_attempts`` for each further wrong token, and those
        failures emit no event each (a guessing loop cannot flood the event log).
        """
        bridge = self.bridge
        client = proxy.attempt_key(self.request, trust_xheaders=bridge.port_proxy.trust_xheaders)
        over_limit = bridge.proxy_attempts.over_limit(client)
        try:
            return bridge.proxy_tokens.check(token, port, client, quiet=over_limit)
        except LimsError as e:
            if e.reason == "port_not_allowed":  # a valid token used on the wrong port is no guess
                raise
            if over_limit:
                raise LimsError("too_many_attempts") from None
            bridge.proxy_attempts.failed(client)
            raise

    async def _check_session(self) -> None:
        user = self.identity_provider.get_user(self)
        if isinstance(user, Awaitable):
            user = await user
        if user is None:
            raise LimsError("token_missing", "No proxy token was given (header X-Proxy-Token).")
        self.current_user = self._jupyter_current_user = user  # type: ignore[attr-defined]
        if not self.authorizer.is_authorized(self, user, "execute", AUTH_RESOURCE_PROXY):
            raise web.HTTPError(403)
        if self.request.method not in _SAFE_METHODS:
            # a cookie-authenticated POST must carry _xsrf like any Jupyter API
            # (token-authenticated Jupyter requests are exempt, as in Jupyter)
            JupyterHandler.check_xsrf_cookie(self)  # type: ignore[arg-type]

    def upstream_target(self, port_text: str) -> str:
        """Path and query for the backend, from the raw (still escaped) request path."""
        prefix = self.proxy_prefix(port_text)
        path = self.request.path
        target = path if self.absolute else (path[len(prefix) :] or "/")
        # Jupyter's XSRF value, and the owner's Jupyter token that may have come
        # in the query, are not the backend's (in any spelling Jupyter decodes)
        query = proxy.drop_query_params(
            self.request.query,
            _SESSION_QUERY_CREDENTIALS if self.proxy_via == "session" else _QUERY_CREDENTIALS,
        )
        return f"{target}?{query}" if query else target

    def upstream_headers(self, port: int, prefix: str, *, ws: bool = False) -> httputil.HTTPHeaders:
        return proxy.request_headers(
            self.request.headers,
            port=port,
            peer=proxy.peer_address(self.request),
            client=proxy.attempt_key(
                self.request, trust_xheaders=self.bridge.port_proxy.trust_xheaders
            ),
            protocol=self.request.protocol,
            host=self.request.host,
            prefix=prefix,
            drop_authorization=self.proxy_via == "session",
            websocket=ws,
            jupyter_cookies=self.bridge.port_proxy.jupyter_cookies,
        )

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, LimsError):
            status, body = error.status, error.to_json()
        elif isinstance(error, web.HTTPError):
            status = status_code
            body = {
                "message": error.log_message or responses.get(status, "Error"),
                "reason": error.reason if error.reason != responses.get(status) else None,
            }
        else:
            status, body = status_code, {"message": "Unhandled error", "reason": None}
        self.set_status(status)  # type: ignore[attr-defined]
        self.set_header("Content-Type", "application/json")  # type: ignore[attr-defined]
        self.set_header("Cache-Control", "no-store")  # type: ignore[attr-defined]
        if self.body_left_unread:
            self.set_header("Connection", "close")  # type: ignore[attr-defined]
        if self.cors_origin:
            self.set_header("Access-Control-Allow-Origin", self.cors_origin)  # type: ignore[attr-defined]
            self.set_header("Vary", "Origin")  # type: ignore[attr-defined]
        self.finish(json.dumps(body))  # type: ignore[attr-defined]


@web.stream_request_body
class ProxyHandler(_ProxyAuthMixin, ExtensionHandlerMixin, JupyterHandler):
    """Plain HTTP through the proxy, bodies streamed both ways."""

    auth_resource = AUTH_RESOURCE_PROXY
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")

    exchange: proxy.UpstreamExchange | None = None
    #: an answer decided in prepare, given by the method (a refusal, or a callable)
    _early: BaseException | Callable[[], None] | None = None
    upgrade = False
    _live: proxy.LiveSession | None = None

    async def prepare(self) -> None:  # type: ignore[override]
        self._transforms = []  # never re-encode a proxied body (e.g. gzip)
        try:
            await self._begin()
        except Exception as error:
            if _has_body(self.request.headers):
                # tornado closes a connection whose request body it did not read:
                # the answer says so (write_error), or a client reusing the
                # connection (configurable-http-proxy does) gets a reset instead
                self.body_left_unread = True
                raise
            # nothing to read: answer from the method, once tornado is done with
            # the request, so the client's connection stays usable
            self._early = error

    async def _begin(self) -> None:
        """Decide, then open the upstream exchange; an answer that needs no backend
        (a CORS preflight, the slash redirect) is left in ``_early``."""
        kwargs = self.path_kwargs
        port_text = kwargs["port"]
        request = self.request
        self.upgrade = (
            request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket"
        )
        origin = self.request.headers.get("Origin")
        settings = self.bridge.port_proxy
        if origin and origin in settings.cors_origins:
            self.cors_origin = origin
            if (
                self.request.method == "OPTIONS"
                and "Access-Control-Request-Method" in self.request.headers
            ):
                self._early = self._preflight
                return
        port = await self.authorize_proxy(port_text)
        if self.upgrade and self.proxy_via == "session" and not self.check_origin():
            # the owner's cookie is an ambient credential, and browsers apply no
            # same-origin policy to websockets: refuse cross-site ones as Jupyter does
            raise web.HTTPError(403, "Cross-origin websocket refused")
        prefix = self.proxy_prefix(port_text)
        if (
            not self.absolute
            and not kwargs.get("proxied_path")
            and self.request.method in ("GET", "HEAD")
            and not self.upgrade
        ):
            # relative links of the app only resolve under "<prefix>/"
            query = self.request.query
            self._early = lambda: self.redirect(prefix + "/" + (f"?{query}" if query else ""))
            return
        try:
            # before anything reaches the backend; "chunked": tornado de-chunks
            # the client's body and the exchange re-frames it
            body = proxy.request_body_framing(self.request.headers)
        except proxy.BadFraming as e:
            raise LimsError("bad_request", f"Ambiguous request body framing: {e}.") from None
        if self.upgrade and body != "none":
            raise LimsError("bad_request", "A websocket handshake carries no body.")
        headers = self.upstream_headers(port, prefix, ws=self.upgrade)
        if body != "none":
            connection = self.request.connection
            connection.set_max_body_size(_UNLIMITED_BODY)  # type: ignore[union-attr]
            if proxy.FAST_PATH:
                # read this request's body in relay-sized pieces, not tornado's 64 KiB
                # (params are shared by the server's connections: copy, then change)
                params = copy.copy(connection.params)  # type: ignore[union-attr]
                params.chunk_size = proxy.CHUNK
                connection.params = params  # type: ignore[union-attr]
                stream = connection.stream  # type: ignore[union-attr]
                stream.read_chunk_size = max(stream.read_chunk_size, proxy.CHUNK)
        self.exchange = proxy.UpstreamExchange(settings.pool, port, self.proxy_caller)
        self._port, self._prefix = port, prefix
        try:
            await self.exchange.start(
                self.request.method or "GET", self.upstream_target(port_text), headers, body
            )
        except proxy.BackendUnavailable:
            self.exchange = None
            raise LimsError("backend_unavailable") from None
        if body != "none":
            self._go_live()  # an upload may run for hours too

    def _go_live(self) -> None:
        """Register this request's body stream so it ends once its client is no
        longer admitted (token revoked or expired, mode changed)."""
        if self._live is None:
            self._live = self.bridge.port_proxy.session_opened(
                self._port, self.proxy_via, self.proxy_token_id, "stream", self._abort
            )

    def _abort(self) -> None:
        exchange = self.exchange
        if exchange is not None and exchange.stream is not None:
            exchange.reusable = False
            exchange.stream.close()
        stream = self.request.connection.stream  # type: ignore[union-attr]
        if not stream.closed():
            stream.close()

    def compute_etag(self) -> None:
        # the backend's caching headers apply, tornado must not add an Etag
        return None

    def _preflight(self) -> None:
        self.set_status(204)
        self.clear_header("Content-Type")
        self.set_header("Access-Control-Allow-Origin", self.cors_origin)
        self.set_header("Access-Control-Allow-Methods", _CORS_METHODS)
        requested = self.request.headers.get("Access-Control-Request-Headers")
        allowed = _CORS_HEADERS + (f", {requested}" if requested else "")
        self.set_header("Access-Control-Allow-Headers", allowed)
        self.set_header("Access-Control-Max-Age", "600")
        self.set_header("Vary", "Origin")
        self.finish()

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self.exchange is None:
            return None
        self.bridge.port_proxy.touch_activity(self.settings)
        return self.exchange.send(chunk)

    def on_connection_close(self) -> None:
        self.bridge.port_proxy.session_closed(self._live)
        if self.exchange is not None and self.exchange.stream is not None:
            # the client left: the upstream connection is mid-exchange, drop it
            self.exchange.reusable = False
            self.exchange.stream.close()

    def on_finish(self) -> None:
        self.bridge.port_proxy.session_closed(self._live)
        if self.exchange is not None:
            self.exchange.done()

    async def _relay(self) -> None:
        early, self._early = self._early, None
        if isinstance(early, BaseException):
            raise early
        if early is not None:
            early()
            return
        exchange = self.exchange
        if exchange is None:
            return
        exchange.end_body()
        method = self.request.method or "GET"
        try:
            start, upstream_headers = await exchange.read_head(method)
        except proxy.BackendUnavailable:
            raise LimsError("backend_unavailable") from None
        if self.upgrade and start.code == 101:
            await self._tunnel(start, upstream_headers)
            return
        if start.code == 101:
            raise LimsError("backend_unavailable", "The backend switched protocols unasked.")
        # (a refused upgrade: the backend's answer goes to the client as any other)
        framing = exchange.body_framing()
        headers = proxy.response_headers(
            upstream_headers,
            port=self._port,
            prefix=self._prefix,
            absolute=self.absolute,
            cors_origin=self.cors_origin,
            jupyter_cookies=self.bridge.port_proxy.jupyter_cookies,
        )
        length = upstream_headers.get("Content-Length")
        if length is not None and framing in ("length", "none") and start.code != 204:
            headers["Content-Length"] = length
        pass_chunked = (
            proxy.FAST_PATH and framing == "chunked" and self.request.version == "HTTP/1.1"
        )
        if pass_chunked:
            headers["Transfer-Encoding"] = "chunked"
        self.set_status(start.code, start.reason or responses.get(start.code, "Unknown"))
        self._set_response_headers(headers)
        try:
            small = await exchange.read_small_body()
        except proxy.BackendUnavailable:
            raise LimsError("backend_unavailable") from None
        if small is not None:
            # head and body in one write: one syscall less per small request
            if small and method != "HEAD":
                self.write(small)
            self.bridge.port_proxy.touch_activity(self.settings)
            self.finish()
            return
        connection = self.request.connection
        self._go_live()  # an event stream or a download may run for hours
        try:
            await self.flush()
        except StreamClosedError:
            return
        if pass_chunked:
            # the backend's chunk framing goes out as it came (tested tornado versions)
            connection._chunking_output = False  # type: ignore[union-attr]
        port_proxy, app_settings = self.bridge.port_proxy, self.settings

        def write(piece: Any) -> Awaitable[None]:
            # an hours-long download or event stream is activity while it runs,
            # not only once it ends (JupyterHub's idle culler)
            port_proxy.touch_activity(app_settings)
            return connection.write(piece)  # type: ignore[union-attr]

        try:
            await exchange.relay_body(write, pass_chunked=pass_chunked)
        except proxy.BackendUnavailable:
            # the head is out; ending cleanly would pass a truncated body off as
            # complete, so abort the client connection instead
            if not connection.stream.closed():  # type: ignore[union-attr]
                self.log.warning("lims-bridge: proxy: port %s failed mid-body", self._port)
                connection.stream.close()  # type: ignore[union-attr]
        self.bridge.port_proxy.touch_activity(self.settings)
        self.finish()

    async def _tunnel(
        self, start: httputil.ResponseStartLine, upstream_headers: httputil.HTTPHeaders
    ) -> None:
        """The backend accepted the websocket: answer the client, then relay frames."""
        assert self.exchange is not None
        backend = self.exchange.take_stream()
        headers = proxy.response_headers(
            upstream_headers,
            port=self._port,
            prefix=self._prefix,
            absolute=self.absolute,
            cors_origin=None,
            jupyter_cookies=self.bridge.port_proxy.jupyter_cookies,
        )
        headers["Upgrade"] = "websocket"
        headers["Connection"] = "Upgrade"
        client = self.detach()
        settings = self.bridge.port_proxy
        path = self.request.path
        started = settings.session_started(
            self._port, path, self.proxy_via, upstream_headers.get("Sec-WebSocket-Protocol")
        )
        answer = proxy.format_head(f"HTTP/1.1 101 {start.reason or 'Switching Protocols'}", headers)
        tunnel = Tunnel(
            client,
            backend,
            answer,
            max_message_size=settings.websocket_max_message_size,
            on_activity=lambda: settings.touch_activity(self.settings),
        )
        live = settings.session_opened(
            self._port, self.proxy_via, self.proxy_token_id, "websocket", tunnel.close_policy
        )
        try:
            await tunnel.run()  # closes both ends, whatever happens
        except Exception:  # the handler is detached: no error page can go out, only a log line
            self.log.exception("lims-bridge: proxy: websocket tunnel to port %s failed", self._port)
        finally:
            settings.session_closed(live)
            settings.session_ended(
                self._port, path, self.proxy_via, started, tunnel.messages, tunnel.close_code
            )

    def _set_response_headers(self, headers: httputil.HTTPHeaders) -> None:
        if proxy.FAST_PATH:
            self._headers = headers
            return
        for name in ("Content-Type", "Server", "Date"):
            self.clear_header(name)
        for name, value in headers.get_all():
            self.add_header(name, value)

    @allow_unauthenticated
    async def get(self, port: str, proxied_path: str | None = None) -> None:
        await self._relay()

    @allow_unauthenticated
    async def head(self, port: str, proxied_path: str | None = None) -> None:
        await self._relay()

    @allow_unauthenticated
    async def post(self, port: str, proxied_path: str | None = None) -> None:
        await self._relay()

    @allow_unauthenticated
    async def put(self, port: str, proxied_path: str | None = None) -> None:
        await self._relay()

    @allow_unauthenticated
    async def patch(self, port: str, proxied_path: str | None = None) -> None:
        await self._relay()

    @allow_unauthenticated
    async def delete(self, port: str, proxied_path: str | None = None) -> None:
        await self._relay()

    @allow_unauthenticated
    async def options(self, port: str, proxied_path: str | None = None) -> None:  # type: ignore[override]
        await self._relay()


class AbsoluteProxyHandler(ProxyHandler):
    absolute = True


def _has_body(headers: httputil.HTTPHeaders) -> bool:
    """Whether the request announces a body (tornado then reads it after ``prepare``)."""
    return "Transfer-Encoding" in headers or headers.get("Content-Length", "0").strip() != "0"
