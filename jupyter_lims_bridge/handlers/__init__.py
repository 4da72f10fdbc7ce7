"""Thin tornado handlers, one module per capability, and the bridge's route table.

Business logic lives in the managers; URLs live in :mod:`jupyter_lims_bridge.urls`.
``default_handlers`` pairs each route's pattern with its handler, in match
order, as jupyter_server's own ``default_handlers`` lists do.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.utils import url_path_join

from ..urls import PATTERNS
from . import open as open_handlers
from . import proxy as proxy_handlers
from . import proxy_fast
from . import save as save_handlers
from . import staging as staging_handlers
from . import status as status_handlers
from . import tokens as token_handlers

default_handlers: list[tuple[str, Any]] = [
    (PATTERNS["open_page"], open_handlers.OpenPageHandler),
    (PATTERNS["open_api"], open_handlers.OpenHandler),
    (PATTERNS["status"], status_handlers.StatusHandler),
    (PATTERNS["staging"], staging_handlers.StagingHandler),
    (PATTERNS["staging_job"], staging_handlers.StagingJobHandler),
    (PATTERNS["tokens"], token_handlers.TokensHandler),
    (PATTERNS["token"], token_handlers.TokenHandler),
    (PATTERNS["proxy_mode"], token_handlers.ProxyModeHandler),
    (PATTERNS["save"], save_handlers.SaveHandler),
    # the absolute route first: the plain one would match it too
    (PATTERNS["proxy_absolute"], proxy_handlers.AbsoluteProxyHandler),
    (PATTERNS["proxy"], proxy_handlers.ProxyHandler),
]


def fast_routes(bridge: Any, base_url: str) -> list[tuple[str, Any]]:
    """The proxy's fast path (handlers/proxy_fast.py), full patterns under
    ``base_url``: added before ``default_handlers``, it lets every request it
    does not take fall through to the proxy handlers."""
    return [
        (url_path_join(base_url, PATTERNS[name]), proxy_fast.FastRoute(bridge, absolute=absolute))
        for name, absolute in (("proxy_absolute", True), ("proxy", False))
    ]
