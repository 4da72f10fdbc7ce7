"""Which ``next`` URLs the hub's LIMS login may redirect to, and the token inside one.

JupyterHub's own ``get_next_url`` has a history of open-redirect bypasses
(``//x``, ``///x``, backslashes), so the LIMS login does not rely on it: it
accepts only the two shapes an ELN deep link takes on this hub, rebuilt from
their parsed parts, and sends everything else to ``/hub/home``.

Pure functions of strings: no JupyterHub, no tornado, no logging (a ``next``
holds a token and must never be printed).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, quote, unquote, urlsplit

#: A character that has no business in a path we redirect to: backslashes
#: (browsers read ``/\evil`` as ``//evil``), whitespace and control characters.
_UNSAFE = re.compile(r"[\\\s\x00-\x1f\x7f]")


def token_from_next(next_url: str) -> str | None:
    """The ``lims_token`` query parameter of ``next_url``, if it has exactly one."""
    if not next_url or len(next_url) > 32 * 1024:
        return None
    try:
        values = parse_qs(urlsplit(next_url).query).get("lims_token", [])
    except ValueError:
        return None
    return values[0] if len(values) == 1 and values[0] else None


def safe_next_url(next_url: str, *, base_url: str, username: str) -> str:
    """``next_url`` if it is this hub's deep link for ``username``, else ``<base_url>hub/home``.

    Accepted, relative to JupyterHub's ``base_url`` (e.g. ``/``):
    ``hub/user-redirect/lims/open?…`` and ``user/<username>/lims/open?…``, with a
    ``lims_token`` in the query. Absolute URLs (with a scheme or a host), ``//``,
    ``///``, backslashes, dot segments, encoded slashes, another user's path and
    anything else give the hub's home page.
    """
    base = "/" + base_url.strip("/") + "/" if base_url.strip("/") else "/"
    home = base + "hub/home"
    if not isinstance(next_url, str) or not next_url or _UNSAFE.search(next_url):
        return home
    try:
        parts = urlsplit(next_url)
    except ValueError:
        return home
    path = parts.path
    if parts.scheme or parts.netloc or not path.startswith("/") or path.startswith("//"):
        return home
    if token_from_next(next_url) is None:
        return home
    if path == base + "hub/user-redirect/lims/open":
        return f"{path}?{parts.query}"
    user_prefix = base + "user/"
    if path.startswith(user_prefix) and path.endswith("/lims/open"):
        segment = path[len(user_prefix) : -len("/lims/open")]
        # one path segment naming exactly this user, in JupyterHub's own escaping
        if segment == quote(username, safe="@~") or (
            "/" not in segment and "%" not in segment and unquote(segment) == username
        ):
            return f"{path}?{parts.query}"
    return home
