"""One let-in request relayed for tornado's ``RequestHandler`` (handlers/proxy.py).

Owns: what follows ``ProxyService.connect`` (the route, the upstream exchange
with the request head written) up to the end of the request: the client's
body sent up as it arrives; the backend's head read, and its answer given on
the handler (a websocket tunnel after its 101, anything else through
``upstream.respond``), a backend failing before its head went out answered
as ``backend_unavailable``; the live session a streamed body holds (the
sweeper ends it once its client is no longer admitted); the exchange ended
with the request (done, or dropped when the client left).

Must not: decide who may pass (access.py), choose which headers pass
(headers.py), reach into tornado internals (upstream.py holds them), or put a
token in a log line or an error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..errors import LimsError
from .upstream import BackendUnavailable, Route, UpstreamExchange, respond

if TYPE_CHECKING:
    from .service import LiveSession, ProxyService


class Relay:
    """A request ``ProxyService.connect`` let through: its ``route`` and its
    upstream ``exchange``; ``settings``, the application's (where server
    activity is marked); ``cut`` closes the client's connection at once."""

    __slots__ = ("cut", "exchange", "live", "route", "service", "settings")

    def __init__(
        self,
        service: ProxyService,
        route: Route,
        exchange: UpstreamExchange,
        *,
        settings: dict[str, Any],
        cut: Callable[[], None],
    ) -> None:
        self.service = service
        self.route = route
        self.exchange = exchange
        self.settings = settings
        self.cut = cut
        self.live: LiveSession | None = None

    def go_live(self) -> None:
        """Register this body stream, ended once its client is no longer admitted."""
        if self.live is None:
            caller = self.route.caller
            self.live = self.service.session_opened(
                self.route.target, caller.via, caller.token_id, "stream", self._end
            )

    def _end(self) -> None:
        # the sweeper's way to end a stream: a client no longer admitted gets
        # no more bytes, nor a clean end that would pass a cut body for whole
        self.abort()
        self.cut()

    def send(self, chunk: bytes) -> Awaitable[None] | None:
        """A piece of the client's body, upstream (awaitable while the backend lags)."""
        self.service.touch_activity(self.settings)
        return self.exchange.send(chunk)

    async def answer(self, handler: Any, *, websocket: bool, cors_origin: str | None) -> None:
        """Give the backend's answer on ``handler``, once the client's body (if
        any) went upstream: a 101 to a websocket handshake becomes the tunnel
        (``ProxyService.relay_websocket``), any other answer goes out through
        ``upstream.respond``. A :class:`LimsError` when the backend fails before
        its head went out or switches protocols unasked."""
        exchange, service, request = self.exchange, self.service, handler.request
        exchange.end_body()
        try:
            start, up_headers = await exchange.read_head(request.method or "GET")
        except BackendUnavailable:
            raise LimsError("backend_unavailable") from None
        if start.code == 101:
            if not websocket:
                raise LimsError("backend_unavailable", "The backend switched protocols unasked.")
            await service.relay_websocket(
                handler.detach(),
                exchange.take_stream(),
                start,
                up_headers,
                self.route,
                path=request.path,
                on_activity=lambda: service.touch_activity(self.settings),
            )
            return
        try:  # (a refused upgrade: the backend's answer goes to the client as any other)
            await respond(
                handler,
                exchange,
                start,
                up_headers,
                self.route,
                service,
                cors_origin,
                on_stream=self.go_live,
            )
        except BackendUnavailable:  # before the head went out
            raise LimsError("backend_unavailable") from None

    def abort(self) -> None:
        """The client left mid-exchange: its live session ends, the exchange is dropped."""
        self.service.session_closed(self.live)
        self.live = None  # (it holds our _end: no cycle left behind)
        self.exchange.abort()

    def done(self) -> None:
        """The request is finished: its live session ends, the exchange is done."""
        self.service.session_closed(self.live)
        self.live = None
        self.exchange.done()


__all__ = ["Relay"]
