"""Which URLs a LIMS-given URL may be, and what of one may be logged.

A leaf shared by the capabilities that fetch from or send to a URL the LIMS
gave (data downloads under ``data_url_prefixes``, "Save to ELN" under
``return_url_prefixes``, the event webhook): what an acceptable URL or prefix is,
the prefix check compared part by part, and the form of a URL that may appear
in a log or an event.

Must not: import anything of the bridge, or touch the network.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit


def url_allowed(url: str, prefixes: list[str]) -> bool:
    """Whether ``url`` lies under one of ``prefixes``, compared part by part.

    Scheme and host must match exactly (so ``https://lims.example.org`` does
    not admit ``https://lims.example.org.evil.test``), the path must continue
    the prefix's path at a segment boundary (``/files`` admits ``/files`` and
    ``/files/x``, never ``/filesX``), and dot segments and ``;`` (also encoded)
    are refused outright: some servers read ``/files/..;/admin`` as
    ``/admin`` (path parameters), so a ``;`` can smuggle a ``..`` past the check.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
        return False
    decoded = unquote(parts.path)
    if any(s in (".", "..") for s in decoded.split("/")) or "\\" in decoded or ";" in decoded:
        return False
    for prefix in prefixes:
        p = urlsplit(prefix)
        if (p.scheme, p.netloc.lower()) != (parts.scheme, parts.netloc.lower()):
            continue
        if _under(parts.path, p.path):
            return True
    return False


def _under(path: str, prefix_path: str) -> bool:
    """Whether URL path ``path`` is below ``prefix_path``, on a segment boundary."""
    if prefix_path in ("", "/"):
        return True  # the whole host
    if prefix_path.endswith("/"):
        return path.startswith(prefix_path)  # "/files/" admits "/files/x", not "/files"
    return path == prefix_path or path.startswith(prefix_path + "/")


def safe_url(url: str) -> str:
    """``url`` without its query, fragment and credentials: what may be logged or emitted."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def check_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL; ``ValueError`` otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            "must be an absolute http:// or https:// URL, e.g. "
            "'https://lims.example.org/api/jupyter/events'"
        )
    return url
