"""Who may pass the port proxy: the one audited decision.

Owns: :meth:`Access.admit`, made for every new proxied request (HTTP and
websocket) and re-made by the sweeper for every live session
(:meth:`Access.still_admitted`), so that a revoked or expired token or a mode
change ends what it no longer admits; and the failed-attempt limit on proxy
tokens. The rules, in order:

1. mode ``disabled``: nobody (``proxy_disabled``);
2. mode ``open``: anyone (``via="open"``), whatever credential they carry;
3. a proxy token (``X-Proxy-Token``; for a live session, the id of the token
   that let it in): valid, not expired and covering the port (``via="token"``);
   a client over the failed-attempt limit gets ``too_many_attempts``;
4. else the owner's Jupyter session (``via="session"``; Jupyter's identity
   provider, authorizer and XSRF rule, checked by the caller's ``owner``);
   none: ``token_missing``;
5. then, and only for a client let in, the port must be allowed
   (``port_not_allowed``), or the named service (``service_not_allowed``): an
   unauthenticated caller learns nothing of ports or services.

Must not: look at a request itself (the handler says what the client
presented), relay anything, or put a token in a log line, an error or an event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import LimsError
from .service import LiveSession, ProxyService


class Caller:
    """Who was let in: ``via`` ``"session"``, ``"token"`` (with ``token_id``) or ``"open"``."""

    __slots__ = ("token_id", "via")

    def __init__(self, via: str, token_id: str | None = None) -> None:
        self.via = via
        self.token_id = token_id

    @property
    def pool_key(self) -> str:
        """Who the upstream pool keeps connections for (one per token, not per request)."""
        return f"token:{self.token_id}" if self.via == "token" else self.via


class Presented:
    """What a client shows: a new request's proxy token (``token``, with the
    ``client`` address failures are counted under), or a live session's
    ``token_id``; and ``owner``, a coroutine function that checks the owner's
    Jupyter session and raises when it is missing or not authorized."""

    __slots__ = ("client", "owner", "token", "token_id")

    def __init__(
        self,
        *,
        token: str | None = None,
        token_id: str | None = None,
        client: str = "?",
        owner: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.token = token
        self.token_id = token_id
        self.client = client
        self.owner = owner

    @classmethod
    def live(cls, session: LiveSession) -> Presented:
        """What a live session presented when it was let in."""
        if session.via == "token":
            return cls(token_id=session.token_id)
        if session.via == "session":
            return cls(owner=_already_checked)  # the owner's session is not re-checked
        return cls()  # let in by mode open: nothing to show once the mode changes


async def _already_checked() -> None:
    return None


class Access:
    """The access decision over a :class:`ProxyService`'s mode, ports, token
    store and attempt limiter."""

    def __init__(self, service: ProxyService) -> None:
        self.service = service

    async def admit(self, port: int | str, presented: Presented) -> Caller:
        """The caller let in to ``port`` (a port, or a named service's name), or
        a :class:`LimsError` (or the ``owner`` check's own ``HTTPError``). See
        the module's rules."""
        service = self.service
        mode = service.mode
        if mode == "disabled":
            raise LimsError("proxy_disabled")
        if mode == "open":
            caller = Caller("open")
        elif presented.token_id is not None:
            if not service.tokens.still_valid(presented.token_id, port):
                raise LimsError("token_invalid", "The proxy token is no longer valid.")
            caller = Caller("token", presented.token_id)
        elif presented.token:
            record = self._check_token(presented.token, port, presented.client)
            caller = Caller("token", record["id"])
        elif presented.owner is not None:
            await presented.owner()
            caller = Caller("session")
        else:
            raise LimsError("token_missing", "No proxy token was given (header X-Proxy-Token).")
        if not service.allows(port):
            raise LimsError("service_not_allowed" if isinstance(port, str) else "port_not_allowed")
        return caller

    async def still_admitted(self, session: LiveSession) -> bool:
        """Whether a live session's client would be let in now (the sweeper asks)."""
        try:
            await self.admit(session.port, Presented.live(session))
        except LimsError:
            return False
        return True

    def _check_token(self, token: str, port: int | str, client: str) -> dict[str, Any]:
        """The valid token's record, or a :class:`LimsError`.

        A valid token always passes: the limiter sees failures only, so nobody
        guessing from the same address (or, with ``trust_xheaders`` and no front
        proxy, claiming it) can lock a real client out. A client over the limit
        gets ``too_many_attempts`` for each further wrong token, and those
        failures emit no event each (a guessing loop cannot flood the event log).
        """
        attempts = self.service.attempts
        over_limit = attempts.over_limit(client)
        try:
            return self.service.tokens.check(token, port, client, quiet=over_limit)
        except LimsError as e:
            if e.reason in ("port_not_allowed", "service_not_allowed"):
                # a valid token used on the wrong port or service is no guess
                raise
            if over_limit:
                raise LimsError("too_many_attempts") from None
            attempts.failed(client)
            raise


__all__ = ["Access", "Caller", "Presented"]
