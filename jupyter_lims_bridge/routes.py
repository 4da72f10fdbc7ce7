"""The URL namespace of the bridge and its one route table.

Every URL the server answers is declared here, relative to the server's base
URL (jupyter_server prefixes ``base_url``). The JupyterLab panel keeps its own
copy in ``labextension/src/tokens.ts``; a test checks that the two agree.
"""

from __future__ import annotations

from typing import Any

NAMESPACE = "lims"

#: route name -> URL pattern (tornado regex, relative to base_url)
PATTERNS: dict[str, str] = {
    "open_page": rf"{NAMESPACE}/open",
    "open_api": rf"{NAMESPACE}/api/open",
    "status": rf"{NAMESPACE}/api/status",
    "staging": rf"{NAMESPACE}/api/staging",
    "staging_job": rf"{NAMESPACE}/api/staging/(?P<job_id>[A-Za-z0-9_-]+)",
    "tokens": rf"{NAMESPACE}/api/tokens",
    "token": rf"{NAMESPACE}/api/tokens/(?P<token_id>[A-Za-z0-9_-]+)",
    "proxy_mode": rf"{NAMESPACE}/api/proxy",
    "proxy_absolute": rf"{NAMESPACE}/proxy/absolute/(?P<port>\d+)(?P<proxied_path>/.*)?",
    "proxy": rf"{NAMESPACE}/proxy/(?P<port>\d+)(?P<proxied_path>/.*)?",
}


def route_table() -> list[tuple[str, Any]]:
    """``(pattern, handler)`` pairs for ``ExtensionApp.handlers``, in match order."""
    # imported here: handlers import the services, which import this module
    from .handlers import open as open_handlers
    from .handlers import proxy as proxy_handlers
    from .handlers import staging as staging_handlers
    from .handlers import status as status_handlers
    from .handlers import tokens as token_handlers

    return [
        (PATTERNS["open_page"], open_handlers.OpenPageHandler),
        (PATTERNS["open_api"], open_handlers.OpenHandler),
        (PATTERNS["status"], status_handlers.StatusHandler),
        (PATTERNS["staging"], staging_handlers.StagingHandler),
        (PATTERNS["staging_job"], staging_handlers.StagingJobHandler),
        (PATTERNS["tokens"], token_handlers.TokensHandler),
        (PATTERNS["token"], token_handlers.TokenHandler),
        (PATTERNS["proxy_mode"], token_handlers.ProxyModeHandler),
        *proxy_handlers.proxy_routes(PATTERNS["proxy_absolute"], PATTERNS["proxy"]),
    ]
