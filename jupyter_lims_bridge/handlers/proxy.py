"""``* lims/proxy[/absolute]/<port or service>/<path>``: tornado's side of the port proxy.

Thin: tells ``proxy.access.Access.admit`` (the one decision who may pass)
what the client presented, answers CORS preflights, and wires tornado's
request and connection to :mod:`jupyter_lims_bridge.proxy`, which relays
(``ProxyService.connect`` opens the exchange, ``relay.Relay`` carries it
through: the body up, the answer down, the live session of a stream).

Must not: decide who may pass itself, forward a credential of the user's
(headers.py filters), reach into tornado internals (upstream.py holds them),
or put a token in a log line or an error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import allow_unauthenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import httputil, web

from .. import urls
from ..errors import LimsError
from ..proxy import headers as hdr
from ..proxy.access import Caller, Presented
from ..proxy.relay import Relay
from .base import AUTH_RESOURCE_PROXY, BridgeMixin, write_json_error

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@web.stream_request_body
class ProxyHandler(BridgeMixin, ExtensionHandlerMixin, JupyterHandler):
    """HTTP and websocket handshakes through the proxy, bodies streamed both ways."""

    auth_resource = AUTH_RESOURCE_PROXY
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")
    absolute = False
    caller = Caller("none")
    cors_origin: str | None = None
    relay: Relay | None = None
    #: an answer decided in prepare, given by the method (a refusal, or a callable)
    _early: BaseException | Callable[[], None] | None = None
    request: httputil.HTTPServerRequest

    def check_xsrf_cookie(self) -> None:
        return  # only the owner-session path checks XSRF (_check_owner), after prepare

    def set_default_headers(self) -> None:
        return  # the backend's headers, not Jupyter's CSP, apply to proxied content

    def _log(self) -> None:
        return  # refusals are logged once by BridgeMixin.log_exception

    def compute_etag(self) -> None:
        return None  # the backend's caching headers apply

    async def prepare(self) -> None:  # type: ignore[override]
        self._transforms = []  # never re-encode a proxied body (e.g. gzip)
        try:
            await self._begin()
        except Exception as error:
            if hdr.has_body(self.request.headers):
                # tornado closes a connection whose request body it did not read:
                # the answer says so, or a client reusing the connection
                # (configurable-http-proxy does) gets a reset
                self.body_left_unread = True
                raise
            # nothing to read: answered from the method, once tornado is done with
            # the request, so the client's connection stays usable
            self._early = error

    async def _begin(self) -> None:
        """Decide, then open the upstream exchange; an answer that needs no backend
        (a CORS preflight, the slash redirect) is left in ``_early`` for the method."""
        request, service = self.request, self.bridge.port_proxy
        port_text, method = self.path_kwargs["port"], request.method or "GET"
        self.upgrade = method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket"
        origin = request.headers.get("Origin")
        if origin and origin in service.cors_origins:
            self.cors_origin = origin
            if method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
                self._early = self._preflight
                return
        if not service.host_allowed(request.host, self.check_host):  # type: ignore[attr-defined]
            raise LimsError("host_not_allowed")
        self.current_user = self._jupyter_current_user = None  # type: ignore[attr-defined]
        client = hdr.attempt_key(request, trust_xheaders=service.trust_xheaders)
        token = request.headers.get(hdr.TOKEN_HEADER)
        presented = Presented(token=token, client=client, owner=self._check_owner)
        target = int(port_text) if port_text.isdigit() else port_text  # a port or a service
        self.caller = await self.bridge.proxy_access.admit(target, presented)
        if self.upgrade and self.caller.via == "session" and not self.check_origin():
            # the owner's cookie is an ambient credential, and browsers apply no
            # same-origin policy to websockets: refuse cross-site ones as Jupyter does
            raise web.HTTPError(403, "Cross-origin websocket refused")
        bare = not self.absolute and not self.path_kwargs.get("proxied_path")
        if bare and method in ("GET", "HEAD") and not self.upgrade:
            # relative links of the app only resolve under "<prefix>/"
            prefix = urls.url_for("proxy", self.base_url, port=port_text)
            location = prefix + "/" + (f"?{request.query}" if request.query else "")
            self._early = lambda: self.redirect(location)
            return
        route, exchange = await service.connect(
            request,
            port_text,
            target,
            self.caller,
            client,
            base_url=self.base_url,
            absolute=self.absolute,
            websocket=self.upgrade,
        )
        # the sweeper cuts the client's connection once it is no longer admitted
        stream = request.connection.stream  # type: ignore[union-attr]
        self.relay = Relay(service, route, exchange, settings=self.settings, cut=stream.close)
        if exchange.has_body:
            self.relay.go_live()  # an upload may run for hours too

    def _preflight(self) -> None:
        self.set_status(204)
        self.clear_header("Content-Type")
        requested = self.request.headers.get("Access-Control-Request-Headers")
        for name, value in hdr.preflight_headers(self.cors_origin, requested).items():
            self.set_header(name, value)
        self.finish()

    async def _check_owner(self) -> None:
        """The owner's Jupyter session, as Access.admit asks for it."""
        user = await ensure_async(self.identity_provider.get_user(self))
        if user is None:
            raise LimsError("token_missing", "No proxy token was given (header X-Proxy-Token).")
        self.current_user = self._jupyter_current_user = user  # type: ignore[attr-defined]
        if not self.authorizer.is_authorized(self, user, "execute", AUTH_RESOURCE_PROXY):
            raise web.HTTPError(403)
        if self.request.method not in _SAFE_METHODS:
            # a cookie-authenticated POST must carry _xsrf like any Jupyter API
            JupyterHandler.check_xsrf_cookie(self)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return None if self.relay is None else self.relay.send(chunk)

    def on_connection_close(self) -> None:
        if self.relay is not None:
            self.relay.abort()  # the client left mid-exchange

    def on_finish(self) -> None:
        if self.relay is not None:
            self.relay.done()

    @allow_unauthenticated
    async def get(self, port: str, proxied_path: str | None = None) -> None:
        early, self._early = self._early, None
        if isinstance(early, BaseException):
            raise early
        if early is not None:
            early()
        elif self.relay is not None:
            await self.relay.answer(self, websocket=self.upgrade, cors_origin=self.cors_origin)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        write_json_error(self, status_code, kwargs.get("exc_info"), cors_origin=self.cors_origin)

    head = post = put = patch = delete = options = get  # type: ignore[assignment]


class AbsoluteProxyHandler(ProxyHandler):
    absolute = True
