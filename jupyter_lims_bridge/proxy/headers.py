"""Header hygiene of the port proxy: what goes upstream, what comes back, and
what a request's head must look like before anything is relayed.

Owns: hop-by-hop headers (RFC 9110 7.6.1); the user's Jupyter/JupyterHub
cookies, ``_xsrf``, the proxy token and a consumed ``Authorization`` kept from
the backend; Jupyter's credentials dropped from the query; the forwarding
headers (``X-Forwarded-*``, ``Forwarded``, ``X-Real-Ip``) set from our own view
of the request, never the client's; the client's body framing, checked
strictly before anything goes upstream; ``Location`` kept under the prefix;
backend CORS headers replaced by ours, and the CORS preflight answer.

Must not: do I/O, decide who may pass (access.py), or know tornado's handlers:
pure functions over ``HTTPHeaders`` and strings.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus, urlsplit

from tornado import httputil

# RFC 9110 7.6.1 plus the legacy ones still seen in the wild.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
TOKEN_HEADER = "X-Proxy-Token"
# Never forwarded upstream, whatever the auth mode. ``Expect`` because tornado
# has already answered ``100-continue`` to the client; ``Host`` is rewritten.
_DROP_REQUEST = HOP_BY_HOP | {
    "x-proxy-token",
    "expect",
    "host",
    "cookie",
    "x-xsrftoken",
    "x-csrftoken",
}
# Set from the request as this server sees it; a client's own values never pass
# (X-Scheme: tornado-style backends take it for X-Forwarded-Proto).
_FORWARDING = frozenset(
    {
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "forwarded",
        "x-real-ip",
        "x-scheme",
    }
)
_DROP_RESPONSE = HOP_BY_HOP | {"content-length"}
_CORS_PREFIX = "access-control-"
#: query parameters that are Jupyter's, never the backend's: ``_xsrf`` always,
#: the owner's ``token`` when the owner's session let the request in
QUERY_CREDENTIALS = frozenset({"_xsrf"})
SESSION_QUERY_CREDENTIALS = frozenset({"_xsrf", "token"})
CORS_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
CORS_HEADERS = "X-Proxy-Token, Content-Type"


def is_jupyter_cookie(name: str, extra: frozenset[str] = frozenset()) -> bool:
    """Cookies that carry the user's Jupyter or JupyterHub credentials; ``extra``
    names the ones an operator configured (``IdentityProvider.cookie_name``)."""
    name = name.strip()
    return name == "_xsrf" or name.startswith(("username-", "jupyterhub-")) or name in extra


def strip_jupyter_cookies(header: str, extra: frozenset[str] = frozenset()) -> str:
    """A ``Cookie`` header without the Jupyter/JupyterHub cookies (others pass)."""
    kept = [
        part.strip()
        for part in header.split(";")
        if part.strip() and not is_jupyter_cookie(part.split("=", 1)[0], extra)
    ]
    return "; ".join(kept)


def peer_address(request: httputil.HTTPServerRequest) -> str | None:
    """The TCP peer's address (whatever headers say)."""
    address = getattr(getattr(request.connection, "context", None), "address", None)
    if isinstance(address, tuple) and address:
        return str(address[0])
    return None


def attempt_key(request: httputil.HTTPServerRequest, *, trust_xheaders: bool) -> str:
    """The client address failed proxy-token attempts are counted under (and
    the ``X-Real-Ip``/``Forwarded: for=`` the backend is told).

    The TCP peer; behind a front proxy (``ServerApp.trust_xheaders``, which
    JupyterHub's single-user server sets) the last ``X-Forwarded-For`` entry,
    the one that proxy appended. Never ``X-Real-Ip``, which tornado would
    prefer: configurable-http-proxy passes a client's own value through, so a
    client could pick a new address for every guess.

    Trust assumption: ``trust_xheaders`` is on only when every request comes
    through a front proxy that appends the real peer to ``X-Forwarded-For``.
    Without one, the client writes that entry itself and may claim any address.
    """
    if trust_xheaders:
        forwarded = request.headers.get("X-Forwarded-For", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last
    return peer_address(request) or request.remote_ip or "?"


def drop_query_params(query: str, names: frozenset[str]) -> str:
    """``query`` without the parameters whose *decoded* name is in ``names``.

    Names are compared as the server decodes them (``%74oken`` and ``%5fxsrf``
    are ``token`` and ``_xsrf`` to Jupyter as to most backends), every
    occurrence; the parameters kept are passed on byte for byte as sent.
    """
    if not query:
        return query
    parts = query.split("&")
    kept = [p for p in parts if unquote_plus(p.split("=", 1)[0]) not in names]
    return query if len(kept) == len(parts) else "&".join(kept)


_DIGITS = re.compile(r"[0-9]{1,18}")


class BadFraming(ValueError):
    """The request's body framing is ambiguous; it must not reach a backend."""


def has_body(headers: httputil.HTTPHeaders) -> bool:
    """Whether a request announces a body (tornado reads it only after ``prepare``),
    however ambiguously: then an answer given before reading it ends the connection."""
    return "Transfer-Encoding" in headers or headers.get("Content-Length", "0").strip() != "0"


def request_body_framing(headers: httputil.HTTPHeaders) -> str:
    """``none``, ``length`` or ``chunked`` for a client's request body.

    Checked before the request head goes anywhere, strictly, so that no
    backend parser (however lenient) can read a different body length than
    we relay: one ``Content-Length`` of digits only; ``Transfer-Encoding``
    only as a single ``chunked``; never both. Anything else raises
    :class:`BadFraming`. tornado refuses most of these itself, but only after
    the handler's ``prepare`` (which contacts the backend) has run, and it
    accepts repeated equal lengths (``5, 5``) that it then merges.
    """
    lengths = headers.get_list("Content-Length")
    encodings = headers.get_list("Transfer-Encoding")
    if lengths and encodings:
        raise BadFraming("both Content-Length and Transfer-Encoding")
    if encodings:
        if len(encodings) != 1 or encodings[0].strip().lower() != "chunked":
            raise BadFraming("Transfer-Encoding other than a single 'chunked'")
        return "chunked"
    if lengths:
        if len(lengths) != 1 or not _DIGITS.fullmatch(lengths[0].strip()):
            raise BadFraming("Content-Length must be one number")
        return "length" if int(lengths[0]) else "none"
    return "none"


def _connection_tokens(headers: httputil.HTTPHeaders) -> set[str]:
    named: set[str] = set()
    for value in headers.get_list("Connection"):
        named.update(t.strip().lower() for t in value.split(",") if t.strip())
    return named


def upstream_target(path: str, query: str, prefix: str, *, absolute: bool, via: str) -> str:
    """Path and query for the backend, from the raw (still escaped) request path.

    Jupyter's XSRF value, and the owner's Jupyter token that may have come in
    the query, are not the backend's (in any spelling Jupyter decodes).
    """
    target = path if absolute else (path[len(prefix) :] or "/")
    query = drop_query_params(
        query, SESSION_QUERY_CREDENTIALS if via == "session" else QUERY_CREDENTIALS
    )
    return f"{target}?{query}" if query else target


def preflight_headers(origin: str, requested: str | None) -> dict[str, str]:
    """The answer to a CORS preflight from an origin in ``cors_origins``."""
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": CORS_METHODS,
        "Access-Control-Allow-Headers": CORS_HEADERS + (f", {requested}" if requested else ""),
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def request_headers(
    incoming: httputil.HTTPHeaders,
    *,
    port: int,
    peer: str | None,
    client: str | None,
    protocol: str,
    host: str,
    prefix: str,
    drop_authorization: bool,
    websocket: bool = False,
    jupyter_cookies: frozenset[str] = frozenset(),
) -> httputil.HTTPHeaders:
    """The headers sent upstream, per the proxy's header hygiene.

    ``peer`` is the TCP peer, ``client`` the client address as :func:`attempt_key`
    decides it, ``protocol`` and ``host`` the request as this server sees it
    (tornado's, which honour the front proxy under ``trust_xheaders``). What a
    client wrote itself in ``X-Forwarded-Host``/``-Proto``/``-Port``/``-Prefix``,
    ``Forwarded`` or ``X-Real-Ip`` never reaches the backend: a backend building
    URLs from them would send the user to the client's choice of host.
    """
    drop = _DROP_REQUEST | _connection_tokens(incoming)
    if websocket:
        # the client's handshake (Sec-WebSocket-*) goes to the backend as it
        # came, so the backend's answer is valid for the client; but not its
        # Origin: tornado-style backends refuse one that differs from their Host
        drop = drop | {"origin"}
    out = httputil.HTTPHeaders()
    for name, value in incoming.get_all():
        lname = name.lower()
        if lname in drop or lname in _FORWARDING:
            continue
        if lname == "authorization" and (
            drop_authorization or value.split(" ", 1)[0].lower() == "token"
        ):
            # consumed by Jupyter (or Jupyter's own scheme): never the backend's business
            continue
        out.add(name, value)
    cookie = "; ".join(incoming.get_list("Cookie"))
    if cookie:
        cookie = strip_jupyter_cookies(cookie, jupyter_cookies)
        if cookie:
            out["Cookie"] = cookie
    out["Host"] = f"127.0.0.1:{port}"
    # each hop appends its peer: the chain as it came (a front proxy's entry
    # last), then whoever connected to us
    xff = ", ".join(incoming.get_list("X-Forwarded-For"))
    if peer:
        out["X-Forwarded-For"] = f"{xff}, {peer}" if xff else peer
    elif xff:
        out["X-Forwarded-For"] = xff
    if client:
        out["X-Real-Ip"] = client
    out["X-Forwarded-Proto"] = protocol
    out["X-Forwarded-Host"] = host
    out["X-Forwarded-Prefix"] = prefix
    node = f"[{client}]" if client and ":" in client else client
    out["Forwarded"] = (
        f"for={_quoted(node)};" if node else ""
    ) + f"host={_quoted(host)};proto={protocol}"
    if websocket:
        out["Connection"] = "Upgrade"
        out["Upgrade"] = "websocket"
    return out


def format_head(first_line: str, headers: httputil.HTTPHeaders) -> bytes:
    """An HTTP/1.1 message head, ready for the wire."""
    lines = [first_line]
    lines.extend(f"{n}: {v}" for n, v in headers.get_all())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def rewrite_location(location: str, *, port: int, prefix: str, absolute: bool) -> str:
    """Keep a backend's redirect usable under ``prefix``."""
    parts = urlsplit(location)
    if parts.scheme or parts.netloc:
        host = (parts.hostname or "").lower()
        if host not in ("127.0.0.1", "localhost") or (parts.port or 80) != port:
            return location  # somewhere else entirely: leave it
        location = parts.path or "/"
        if parts.query:
            location += "?" + parts.query
        if parts.fragment:
            location += "#" + parts.fragment
    elif not location.startswith("/") or location.startswith("//"):
        return location  # relative: already resolves under the prefix
    if absolute and location.startswith(prefix):
        return location  # the app knows its prefix
    return prefix + location


def response_headers(
    upstream: httputil.HTTPHeaders,
    *,
    port: int,
    prefix: str,
    absolute: bool,
    cors_origin: str | None,
    jupyter_cookies: frozenset[str] = frozenset(),
) -> httputil.HTTPHeaders:
    """The headers sent to the client: no hop-by-hop, no backend CORS, no Jupyter cookies."""
    drop = _DROP_RESPONSE | _connection_tokens(upstream)
    out = httputil.HTTPHeaders()
    for name, value in upstream.get_all():
        lname = name.lower()
        if lname in drop or lname.startswith(_CORS_PREFIX):
            continue
        if lname == "location":
            value = rewrite_location(value, port=port, prefix=prefix, absolute=absolute)
        elif lname == "set-cookie" and is_jupyter_cookie(value.split("=", 1)[0], jupyter_cookies):
            continue  # a backend must not overwrite the user's Jupyter session
        out.add(name, value)
    if cors_origin:
        out["Access-Control-Allow-Origin"] = cors_origin
        out.add("Vary", "Origin")
    return out
