"""The hub's record of login uses of open tokens (``jti``), bounded in size and time.

A deep link's token is used twice, for two different things: once by the hub
to log the browser in (recorded here), once by the user's server for the open
(its own store, ``claims.ReplayStore``). Keeping the two apart lets the same
link do both, while a second login with it - from another browser that got
hold of the link - is refused.

Memory is bounded: an entry lives until its token could no longer verify
(``exp`` + leeway), and at most ``max_entries`` live at once; when full, a new
login is refused rather than an unexpired entry forgotten (forgetting would make
that token usable again). Only tokens whose signature verified get here, so
only the LIMS can fill it. It lives in the hub process: a hub restart forgets
it (the user's server still refuses a second open). It never stores a token.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable


class StoreFull(Exception):
    """``max_entries`` unexpired login uses are recorded; refuse rather than forget one."""


class UsedTokens:
    """``consume(key, expires_at)`` is a check-and-set in one step (one event loop, no await)."""

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        self._forget_expired()
        return len(self._expiry)

    def _forget_expired(self) -> None:
        now = self._clock()
        while self._heap and self._heap[0][0] < now:
            expires_at, key = heapq.heappop(self._heap)
            if self._expiry.get(key) == expires_at:
                del self._expiry[key]

    def consume(self, key: str, expires_at: float) -> bool:
        """Record ``key`` until ``expires_at``; False if it is already recorded.

        Raises :class:`StoreFull` when ``max_entries`` unexpired keys are recorded.
        """
        self._forget_expired()
        if key in self._expiry:
            return False
        if len(self._expiry) >= self.max_entries:
            raise StoreFull()
        self._expiry[key] = expires_at
        heapq.heappush(self._heap, (expires_at, key))
        return True
