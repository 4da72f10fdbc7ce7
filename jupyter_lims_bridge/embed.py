"""Embedding JupyterLab in the ELN's page: origins, the CSP and the cookie attributes.

Owns the pure rules behind ``embed_origins`` and ``embed_partitioned_cookies``:
which strings are exact origins, how the origins join the
``Content-Security-Policy`` ``frame-ancestors`` that jupyter_server already sends
(merged, never replacing the rest of the policy), and which attributes
Jupyter's cookies need to be sent inside a cross-site frame.

The rules are pure; ``app.py`` applies them to the web application's settings.
One tornado piece lives here too, :class:`PartitionedCookies`, because Python
< 3.14's ``http.cookies`` (and so tornado's ``set_cookie``) cannot write the
``Partitioned`` attribute: it adds it to the ``Set-Cookie`` headers themselves.
Must not read configuration or requests beyond that.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from tornado.httputil import HTTPHeaders
from tornado.web import OutputTransform


def check_origin(origin: str) -> str:
    """``origin`` when it is one exact origin (``scheme://host[:port]``), else ``ValueError``.

    ``*``, wildcards, paths (even ``/``), queries, user names and other schemes are
    refused: ``frame-ancestors`` and ``postMessage`` must name exactly the ELN.
    """
    text = origin.strip()
    if "*" in text:
        raise ValueError(f"{origin!r}: wildcards are not allowed, name each origin exactly")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{origin!r} is not an origin like 'https://eln.example.org'")
    if parts.path or parts.query or parts.fragment or "@" in parts.netloc or "?" in text:
        raise ValueError(
            f"{origin!r} is not an origin: no path (not even '/'), query or user; "
            f"write '{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}'"
        )
    if re.search(r"[\s;,'\"]", text):
        raise ValueError(f"{origin!r} is not an origin like 'https://eln.example.org'")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"{origin!r}: the port is not a number within 0-65535") from None
    return text


def merge_frame_ancestors(csp: str | None, origins: Iterable[str], default_csp: str) -> str:
    """``csp`` (or jupyter_server's ``default_csp`` when none is configured) with
    ``origins`` added to its ``frame-ancestors`` directive; the other directives
    are kept as they are. A ``'none'`` there is replaced: it cannot be combined."""
    policy = csp or default_csp
    extra = list(origins)
    directives = [d.strip() for d in policy.split(";") if d.strip()]
    for i, directive in enumerate(directives):
        name, _, value = directive.partition(" ")
        if name.lower() != "frame-ancestors":
            continue
        sources = [s for s in value.split() if s.lower() != "'none'"] or ["'self'"]
        sources += [o for o in extra if o not in sources]
        directives[i] = "frame-ancestors " + " ".join(sources)
        break
    else:
        directives.insert(0, "frame-ancestors 'self' " + " ".join(extra))
    return "; ".join(directives)


def cookie_attributes() -> dict[str, Any]:
    """Keyword arguments for tornado's ``set_cookie`` that let a cookie be sent
    inside a cross-site frame: ``SameSite=None; Secure`` (browsers ignore
    ``SameSite=None`` without ``Secure``). ``Partitioned`` is added by
    :class:`PartitionedCookies`, as tornado refuses it on Python < 3.14."""
    return {"samesite": "None", "secure": True}


def partitioned(set_cookie: str) -> str:
    """A ``Set-Cookie`` value with ``Partitioned`` added when it is a cross-site
    cookie (``SameSite=None`` and ``Secure``, which CHIPS requires) without it."""
    attributes = [a.strip().lower() for a in set_cookie.split(";")[1:]]
    cross_site = "samesite=none" in attributes and "secure" in attributes
    if cross_site and "partitioned" not in attributes:
        return set_cookie + "; Partitioned"
    return set_cookie


class _PartitioningHeaders(HTTPHeaders):
    def add(self, name: str, value: str) -> None:  # type: ignore[override]
        if name.lower() == "set-cookie":
            value = partitioned(value)
        super().add(name, value)


class PartitionedCookies(OutputTransform):
    """Adds ``Partitioned`` to every cross-site cookie a response sets.

    tornado writes a handler's cookies into the headers this transform returns,
    after the transforms ran (``RequestHandler.flush``): the returned headers add
    the attribute as each ``Set-Cookie`` arrives. Installed only with
    ``embed_partitioned_cookies``.
    """

    def transform_first_chunk(
        self, status_code: int, headers: HTTPHeaders, chunk: bytes, finishing: bool
    ) -> tuple[int, HTTPHeaders, bytes]:
        rewritten = _PartitioningHeaders()
        for name, value in headers.get_all():
            rewritten.add(name, value)
        return status_code, rewritten, chunk


def with_cookie_attributes(options: dict[str, Any] | None, attributes: dict[str, Any]) -> dict:
    """``options`` (a cookie-options dict) with ``attributes`` in it, replacing any
    SameSite/Secure/Partitioned already there whatever their spelling."""
    keep = {
        k: v
        for k, v in (options or {}).items()
        if k.lower() not in ("samesite", "secure", "partitioned")
    }
    return {**keep, **attributes}
