"""One let-in request relayed for tornado's ``RequestHandler`` (handlers/proxy.py).

Owns: what follows ``ProxyService.connect`` (the route, the upstream exchange
with the request head written) up to the end of the request: the backend's
head read, and its answer given on the handler (a websocket tunnel after its
101, anything else through ``upstream.respond``), a backend failing before
its head went out answered as ``backend_unavailable``.

Must not: decide who may pass (access.py), choose which headers pass
(headers.py), reach into tornado internals (upstream.py holds them), or put a
token in a log line or an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import LimsError
from .upstream import BackendUnavailable, Route, UpstreamExchange, respond

if TYPE_CHECKING:
    from collections.abc import Callable

    from .service import ProxyService


class Relay:
    """A request ``ProxyService.connect`` let through: its ``route`` and its
    upstream ``exchange``."""

    __slots__ = ("exchange", "route", "service")

    def __init__(self, service: ProxyService, route: Route, exchange: UpstreamExchange) -> None:
        self.service = service
        self.route = route
        self.exchange = exchange

    async def answer(
        self,
        handler: Any,
        *,
        websocket: bool,
        cors_origin: str | None,
        on_stream: Callable[[], None],
    ) -> None:
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
            settings = handler.settings
            await service.relay_websocket(
                handler.detach(),
                exchange.take_stream(),
                start,
                up_headers,
                self.route,
                path=request.path,
                on_activity=lambda: service.touch_activity(settings),
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
                on_stream=on_stream,
            )
        except BackendUnavailable:  # before the head went out
            raise LimsError("backend_unavailable") from None


__all__ = ["Relay"]
