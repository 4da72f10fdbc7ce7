"""The port proxy through a real Jupyter server to a real backend on 127.0.0.1.

Given a backend service (tests/support/proxy_backend.py) on an allowed port, when a
client calls ``lims/proxy/<port>/…`` with or without credentials, then the
statuses, reasons, forwarded headers and bodies are as DESIGN.md says.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import socket
import time
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_lims_bridge.proxy import tunnel

from .support.lenient_backend import LenientBackend
from .support.net import free_port, proxy_backend

#: every test runs on both of the proxy's paths (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("proxy_path")

HERE = Path(__file__).parent
ELN = "https://eln.example.org"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC65B11"
#: "hi" in a masked text frame, as a client sends it
CLIENT_FRAME = b"\x81\x82\x01\x02\x03\x04" + bytes((ord("h") ^ 1, ord("i") ^ 2))


@pytest.fixture(scope="session")
def backend_port():
    port = free_port()
    with proxy_backend(port):
        yield port


@pytest.fixture(scope="session")
def closed_port():
    """An allowed port nothing listens on."""
    return free_port()


@pytest.fixture(scope="session")
def lenient():
    """Python's http.server on 127.0.0.1: keep-alive, body bytes left unread."""
    backend = LenientBackend().start()
    yield backend
    backend.stop()


@pytest.fixture
def bridge_config(backend_port, closed_port, lenient):
    return {"allowed_ports": [backend_port, closed_port, lenient.port], "cors_origins": [ELN]}


@pytest.fixture(params=["transports", "streams"])
def relay(request, monkeypatch):
    """Which websocket relay runs: asyncio transports (the sockets taken from
    tornado), or the fallback pumps over tornado's streams (a tornado whose
    internals were not tested)."""
    if request.param == "streams":
        monkeypatch.setattr(tunnel, "detachable", lambda stream: False)
    return request.param


@pytest.fixture
def server(http_server_client, jp_http_port, jp_base_url) -> str:
    """``http://127.0.0.1:<port><base_url>`` of the running test server (for raw clients)."""
    return f"http://127.0.0.1:{jp_http_port}{jp_base_url}"


@pytest.fixture
def token(bridge):
    return bridge.proxy_tokens.create("tests")["token"]


@pytest.fixture
def proxy_fetch(jp_fetch, backend_port):
    """A request through the proxy; ``token`` goes in X-Proxy-Token, no Jupyter credentials."""

    async def _fetch(*parts, token=None, port=None, headers=None, absolute=False, **kwargs):
        h = {"Authorization": ""}
        if token is not None:
            h["X-Proxy-Token"] = token
        h.update(headers or {})
        kwargs.setdefault("raise_error", False)
        kwargs.setdefault("follow_redirects", False)
        prefix = ("lims", "proxy", "absolute") if absolute else ("lims", "proxy")
        return await jp_fetch(*prefix, str(port or backend_port), *parts, headers=h, **kwargs)

    return _fetch


def reason(response) -> str:
    return json.loads(response.body)["reason"]


def server_address(server: str) -> tuple[str, int]:
    """Host and port of a ``server`` URL, for raw clients."""
    host, port = server[7:].split("/", 1)[0].split(":")
    return host, int(port)


def server_path(server: str) -> str:
    """The base URL's path (``/a%40b/``) of a ``server`` URL, for raw request lines."""
    return "/" + server.split("/", 3)[3]


def raw_request(server: str, data: bytes, timeout: float = 10) -> tuple[int, bytes]:
    """Send ``data`` as is on a fresh connection; the status and body of the answer."""
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(server)
    with socket.create_connection((u.hostname, u.port), timeout) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock, method=data.split(b" ", 1)[0].decode())
        response.begin()
        return response.status, response.read()


# -- who may pass ---------------------------------------------------------------


async def test_token_reaches_backend(proxy_fetch, token):
    r = await proxy_fetch("echo", "a", token=token, params={"q": "1"})
    assert r.code == 200
    echo = json.loads(r.body)
    assert echo["path"] == "/echo/a"
    assert echo["query"] == "q=1"


async def test_no_token_is_token_missing(proxy_fetch):
    r = await proxy_fetch("echo")
    assert (r.code, reason(r)) == (401, "token_missing")


async def test_bad_token_is_token_invalid_and_not_echoed(proxy_fetch):
    r = await proxy_fetch("echo", token="jlb_not-a-real-token")
    assert (r.code, reason(r)) == (401, "token_invalid")
    assert b"not-a-real-token" not in r.body


async def test_unauthenticated_learns_nothing_about_ports(proxy_fetch, backend_port, closed_port):
    # allowed and listening, allowed and closed, not allowed: the same answers,
    # byte for byte, because the token is checked before the port
    for token, expected in ((None, "token_missing"), ("jlb_x", "token_invalid")):
        answers = set()
        for port in (backend_port, closed_port, 1, 65000):
            r = await proxy_fetch("echo", port=port, token=token)
            assert (r.code, reason(r)) == (401, expected)
            answers.add((r.code, r.body))
        assert len(answers) == 1


async def test_empty_token_header_is_no_token_and_no_attempt(proxy_fetch, token):
    for _ in range(15):
        r = await proxy_fetch("echo", headers={"X-Proxy-Token": ""})
        assert (r.code, reason(r)) == (401, "token_missing")
    r = await proxy_fetch("echo", token=token)  # not counted as guesses
    assert r.code == 200


async def test_token_checks_read_no_file(proxy_fetch, token, bridge, monkeypatch):
    # the store is in memory; a request may stat the file (at most once a second,
    # to notice the CLI's changes) but never reads it while it is unchanged
    store = bridge.proxy_tokens
    reads = []
    real_load = store._load
    monkeypatch.setattr(store, "_load", lambda: (reads.append(1), real_load())[1])
    for i in range(20):
        assert (await proxy_fetch("echo", token=token)).code == 200
        if i % 4 == 0:  # a few wrong ones too, below the attempt limit
            assert (await proxy_fetch("echo", token="jlb_wrong")).code == 401
    assert reads == []


async def test_port_not_allowed_with_valid_token(proxy_fetch, token):
    r = await proxy_fetch("echo", port=1, token=token)
    assert (r.code, reason(r)) == (403, "port_not_allowed")


async def test_owner_session_passes(jp_fetch, backend_port):
    # jp_fetch carries the owner's Jupyter credentials
    r = await jp_fetch("lims", "proxy", str(backend_port), "echo")
    assert r.code == 200
    headers = json.loads(r.body)["headers"]
    assert "authorization" not in headers  # consumed by Jupyter, not forwarded


async def login_cookies(jp_fetch, jp_serverapp, with_xsrf: bool = False):
    """The owner's browser cookies after a password (token) login, without _xsrf
    (``with_xsrf``: also the _xsrf cookie and its value)."""
    page = await jp_fetch("login", headers={"Authorization": ""}, raise_error=False)
    xsrf_cookie = next(
        c.split(";", 1)[0] for c in page.headers.get_list("Set-Cookie") if c.startswith("_xsrf=")
    )
    xsrf = xsrf_cookie.split("=", 1)[1]
    login = await jp_fetch(
        "login",
        method="POST",
        body=f"password={jp_serverapp.identity_provider.token}&_xsrf={xsrf}",
        headers={"Authorization": "", "Cookie": xsrf_cookie},
        raise_error=False,
        follow_redirects=False,
    )
    cookies = [c.split(";", 1)[0] for c in login.headers.get_list("Set-Cookie")]
    assert any(c.startswith("username-") for c in cookies), cookies
    session = "; ".join(c for c in cookies if not c.startswith("_xsrf="))
    return (session, xsrf_cookie, xsrf) if with_xsrf else session


async def test_cookie_session_post_needs_xsrf(jp_fetch, jp_serverapp, backend_port):
    # Given the owner's login cookie but no _xsrf, a POST must not pass
    cookies, xsrf_cookie, xsrf = await login_cookies(jp_fetch, jp_serverapp, with_xsrf=True)
    r = await jp_fetch(
        "lims",
        "proxy",
        str(backend_port),
        "echo",
        method="POST",
        body="x",
        headers={"Authorization": "", "Cookie": cookies},
        raise_error=False,
    )
    assert r.code == 403
    # the same cookie with a matching _xsrf passes
    r = await jp_fetch(
        "lims",
        "proxy",
        str(backend_port),
        "echo",
        method="POST",
        body="x",
        headers={"Authorization": "", "Cookie": f"{cookies}; {xsrf_cookie}", "X-XSRFToken": xsrf},
        raise_error=False,
    )
    assert r.code == 200, r.body
    seen = json.loads(r.body)["headers"]
    assert "cookie" not in seen  # only Jupyter cookies were sent: nothing left to forward
    assert "x-xsrftoken" not in seen and xsrf not in json.dumps(seen)
    # nor does an _xsrf in the query reach the backend (other parameters do)
    r = await jp_fetch(
        "lims",
        "proxy",
        str(backend_port),
        "echo",
        method="POST",
        body="x",
        params={"_xsrf": xsrf, "keep": "1"},
        headers={"Authorization": "", "Cookie": f"{cookies}; {xsrf_cookie}"},
        raise_error=False,
    )
    assert r.code == 200, r.body
    assert json.loads(r.body)["query"] == "keep=1"


async def test_a_configured_login_cookie_name_is_not_forwarded(proxy_fetch, token, bridge):
    bridge.port_proxy.jupyter_cookies = frozenset({"my-login"})
    r = await proxy_fetch("echo", token=token, headers={"Cookie": "my-login=secret; app=1"})
    seen = json.loads(r.body)["headers"]
    assert seen["cookie"] == ["app=1"]


async def test_cookie_session_get_passes(jp_fetch, jp_serverapp, backend_port):
    cookies = await login_cookies(jp_fetch, jp_serverapp)
    r = await jp_fetch(
        "lims",
        "proxy",
        str(backend_port),
        "echo",
        headers={"Authorization": "", "Cookie": cookies + "; app=1"},
    )
    assert r.code == 200
    assert json.loads(r.body)["headers"]["cookie"] == ["app=1"]


async def test_open_mode_lets_anyone_in_but_ports_still_apply(proxy_fetch, bridge):
    bridge.set_proxy_mode("open")
    r = await proxy_fetch("echo")
    assert r.code == 200
    r = await proxy_fetch("echo", port=1)
    assert (r.code, reason(r)) == (403, "port_not_allowed")


async def test_disabled_mode_refuses_everyone(proxy_fetch, jp_fetch, bridge, token, backend_port):
    bridge.set_proxy_mode("disabled")
    r = await proxy_fetch("echo", token=token)
    assert (r.code, reason(r)) == (403, "proxy_disabled")
    r = await jp_fetch("lims", "proxy", str(backend_port), "echo", raise_error=False)
    assert (r.code, reason(r)) == (403, "proxy_disabled")


async def test_too_many_attempts(proxy_fetch, token, bridge):
    events = []
    bridge.port_proxy.event_logger = bridge.proxy_tokens.event_logger = type(
        "L", (), {"emit": lambda self, schema_id, data: events.append(data)}
    )()
    for _ in range(10):
        r = await proxy_fetch("echo", token="jlb_guess")
        assert (r.code, reason(r)) == (401, "token_invalid")
    # Then further wrong tokens from that client get 429 (and no event each)
    for _ in range(5):
        r = await proxy_fetch("echo", token="jlb_guess")
        assert (r.code, reason(r)) == (429, "too_many_attempts")
    assert sum(e.get("action") == "use_failed" for e in events) == 10


async def test_a_valid_token_passes_while_its_address_is_over_the_limit(proxy_fetch, token):
    # Given someone guessing from the client's own address (issue #9, item 7)
    for _ in range(12):
        r = await proxy_fetch("echo", token="jlb_guess")
        assert r.code in (401, 429)
    # Then the client with a valid token is never refused, and is not counted
    for _ in range(3):
        r = await proxy_fetch("echo", token=token)
        assert r.code == 200, r.body
    r = await proxy_fetch("echo", token="jlb_guess")
    assert (r.code, reason(r)) == (429, "too_many_attempts")


async def test_a_claimed_address_cannot_be_locked_out(proxy_fetch, token, bridge):
    # Given trust_xheaders without a front proxy (a misconfiguration), a client
    # writes X-Forwarded-For itself: it can pick the address its failures count
    # under, but a valid token from that address still passes
    bridge.port_proxy.trust_xheaders = True
    victim = {"X-Forwarded-For": "198.51.100.2"}
    for _ in range(15):
        r = await proxy_fetch("echo", token="jlb_guess", headers=victim)
        assert r.code in (401, 429)
    r = await proxy_fetch("echo", token=token, headers=victim)
    assert r.code == 200, r.body


async def test_attempts_count_per_forwarded_client_behind_a_front_proxy(proxy_fetch, token, bridge):
    # Behind JupyterHub (trust_xheaders) the client is the X-Forwarded-For entry
    # its proxy appended; an X-Real-Ip the client sends itself changes nothing
    bridge.port_proxy.trust_xheaders = True
    for i in range(10):
        r = await proxy_fetch(
            "echo",
            token="jlb_guess",
            headers={"X-Forwarded-For": "203.0.113.7", "X-Real-Ip": f"10.0.0.{i}"},
        )
        assert r.code == 401
    r = await proxy_fetch(
        "echo",
        token="jlb_guess",
        headers={"X-Forwarded-For": "203.0.113.7", "X-Real-Ip": "10.9.9.9"},
    )
    assert (r.code, reason(r)) == (429, "too_many_attempts")
    # another client behind the same proxy is not held back
    r = await proxy_fetch("echo", token="jlb_guess2", headers={"X-Forwarded-For": "198.51.100.2"})
    assert (r.code, reason(r)) == (401, "token_invalid")


async def test_backend_unavailable(proxy_fetch, token, closed_port):
    r = await proxy_fetch("echo", token=token, port=closed_port)
    assert (r.code, reason(r)) == (502, "backend_unavailable")


# -- token scope and expiry ---------------------------------------------------------


async def test_scoped_token_only_for_its_port(proxy_fetch, bridge, backend_port, closed_port):
    scoped = bridge.proxy_tokens.create("scoped", [closed_port])["token"]
    r = await proxy_fetch("echo", token=scoped)
    assert (r.code, reason(r)) == (403, "port_not_allowed")
    scoped = bridge.proxy_tokens.create("scoped2", [backend_port])["token"]
    r = await proxy_fetch("echo", token=scoped)
    assert r.code == 200


async def test_expired_token(proxy_fetch, bridge):
    created = bridge.proxy_tokens.create("short", expires_in=1)
    r = await proxy_fetch("echo", token=created["token"])
    assert r.code == 200
    real_clock = bridge.proxy_tokens.clock
    bridge.proxy_tokens.clock = lambda: real_clock() + 5
    try:
        r = await proxy_fetch("echo", token=created["token"])
        assert (r.code, reason(r)) == (401, "token_expired")
    finally:
        bridge.proxy_tokens.clock = real_clock


async def test_revoked_token_is_invalid(proxy_fetch, bridge):
    created = bridge.proxy_tokens.create("gone")
    bridge.proxy_tokens.revoke(created["id"])
    r = await proxy_fetch("echo", token=created["token"])
    assert (r.code, reason(r)) == (401, "token_invalid")


# -- header hygiene ---------------------------------------------------------------


async def test_forwarded_headers_as_seen_by_backend(
    proxy_fetch, token, jp_base_url, backend_port, jp_http_port
):
    r = await proxy_fetch(
        "echo",
        token=token,
        headers={
            "Cookie": "_xsrf=secret1; username-localhost-8888=secret2; "
            "jupyterhub-user-alice=secret3; jupyterhub-session-id=secret4; app=keep",
            "Connection": "keep-alive, X-Drop-Me",
            "X-Drop-Me": "1",
            "Keep-Alive": "timeout=5",
            "X-Custom": "passes",
            "X-XSRFToken": "secret5",
            "X-CSRFToken": "secret6",
        },
    )
    assert r.code == 200
    seen = json.loads(r.body)["headers"]
    flat = json.dumps(seen)
    assert token not in flat and "x-proxy-token" not in seen
    for secret in ("secret1", "secret2", "secret3", "secret4", "secret5", "secret6"):
        assert secret not in flat
    assert seen["cookie"] == ["app=keep"]
    assert "x-drop-me" not in seen and "keep-alive" not in seen
    assert "x-xsrftoken" not in seen and "x-csrftoken" not in seen
    assert seen["x-custom"] == ["passes"]
    assert seen["host"] == [f"127.0.0.1:{backend_port}"]
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == [f"127.0.0.1:{jp_http_port}"]
    assert seen["x-forwarded-prefix"] == [f"{jp_base_url}lims/proxy/{backend_port}"]
    # hop-by-hop and backend CORS headers do not come back either
    assert "Keep-Alive" not in r.headers
    assert "Access-Control-Allow-Origin" not in r.headers
    assert r.headers["X-Backend"] == "yes"


async def test_absolute_forwards_full_path(proxy_fetch, token, jp_base_url, backend_port):
    r = await proxy_fetch("echo", "x", token=token, absolute=True, params={"q": "1"})
    assert r.code == 200
    echo = json.loads(r.body)
    assert echo["path"] == f"{jp_base_url}lims/proxy/absolute/{backend_port}/echo/x"
    assert echo["query"] == "q=1"


async def test_location_rewritten_under_prefix(proxy_fetch, token, jp_base_url, backend_port):
    prefix = f"{jp_base_url}lims/proxy/{backend_port}"
    cases = {
        "/next": f"{prefix}/next",
        f"http://127.0.0.1:{backend_port}/abs?x=1": f"{prefix}/abs?x=1",
        "relative/page": "relative/page",
        "https://elsewhere.example/": "https://elsewhere.example/",
    }
    for to, expected in cases.items():
        r = await proxy_fetch("redirect", token=token, params={"to": to})
        assert r.code == 302
        assert r.headers["Location"] == expected


async def test_backend_cannot_set_jupyter_cookies(proxy_fetch, token):
    r = await proxy_fetch("cookies", token=token)
    cookies = r.headers.get_list("Set-Cookie")
    assert cookies == ["app=1; Path=/"]


async def test_missing_trailing_slash_redirects(proxy_fetch, token, jp_base_url, backend_port):
    r = await proxy_fetch(token=token)
    assert r.code == 302
    assert r.headers["Location"] == f"{jp_base_url}lims/proxy/{backend_port}/"


async def test_head_request(proxy_fetch, token):
    r = await proxy_fetch("echo", token=token, method="HEAD")
    assert r.code == 200
    assert r.headers["Content-Length"] == "1234"
    assert r.body == b""


# -- CORS ----------------------------------------------------------------------------


async def test_cors_preflight_without_token(proxy_fetch):
    r = await proxy_fetch(
        "echo",
        method="OPTIONS",
        headers={
            "Origin": ELN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-proxy-token, content-type",
        },
    )
    assert r.code == 204
    assert r.headers["Access-Control-Allow-Origin"] == ELN
    assert "X-Proxy-Token" in r.headers["Access-Control-Allow-Headers"]
    assert "POST" in r.headers["Access-Control-Allow-Methods"]


async def test_cors_preflight_from_other_origin_gets_nothing(proxy_fetch):
    r = await proxy_fetch(
        "echo",
        method="OPTIONS",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert (r.code, reason(r)) == (401, "token_missing")
    assert "Access-Control-Allow-Origin" not in r.headers


async def test_cors_actual_request(proxy_fetch, token):
    r = await proxy_fetch("echo", token=token, headers={"Origin": ELN})
    assert r.code == 200
    assert r.headers["Access-Control-Allow-Origin"] == ELN
    r = await proxy_fetch("echo", token=token, headers={"Origin": "https://evil.example"})
    assert r.code == 200
    assert "Access-Control-Allow-Origin" not in r.headers
    # an error for an allowed origin is readable by its JavaScript
    r = await proxy_fetch("echo", headers={"Origin": ELN})
    assert r.code == 401
    assert r.headers["Access-Control-Allow-Origin"] == ELN


# -- bodies ---------------------------------------------------------------------------


async def test_post_body_reaches_backend(proxy_fetch, token):
    r = await proxy_fetch("upload", token=token, method="POST", body=b"a" * 100_000)
    assert json.loads(r.body)["received"] == 100_000


async def test_chunked_request_body(server, token, backend_port):
    url = f"{server}lims/proxy/{backend_port}/upload"
    body = await asyncio.to_thread(_chunked_upload, url, token, [b"x" * 70_000] * 5)
    assert json.loads(body)["received"] == 350_000


def _chunked_upload(url: str, token: str, pieces: list[bytes]) -> bytes:
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request(
        "POST", u.path, body=iter(pieces), headers={"X-Proxy-Token": token}, encode_chunked=True
    )
    return conn.getresponse().read()


async def test_chunked_response_and_event_stream(proxy_fetch, token):
    r = await proxy_fetch("chunked", token=token, params={"n": str(3 * 256 * 1024 + 5)})
    assert r.code == 200 and len(r.body) == 3 * 256 * 1024 + 5
    received: list[tuple[float, bytes]] = []
    start = time.monotonic()
    r = await proxy_fetch(
        "events",
        token=token,
        params={"count": "4", "delay": "0.2"},
        streaming_callback=lambda chunk: received.append((time.monotonic() - start, chunk)),
    )
    assert r.code == 200
    assert b"".join(c for _, c in received) == b"".join(b"data: %d\n\n" % i for i in range(4))
    # the first event arrived long before the stream ended: flushed as it came
    assert received[0][0] < received[-1][0] - 0.4


async def test_a_long_stream_counts_as_activity_while_it_runs(
    proxy_fetch, token, bridge, jp_serverapp
):
    # the idle culler must see a long download or event stream before it ends
    settings = jp_serverapp.web_app.settings
    seen_during: list[object] = []

    def on_chunk(chunk: bytes) -> None:
        seen_during.append(settings.pop("api_last_activity", None))
        bridge.port_proxy._activity_next = 0.0  # no 1 s throttle for this test

    settings.pop("api_last_activity", None)
    bridge.port_proxy._activity_next = 0.0
    r = await proxy_fetch(
        "events", token=token, params={"count": "4", "delay": "0.1"}, streaming_callback=on_chunk
    )
    assert r.code == 200
    # every event but the first (whose write also carried the head) was activity on its own
    assert len(seen_during) >= 3 and all(a is not None for a in seen_during[1:])


async def test_upstream_connections_are_pooled(proxy_fetch, token):
    peers = set()
    for _ in range(20):
        r = await proxy_fetch("peer", token=token)
        peers.add(r.body)
    assert len(peers) == 1


async def test_backend_closing_an_idle_connection_is_survived(proxy_fetch, token):
    # Given a pooled connection the backend has silently closed, a GET still
    # succeeds (detected before reuse, or retried once on a fresh connection)
    for pause in (0.2, 1.5):
        r = await proxy_fetch("drop-later", token=token)
        assert r.code == 200
        await asyncio.sleep(pause)
        r = await proxy_fetch("echo", token=token)
        assert r.code == 200, r.body


async def test_backend_dying_mid_body_aborts_client(proxy_fetch, token):
    for path in ("die", "die-chunked"):
        with pytest.raises((HTTPClientError, OSError, Exception)) as info:
            await proxy_fetch(path, token=token, raise_error=True)
        # never a clean 200 with a truncated body
        assert getattr(info.value, "code", 599) != 200
    # the proxy still works afterwards
    r = await proxy_fetch("echo", token=token)
    assert r.code == 200


# -- websockets -------------------------------------------------------------------------


def ws_request(server, port, path="ws", headers=None, absolute=False):
    kind = "proxy/absolute" if absolute else "proxy"
    url = f"ws{server[4:]}lims/{kind}/{port}/{path}"
    return HTTPRequest(url, headers=headers or {})


@pytest.mark.usefixtures("relay")
async def test_websocket_echo_with_subprotocol(server, backend_port, token, bridge):
    events = []
    bridge.port_proxy.event_logger = type(
        "L", (), {"emit": lambda self, schema_id, data: events.append((schema_id, data))}
    )()
    req = ws_request(server, backend_port, headers={"X-Proxy-Token": token})
    ws = await websocket_connect(req, subprotocols=["nope", "echo.v2"])
    assert ws.selected_subprotocol == "echo.v2"
    await ws.write_message("hello")
    assert await ws.read_message() == "hello"
    await ws.write_message(b"\x00\x01" * 1000, binary=True)
    assert await ws.read_message() == b"\x00\x01" * 1000
    # the backend's headers were filtered as for HTTP
    await ws.write_message("headers")
    seen = {k.lower(): v for k, v in json.loads(await ws.read_message()).items()}
    assert "x-proxy-token" not in seen and token not in json.dumps(seen)
    # the backend's close code reaches the client
    await ws.write_message("close")
    assert await ws.read_message() is None
    assert ws.close_code == 4001
    for _ in range(50):
        if len(events) >= 2:
            break
        await asyncio.sleep(0.02)
    actions = [d["action"] for _, d in events]
    assert actions == ["started", "ended"]
    started, ended = events[0][1], events[1][1]
    assert started["subprotocol"] == "echo.v2" and started["via"] == "token"
    # 4 messages each way, the close counted by its code
    assert ended["messages"] == 7 and ended["closeCode"] == 4001


@pytest.mark.usefixtures("relay")
async def test_websocket_session_events_carry_one_session_id_and_the_bytes_relayed(
    server, backend_port, token, bridge
):
    # Given a websocket through the proxy, its events captured
    events = []
    bridge.port_proxy.event_logger = type(
        "L", (), {"emit": lambda self, schema_id, data: events.append(data)}
    )()
    ws = await websocket_connect(ws_request(server, backend_port, headers={"X-Proxy-Token": token}))
    # When 10,000 bytes go each way (echoed), then the client closes
    await ws.write_message(b"x" * 10_000, binary=True)
    assert await ws.read_message() == b"x" * 10_000
    ws.close(1000)
    for _ in range(100):
        if len(events) >= 2:
            break
        await asyncio.sleep(0.02)
    started, ended = events
    # Then start and end name the same session, and the end counts the bytes
    # relayed each way (payloads plus frame headers, a few bytes each)
    assert started["session"] == ended["session"] and len(started["session"]) == 32
    assert 10_000 < ended["bytesUp"] < 10_100
    assert 10_000 < ended["bytesDown"] < 10_100
    assert "bytesUp" not in started


@pytest.mark.usefixtures("relay")
async def test_websocket_client_close_code_reaches_the_backend(server, backend_port, token):
    req = ws_request(server, backend_port, headers={"X-Proxy-Token": token})
    ws = await websocket_connect(req)
    await ws.write_message("hi")
    assert await ws.read_message() == "hi"
    ws.close(4002, "done here")
    assert await ws.read_message() is None
    codes: list = []
    for _ in range(100):
        r = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{backend_port}/ws-closes")
        codes = json.loads(r.body)["codes"]
        if 4002 in codes:
            break
        await asyncio.sleep(0.02)
    assert 4002 in codes


@pytest.mark.usefixtures("relay")
async def test_websocket_large_and_fragmented_messages(server, backend_port, token):
    req = ws_request(server, backend_port, headers={"X-Proxy-Token": token})
    ws = await websocket_connect(req, max_message_size=16 * 1024 * 1024)
    big = os.urandom(3 * 1024 * 1024)  # many reads on every hop
    await ws.write_message(big, binary=True)
    assert await ws.read_message() == big
    await ws.write_message("frag")  # the backend answers in three frames
    assert await ws.read_message() == "one two three"
    ws.close()


@pytest.mark.usefixtures("relay")
async def test_websocket_backend_message_over_limit_closes_both_with_1009(
    server, backend_port, token, bridge
):
    events = []
    bridge.port_proxy.event_logger = type(
        "L", (), {"emit": lambda self, schema_id, data: events.append(data)}
    )()
    bridge.port_proxy.websocket_max_message_size = 1000
    req = ws_request(server, backend_port, headers={"X-Proxy-Token": token})
    ws = await websocket_connect(req)
    await ws.write_message("big:999")
    assert len(await ws.read_message()) == 999
    await ws.write_message("big:5000")
    assert await ws.read_message() is None
    assert ws.close_code == 1009
    # a message of 13 bytes in three fragments counts as 13 against the limit
    bridge.port_proxy.websocket_max_message_size = 10
    ws = await websocket_connect(req)
    await ws.write_message("frag")
    assert await ws.read_message() is None
    assert ws.close_code == 1009
    for _ in range(100):
        if sum(e["action"] == "ended" for e in events) == 2:
            break
        await asyncio.sleep(0.02)
    assert [e["closeCode"] for e in events if e["action"] == "ended"] == [1009, 1009]


@pytest.mark.usefixtures("relay")
async def test_websocket_compression_negotiated_end_to_end(server, backend_port, token):
    req = ws_request(server, backend_port, path="wsz", headers={"X-Proxy-Token": token})
    ws = await websocket_connect(req, compression_options={})
    assert "permessage-deflate" in ws.headers.get("Sec-WebSocket-Extensions", "")
    text = "compressible " * 10_000
    await ws.write_message(text)
    assert await ws.read_message() == text
    ws.close()


@pytest.mark.usefixtures("relay")
async def test_websocket_refused_upgrade_is_the_backends_answer(server, backend_port, token):
    # the backend has no websocket here: its 404 reaches the client, not a 502
    req = ws_request(server, backend_port, path="nothing-here", headers={"X-Proxy-Token": token})
    with pytest.raises(HTTPClientError) as info:
        await websocket_connect(req)
    assert info.value.code == 404


@pytest.mark.usefixtures("relay")
async def test_websocket_cross_origin_with_owner_cookie_refused(jp_fetch, server, backend_port):
    # a browser's websocket carries the owner's cookie to any site that asks:
    # a cross-site one is refused, a same-site one passes (as Jupyter's own)
    r = await jp_fetch("api", "status")
    cookie = "; ".join(c.split(";", 1)[0] for c in r.headers.get_list("Set-Cookie"))
    assert cookie
    evil = ws_request(
        server, backend_port, headers={"Cookie": cookie, "Origin": "https://evil.example.org"}
    )
    with pytest.raises(HTTPClientError) as info:
        await websocket_connect(evil)
    assert info.value.code == 403
    host = server.split("/")[2]
    same = ws_request(server, backend_port, headers={"Cookie": cookie, "Origin": f"http://{host}"})
    ws = await websocket_connect(same)
    await ws.write_message("hi")
    assert await ws.read_message() == "hi"
    ws.close()


@pytest.mark.usefixtures("relay")
async def test_websocket_ping_propagates(server, backend_port, token):
    req = ws_request(server, backend_port, headers={"X-Proxy-Token": token})
    ws = await websocket_connect(req)
    await ws.write_message("ping-me")
    # the backend pings; the client answers through the proxy; the backend reports the pong
    messages = {await ws.read_message(), await ws.read_message()}
    assert messages == {"ping-me", "pong:hello"}
    ws.close()


@pytest.mark.usefixtures("relay")
async def test_websocket_needs_token(server, backend_port):
    req = ws_request(server, backend_port)
    with pytest.raises(HTTPClientError) as info:
        await websocket_connect(req)
    assert info.value.code == 401
    req = ws_request(server, 1, headers={"X-Proxy-Token": "jlb_bad"})
    with pytest.raises(HTTPClientError) as info:
        await websocket_connect(req)
    assert info.value.code == 401


@pytest.mark.usefixtures("relay")
async def test_websocket_port_not_allowed_and_backend_down(server, token, closed_port):
    req = ws_request(server, 1, headers={"X-Proxy-Token": token})
    with pytest.raises(HTTPClientError) as info:
        await websocket_connect(req)
    assert info.value.code == 403
    req = ws_request(server, closed_port, headers={"X-Proxy-Token": token})
    with pytest.raises(HTTPClientError) as info:
        await websocket_connect(req)
    assert info.value.code == 502


@pytest.mark.usefixtures("relay")
async def test_websocket_max_message_size(server, backend_port, token, bridge):
    bridge.port_proxy.websocket_max_message_size = 1000
    req = ws_request(server, backend_port, headers={"X-Proxy-Token": token})
    ws = await websocket_connect(req)
    await ws.write_message("x" * 2000)
    assert await ws.read_message() is None
    assert ws.close_code == 1009


@pytest.mark.usefixtures("relay")
async def test_websocket_owner_session(jp_ws_fetch, backend_port):
    ws = await jp_ws_fetch("lims", "proxy", str(backend_port), "ws")
    await ws.write_message("hi")
    assert await ws.read_message() == "hi"
    ws.close()


async def test_proxied_traffic_counts_as_activity(proxy_fetch, token, jp_serverapp, bridge):
    bridge.port_proxy._activity_next = 0.0
    before = jp_serverapp.web_app.settings.get("api_last_activity")
    await proxy_fetch("echo", token=token)
    after = jp_serverapp.web_app.settings.get("api_last_activity")
    assert after is not None and after != before


@pytest.mark.usefixtures("relay")
async def test_websocket_traffic_counts_as_activity(
    server, backend_port, token, jp_serverapp, bridge
):
    req = ws_request(server, backend_port, headers={"X-Proxy-Token": token})
    ws = await websocket_connect(req)
    settings = jp_serverapp.web_app.settings
    settings.pop("api_last_activity", None)
    bridge.port_proxy._activity_next = 0.0
    await ws.write_message("hi")
    assert await ws.read_message() == "hi"
    assert settings.get("api_last_activity") is not None
    ws.close()


async def test_plain_path_without_tornado_internals(proxy_fetch, token, monkeypatch):
    # Given a tornado version the fast path was not tested on, the plain path
    # (no header object swap, de-chunk and let tornado re-chunk) gives the same answers
    from jupyter_lims_bridge.proxy import upstream

    monkeypatch.setattr(upstream, "FAST_PATH", False)
    r = await proxy_fetch("chunked", token=token, params={"n": str(700_000)})
    assert r.code == 200 and len(r.body) == 700_000
    r = await proxy_fetch("bytes", token=token, params={"n": str(300_000)})
    assert r.code == 200 and len(r.body) == 300_000
    r = await proxy_fetch("echo", token=token)
    assert r.code == 200 and r.headers["X-Backend"] == "yes"
    assert "Keep-Alive" not in r.headers


async def test_no_etag_added(proxy_fetch, token):
    # /bytes flushes its head early, so the backend sends no Etag of its own
    r = await proxy_fetch("bytes", token=token, params={"n": "100"})
    assert r.code == 200 and len(r.body) == 100
    assert "Etag" not in r.headers


@pytest.mark.usefixtures("relay")
async def test_websocket_oversized_control_frame_closes_both_with_1002(
    server, backend_port, token, bridge
):
    # Given a 1000-byte message limit, when the client sends a "ping" whose
    # header declares 2^40 bytes and then streams 25 MiB (issue #9, item 8)
    bridge.port_proxy.websocket_max_message_size = 1000
    req = ws_request(server, backend_port, headers={"X-Proxy-Token": token})
    ws = await websocket_connect(req)
    await ws.write_message("hi")
    assert await ws.read_message() == "hi"
    stream = ws.protocol.stream
    stream.write(b"\x89\xff" + (1 << 40).to_bytes(8, "big") + b"\x00\x00\x00\x00")
    piece = b"x" * (1024 * 1024)
    for _ in range(25):
        try:
            await stream.write(piece)
        except Exception:
            break  # the proxy hung up: nothing more goes out
    # Then the client is closed with 1002 and the backend got a 1002 close, not the bytes
    message = await asyncio.wait_for(ws.read_message(), 10)
    assert message is None
    assert ws.close_code == 1002
    codes: list = []
    for _ in range(100):
        r = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{backend_port}/ws-closes")
        codes = json.loads(r.body)["codes"]
        if 1002 in codes:
            break
        await asyncio.sleep(0.02)
    assert 1002 in codes


# -- body framing is checked before the backend sees anything (issue #9, item 10) -----


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        b"Content-Length: 5\r\nContent-Length: 5\r\n",  # tornado merges these
        b"Content-Length: 5, 5\r\n",  # and this
        b"Content-Length: 5\r\nContent-Length: 6\r\n",
        b"Content-Length: +5\r\n",
        b"Content-Length: -1\r\n",
        b"Content-Length: 0x5\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Transfer-Encoding: chunked, identity\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: identity\r\n",
        b"Transfer-Encoding: xchunked\r\n",
    ],
)
async def test_ambiguous_body_framing_is_refused_before_the_backend(
    server, token, lenient, framing, jp_base_url
):
    # Given a lenient backend, when a client sends a request whose body
    # length two parsers could read differently
    before = len(lenient.requests)
    path = f"{server_path(server)}lims/proxy/{lenient.port}/x"
    data = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Proxy-Token: {token}\r\n".encode()
        + framing
        + b"\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    status, body = await asyncio.to_thread(raw_request, server, data)
    # Then it is answered 400 bad_request and the backend saw nothing at all
    assert status == 400
    assert json.loads(body)["reason"] == "bad_request"
    await asyncio.sleep(0.05)
    assert lenient.requests[before:] == []


async def test_plain_body_framing_still_passes(server, token, backend_port):
    path = f"{server_path(server)}lims/proxy/{backend_port}/upload"
    for framing, body in (
        (b"Content-Length: 2\r\n", b"hi"),
        (b"Transfer-Encoding: Chunked\r\n", b"2\r\nhi\r\n0\r\n\r\n"),
    ):
        data = (
            f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Proxy-Token: {token}\r\n".encode()
            + framing
            + b"\r\n"
            + body
        )
        status, answer = await asyncio.to_thread(raw_request, server, data)
        assert status == 200, answer
        assert json.loads(answer)["received"] == 2


# -- credentials in the query, in every spelling (issue #9, item 6) ---------------------

_CREDENTIAL_QUERY = (
    "token=SECRET1&_xsrf=SECRET2&%74oken=SECRET3&%5Fxsrf=SECRET4&%5fxsrf=SECRET5"
    "&%74%6F%6B%65%6E=SECRET6&%74%6f%6b%65%6e=SECRET7&token=SECRET8&_%78srf=SECRET9"
    "&keep=1&k%20e+y=a%2Fb&x=%74oken&token2=t&_xsrfx=y&empty&="
)


def _get(url: str, headers: dict[str, str]) -> bytes:
    """A GET whose query goes out exactly as written (tornado's client would re-encode)."""
    import urllib.request

    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10).read()


@pytest.mark.parametrize(
    "query, kept",
    [
        (_CREDENTIAL_QUERY, "keep=1&k%20e+y=a%2Fb&x=%74oken&token2=t&_xsrfx=y&empty&="),
        ("%74oken=SECRET1&%5Fxsrf=SECRET2&keep=1", "keep=1"),
        ("keep=1&%74%6f%6B%65%6E=SECRET1&%5fxsrf=SECRET2", "keep=1"),
        ("%74oken=SECRET1&%74oken=SECRET1", ""),
        ("_xsrf=SECRET2&%74oken=SECRET1", ""),
    ],
)
async def test_owner_session_query_credentials_never_reach_the_backend(
    server, jp_auth_header, lenient, query, kept
):
    # Given the owner's session, when the query holds Jupyter's token and _xsrf
    # plain, percent-encoded in either case, and repeated (a browser's link)
    jupyter_token = jp_auth_header["Authorization"].split(" ", 1)[1]
    for i in (1, 3, 6, 7, 8):
        query = query.replace(f"SECRET{i}", jupyter_token)
    url = f"{server}lims/proxy/{lenient.port}/page?{query}"
    body = await asyncio.to_thread(_get, url, {})
    seen = json.loads(body)["path"]
    # Then none of them reaches the backend, and the rest passes byte for byte
    assert jupyter_token not in seen and "SECRET" not in seen
    assert seen == (f"/page?{kept}" if kept else "/page")


async def test_token_caller_query_loses_every_xsrf_spelling(server, token, lenient):
    # a proxy-token client's own ?token= is its backend's business; _xsrf never is
    url = f"{server}lims/proxy/{lenient.port}/page?{_CREDENTIAL_QUERY}"
    body = await asyncio.to_thread(_get, url, {"X-Proxy-Token": token})
    seen = json.loads(body)["path"]
    assert "SECRET2" not in seen and "SECRET4" not in seen
    assert "SECRET5" not in seen and "SECRET9" not in seen
    assert seen == (
        "/page?token=SECRET1&%74oken=SECRET3&%74%6F%6B%65%6E=SECRET6&%74%6f%6b%65%6e=SECRET7"
        "&token=SECRET8&keep=1&k%20e+y=a%2Fb&x=%74oken&token2=t&_xsrfx=y&empty&="
    )


# -- forwarding headers come from the proxy, not the client (issue #9, item 9) ------------


async def test_client_forwarding_headers_do_not_reach_the_backend(
    proxy_fetch, token, jp_base_url, backend_port, jp_http_port
):
    # Given a client writing its own forwarding headers (a backend building
    # URLs from them would redirect the user to the attacker's host)
    r = await proxy_fetch(
        "echo",
        token=token,
        headers={
            "X-Forwarded-Host": "evil.example",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Port": "4443",
            "X-Forwarded-Prefix": "/evil",
            "Forwarded": "for=6.6.6.6;host=evil.example;proto=https",
            "X-Real-Ip": "6.6.6.6",
            "X-Forwarded-For": "6.6.6.6",
            "X-Scheme": "https",
        },
    )
    assert r.code == 200
    seen = json.loads(r.body)["headers"]
    # Then the backend sees the request as the proxy saw it
    assert "evil" not in json.dumps(seen)
    assert seen["x-forwarded-host"] == [f"127.0.0.1:{jp_http_port}"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert "x-forwarded-port" not in seen and "x-scheme" not in seen
    assert seen["x-forwarded-prefix"] == [f"{jp_base_url}lims/proxy/{backend_port}"]
    assert seen["x-real-ip"] == ["127.0.0.1"]
    assert seen["forwarded"] == [f'for="127.0.0.1";host="127.0.0.1:{jp_http_port}";proto=http']
    # X-Forwarded-For is a chain each hop appends to: the client's part, then our peer
    assert seen["x-forwarded-for"] == ["6.6.6.6, 127.0.0.1"]


async def test_forwarding_headers_behind_a_trusted_front_proxy(
    proxy_fetch, token, bridge, jp_http_port
):
    # Behind JupyterHub's proxy (trust_xheaders), the client is the entry that
    # proxy appended and the protocol is the one it reported; X-Real-Ip from the
    # client (which configurable-http-proxy passes through) is not believed
    bridge.port_proxy.trust_xheaders = True
    r = await proxy_fetch(
        "echo",
        token=token,
        headers={
            "X-Forwarded-For": "6.6.6.6, 203.0.113.7",
            "X-Real-Ip": "6.6.6.6",
            "X-Forwarded-Host": "evil.example",
        },
    )
    seen = json.loads(r.body)["headers"]
    assert seen["x-real-ip"] == ["203.0.113.7"]
    assert seen["forwarded"][0].startswith('for="203.0.113.7";')
    assert seen["x-forwarded-host"] == [f"127.0.0.1:{jp_http_port}"]
    assert seen["x-forwarded-for"] == ["6.6.6.6, 203.0.113.7, 127.0.0.1"]


# -- pooled connections never carry one caller's bytes to another (issue #9, item 1) ------

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def _attack(
    server: str, port: int, token: str, method: str, path: str = "/x", body: bytes = SMUGGLED
) -> tuple[int, bytes]:
    """A proxy-token client's request whose body is itself a request."""
    head = (
        f"{method} {server_path(server)}lims/proxy/{port}{path} HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nX-Proxy-Token: {token}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return raw_request(server, head + body)


async def _owner_get(jp_fetch, port: int, path: str) -> dict:
    r = await jp_fetch("lims", "proxy", str(port), path, raise_error=False)
    assert r.code == 200, r.body
    return json.loads(r.body)


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE", "OPTIONS", "POST"])
async def test_a_smuggled_request_in_a_body_reaches_nobody_else(
    server, token, lenient, jp_fetch, method
):
    # Given a backend that leaves bodies unread (http.server, keep-alive; its
    # POST answers before reading the body) and a proxy-token client that sends
    # a request with a body that is itself a request
    status, _ = await asyncio.to_thread(_attack, server, lenient.port, token, method)
    assert status == 200
    await asyncio.sleep(0.1)  # the backend has answered the smuggled request by now
    # When the owner then uses the proxy, it gets the answer to its own request
    assert (await _owner_get(jp_fetch, lenient.port, "owner-private"))["path"] == "/owner-private"
    # and the attacker's next request gets its own answer, not the owner's page
    r = await asyncio.to_thread(
        _get, f"{server}lims/proxy/{lenient.port}/next", {"X-Proxy-Token": token}
    )
    assert json.loads(r)["path"] == "/next"
    # and the backend never parsed the body as a request of its own
    assert not any(path == "/smuggled" for _, path, _ in lenient.requests)


async def test_a_head_answered_with_a_body_does_not_desync_the_next_request(
    server, token, lenient, jp_fetch
):
    # Given a backend that (wrongly) sends a body after a HEAD's head
    r = await asyncio.to_thread(
        lambda: raw_request(
            server,
            (
                f"HEAD {server_path(server)}lims/proxy/{lenient.port}/head-with-body HTTP/1.1\r\n"
                f"Host: 127.0.0.1\r\nX-Proxy-Token: {token}\r\n\r\n"
            ).encode(),
        )
    )
    assert r[0] == 200
    await asyncio.sleep(0.05)
    # Then the next request of the same caller, and the owner's, get their own answers
    r = await asyncio.to_thread(
        _get, f"{server}lims/proxy/{lenient.port}/mine", {"X-Proxy-Token": token}
    )
    assert json.loads(r)["path"] == "/mine"
    assert (await _owner_get(jp_fetch, lenient.port, "owner"))["path"] == "/owner"


async def test_bytes_left_in_the_read_buffer_unpool_the_connection(server, token, lenient):
    # Given a backend whose answer arrives twice in one write (the second copy
    # sits in tornado's read buffer once the first is read)
    r = await asyncio.to_thread(
        _get, f"{server}lims/proxy/{lenient.port}/double", {"X-Proxy-Token": token}
    )
    assert json.loads(r)["path"] == "/double"
    # Then the same caller's next request is not answered with the leftover copy
    r = await asyncio.to_thread(
        _get, f"{server}lims/proxy/{lenient.port}/after", {"X-Proxy-Token": token}
    )
    assert json.loads(r)["path"] == "/after"


async def test_bytes_after_a_chunked_body_never_reach_the_client(server, token, lenient):
    # Given a backend whose chunked answer arrives twice in one write, and a
    # client on one keep-alive connection
    host, port = server_address(server)
    proxy = f"{server_path(server)}lims/proxy/{lenient.port}"
    reader, writer = await asyncio.open_connection(host, port)

    async def ask(path: str) -> tuple[bytes, bytes]:
        writer.write(
            f"GET {proxy}/{path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"X-Proxy-Token: {token}\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if b"chunked" in head.lower():
            return head, await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 10)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        return head, await asyncio.wait_for(reader.readexactly(length), 10)

    try:
        # When it asks for that answer, then for another
        _, first = await ask("double-chunked")
        head, second = await ask("after")
        # Then it got the first body, with its framing, and nothing of the copy:
        # its next answer is the backend's answer to its next request
        assert first == b"5\r\nfirst\r\n0\r\n\r\n"
        assert head.startswith(b"HTTP/1.1 200 ")
        assert json.loads(second)["path"] == "/after"
    finally:
        writer.close()


async def test_pooled_connections_are_kept_apart_per_caller(
    proxy_fetch, bridge, jp_fetch, backend_port
):
    # Given two proxy tokens and the owner's session, each reusing its connections
    a = bridge.proxy_tokens.create("a")["token"]
    b = bridge.proxy_tokens.create("b")["token"]
    peers: dict[str, set[bytes]] = {"a": set(), "b": set(), "owner": set()}
    for _ in range(3):
        peers["a"].add((await proxy_fetch("peer", token=a)).body)
        peers["b"].add((await proxy_fetch("peer", token=b)).body)
        peers["owner"].add((await jp_fetch("lims", "proxy", str(backend_port), "peer")).body)
    # Then each caller kept one connection of its own, shared with nobody
    assert all(len(p) == 1 for p in peers.values()), peers
    assert len(peers["a"] | peers["b"] | peers["owner"]) == 3


def test_the_pool_keeps_only_connections_between_two_messages():
    from jupyter_lims_bridge.proxy.upstream import UpstreamPool

    class Stream:
        def __init__(self, buffered: int, reading: bool = False) -> None:
            self._read_buffer_size = buffered
            self._reading = reading
            self.closed_ = False

        def closed(self) -> bool:
            return self.closed_

        def reading(self) -> bool:
            return self._reading

        def writing(self) -> bool:
            return False

        def close(self) -> None:
            self.closed_ = True

    pool = UpstreamPool()
    for stream in (Stream(5), Stream(0, reading=True)):
        pool.release(8050, "session", stream)  # type: ignore[arg-type]
        assert stream.closed_
    clean = Stream(0)
    pool.release(8050, "session", clean)  # type: ignore[arg-type]
    assert not clean.closed_
    assert [s for s, _ in pool._idle[(8050, "session")]] == [clean]
    assert list(pool._idle) == [(8050, "session")]  # kept for that caller only


# -- live sessions end when their client is no longer admitted (issue #9, item 2) ---------

CAUSES = ["revoke_api", "revoke_cli", "expiry", "mode_disabled"]


async def _end_admission(cause: str, bridge, jp_fetch, created: dict) -> None:
    if cause == "revoke_api":
        r = await jp_fetch("lims", "api", "tokens", created["id"], method="DELETE")
        assert r.code == 204
    elif cause == "revoke_cli":
        # `jupyter lims-bridge tokens revoke` edits the file from another process
        from jupyter_lims_bridge.proxy_tokens import ProxyTokenStore

        ProxyTokenStore(bridge.proxy_tokens.path).revoke(created["id"])
    elif cause == "expiry":
        real_clock = bridge.proxy_tokens.clock
        bridge.proxy_tokens.clock = lambda: real_clock() + 3600
    else:
        r = await jp_fetch(
            "lims", "api", "proxy", method="PUT", body=json.dumps({"mode": "disabled"})
        )
        assert r.code == 200


@pytest.mark.parametrize("cause", CAUSES)
async def test_a_live_websocket_is_closed_when_its_admission_ends(
    server, backend_port, bridge, jp_fetch, cause
):
    # Given a websocket opened with a proxy token (expiring in an hour)
    created = bridge.proxy_tokens.create("ws", expires_in=3000)
    req = ws_request(server, backend_port, headers={"X-Proxy-Token": created["token"]})
    ws = await websocket_connect(req)
    await ws.write_message("hi")
    assert await ws.read_message() == "hi"
    # When the token is revoked (API or CLI), expires, or the mode turns disabled
    started = time.monotonic()
    await _end_admission(cause, bridge, jp_fetch, created)
    # Then the client gets a 1008 close within a second, and the backend a close too
    message = await asyncio.wait_for(ws.read_message(), 3)
    elapsed = time.monotonic() - started
    assert message is None
    assert ws.close_code == 1008
    assert elapsed < 1.5, elapsed
    codes: list = []
    for _ in range(100):
        r = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{backend_port}/ws-closes")
        codes = json.loads(r.body)["codes"]
        if 1008 in codes:
            break
        await asyncio.sleep(0.02)
    assert 1008 in codes
    assert not bridge.port_proxy.sessions


@pytest.mark.parametrize("cause", CAUSES)
async def test_a_live_stream_is_aborted_when_its_admission_ends(
    server, backend_port, bridge, jp_fetch, cause
):
    # Given an event stream (one event every 0.1 s for 20 s) let in by a proxy token
    created = bridge.proxy_tokens.create("stream", expires_in=3000)
    chunks: list[bytes] = []
    first = asyncio.Event()

    def on_chunk(chunk: bytes) -> None:
        chunks.append(chunk)
        first.set()

    fetch = asyncio.ensure_future(
        AsyncHTTPClient().fetch(
            f"{server}lims/proxy/{backend_port}/events?count=200&delay=0.1",
            headers={"X-Proxy-Token": created["token"]},
            streaming_callback=on_chunk,
            raise_error=False,
            request_timeout=30,
        )
    )
    await asyncio.wait_for(first.wait(), 10)
    # When its admission ends
    started = time.monotonic()
    await _end_admission(cause, bridge, jp_fetch, created)
    # Then the stream is aborted within a second, never ended as if complete
    with pytest.raises((HTTPClientError, OSError)):  # the connection closed mid-body
        await asyncio.wait_for(fetch, 5)
    elapsed = time.monotonic() - started
    assert elapsed < 1.5, elapsed
    assert len(chunks) < 100
    assert not bridge.port_proxy.sessions


async def test_open_mode_sessions_end_when_the_mode_returns_to_token(
    server, backend_port, bridge, jp_fetch, jp_ws_fetch
):
    # Given a websocket let in by mode open, and one by the owner's session
    bridge.set_proxy_mode("open")
    anonymous = await websocket_connect(ws_request(server, backend_port))
    bridge.set_proxy_mode("token")
    assert await asyncio.wait_for(anonymous.read_message(), 3) is None
    assert anonymous.close_code == 1008
    bridge.set_proxy_mode("open")
    anonymous = await websocket_connect(ws_request(server, backend_port))
    await anonymous.write_message("hi")
    assert await anonymous.read_message() == "hi"
    bridge.set_proxy_mode("token")
    owner = await jp_ws_fetch("lims", "proxy", str(backend_port), "ws")
    # When the owner sets the mode back to token (API)
    r = await jp_fetch("lims", "api", "proxy", method="PUT", body=json.dumps({"mode": "token"}))
    assert r.code == 200
    # Then the open-mode client is closed with 1008; the owner's session stays
    assert await asyncio.wait_for(anonymous.read_message(), 3) is None
    assert anonymous.close_code == 1008
    await owner.write_message("still here")
    assert await owner.read_message() == "still here"
    owner.close()


async def test_no_sweeper_runs_without_live_sessions(proxy_fetch, token, bridge):
    for _ in range(3):
        assert (await proxy_fetch("echo", token=token)).code == 200
    assert not bridge.port_proxy.sessions
    sweeper = bridge.port_proxy._sweeper
    assert sweeper is None or sweeper.done()


async def test_revoking_one_token_leaves_the_others_sessions(server, backend_port, bridge):
    a = bridge.proxy_tokens.create("a")
    b = bridge.proxy_tokens.create("b")
    ws_a = await websocket_connect(
        ws_request(server, backend_port, headers={"X-Proxy-Token": a["token"]})
    )
    ws_b = await websocket_connect(
        ws_request(server, backend_port, headers={"X-Proxy-Token": b["token"]})
    )
    bridge.proxy_tokens.revoke(a["id"])
    assert await asyncio.wait_for(ws_a.read_message(), 3) is None
    assert ws_a.close_code == 1008
    await asyncio.sleep(0.3)  # another sweep has passed
    await ws_b.write_message("still here")
    assert await ws_b.read_message() == "still here"
    ws_b.close()


async def test_an_answer_before_the_body_was_read_does_not_poison_the_pool(
    proxy_fetch, token, jp_fetch, backend_port
):
    # Given a backend that answers a POST before reading its body (then hangs up)
    r = await proxy_fetch("early", token=token, method="POST", body=b"x" * (1024 * 1024))
    assert r.code in (413, 502)
    # Then the next requests with a body, from the owner and from the same
    # token, reach the backend on a connection of their own
    for fetch in (
        lambda: jp_fetch(
            "lims",
            "proxy",
            str(backend_port),
            "upload",
            method="POST",
            body=b"y" * 10,
            raise_error=False,
        ),
        lambda: proxy_fetch("upload", token=token, method="POST", body=b"y" * 10),
    ):
        r = await fetch()
        assert r.code == 200, r.body
        assert json.loads(r.body)["received"] == 10


@pytest.mark.usefixtures("relay")
async def test_websocket_bytes_sent_with_the_handshakes_are_relayed(server, token, closed_port):
    # Given a backend that sends its first frame in the same write as its 101,
    # and a client that sends its first frame right behind its handshake (both
    # likely already read by tornado when the tunnel takes over)
    seen: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = re.search(rb"(?im)^sec-websocket-key: *(\S+)", head).group(1)
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
            + accept
            + b"\r\n\r\n"
            + b"\x81\x05hello"
        )
        seen.set_result(await reader.readexactly(len(CLIENT_FRAME)))
        await reader.read()  # until the proxy hangs up
        writer.close()

    listener = await asyncio.start_server(backend, "127.0.0.1", closed_port)
    try:
        host, port = server_address(server)
        reader, writer = await asyncio.open_connection(host, port)
        path = f"/{server.split('/', 3)[3]}lims/proxy/{closed_port}/ws"
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nX-Proxy-Token: {token}\r\n\r\n".encode()
            + CLIENT_FRAME
        )
        # When the tunnel is up
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101 ")
        # Then each side gets the other's first frame, whole and in order
        assert await asyncio.wait_for(reader.readexactly(7), 10) == b"\x81\x05hello"
        assert await asyncio.wait_for(seen, 10) == CLIENT_FRAME
        writer.close()
    finally:
        listener.close()
        await listener.wait_closed()


@pytest.mark.usefixtures("relay")
async def test_websocket_backpressure_a_client_that_does_not_read_stops_the_backend(
    server, backend_port, token
):
    # Given a backend that writes 64 KiB messages as fast as the proxy takes them
    async def flooded() -> int:
        r = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{backend_port}/ws-flooded")
        return json.loads(r.body)["messages"]

    before = await flooded()
    ws = await websocket_connect(ws_request(server, backend_port, headers={"X-Proxy-Token": token}))
    await ws.write_message("flood:1024")  # 64 MiB
    # When the client reads nothing for a while
    taken = -1
    for _ in range(40):
        await asyncio.sleep(0.05)
        now = await flooded() - before
        if now == taken:
            break  # the backend is stalled
        taken = now
    # Then the proxy stopped reading from the backend: what it took is what the
    # sockets' buffers hold plus its own high-water mark, far from 64 MiB
    assert 0 < taken * 64 < 32 * 1024, taken
    # and once the client reads, all of it arrives
    for _ in range(1024):
        assert len(await asyncio.wait_for(ws.read_message(), 10)) == 65536
    ws.close()


async def test_which_requests_take_the_fast_path(
    proxy_fetch, token, proxy_path, monkeypatch, jp_serverapp
):
    # Given the proxy handler's requests counted
    from jupyter_lims_bridge.handlers.proxy import ProxyHandler

    handled = []
    prepare = ProxyHandler.prepare

    async def counting_prepare(self):
        handled.append(self.request.method)
        await prepare(self)

    monkeypatch.setattr(ProxyHandler, "prepare", counting_prepare)
    # and the requests that reached tornado's routing (the front serves others itself)
    web_app = jp_serverapp.web_app
    routed = []
    find_handler = web_app.find_handler

    def counting_find_handler(request, **kwargs):
        routed.append(request.method)
        return find_handler(request, **kwargs)

    monkeypatch.setattr(web_app, "find_handler", counting_find_handler)
    fast = proxy_path in ("front", "fast")
    # When bodyless requests carry a proxy token: the fast path has them
    assert (await proxy_fetch("echo", token=token)).code == 200
    assert (await proxy_fetch("echo", token=token, method="DELETE")).code == 200
    assert (await proxy_fetch("echo", token="jlb_wrong")).code == 401  # refused there too
    assert handled == ([] if fast else ["GET", "DELETE", "GET"])
    # (the front's before tornado reads the connection at all)
    assert routed == ([] if proxy_path == "front" else ["GET", "DELETE", "GET"])
    handled.clear()
    # and the handler has a body, the owner's session, and a Host not checked yet
    r = await proxy_fetch("echo", token=token, method="POST", body=b"x")
    assert r.code == 200
    r = await proxy_fetch(
        "echo", headers={"Authorization": f"token {jp_serverapp.identity_provider.token}"}
    )
    assert r.code == 200
    r = await proxy_fetch("echo", token=token, headers={"Host": "elsewhere.example"})
    assert (r.code, reason(r)) == (403, "host_not_allowed")
    assert handled == ["POST", "GET", "GET"]


async def test_a_client_leaving_mid_stream_leaves_nothing_behind(
    server, backend_port, token, bridge, proxy_fetch
):
    # Given a client reading an event stream (one event every 3 s) through the proxy
    host, port = server_address(server)
    path = f"{server_path(server)}lims/proxy/{backend_port}/events?count=5&delay=3"
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nX-Proxy-Token: {token}\r\n\r\n".encode()
    )
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    await asyncio.wait_for(reader.readuntil(b"\n\n"), 10)  # the first event
    assert bridge.port_proxy.sessions  # a body stream is a live session
    # When it hangs up between two events
    writer.close()
    # Then its session ends at once (not at the next event), its half-read upstream
    # connection is not pooled, and the next request gets a whole, fresh answer
    for _ in range(50):
        if not bridge.port_proxy.sessions:
            break
        await asyncio.sleep(0.02)
    assert not bridge.port_proxy.sessions
    r = await proxy_fetch("bytes", token=token, params={"n": 1000})
    assert r.code == 200 and len(r.body) == 1000


async def test_an_http10_keep_alive_client_finds_the_end_of_every_body(server, backend_port, token):
    host, port = server_address(server)
    proxy = f"{server_path(server)}lims/proxy/{backend_port}"

    def ask(path: str) -> bytes:
        return (
            f"GET {proxy}/{path} HTTP/1.0\r\nHost: {host}:{port}\r\n"
            f"Connection: keep-alive\r\nX-Proxy-Token: {token}\r\n\r\n"
        ).encode()

    # Given an HTTP/1.0 client that asks to keep its connection
    reader, writer = await asyncio.open_connection(host, port)
    try:
        # When a body comes with a length, the connection is kept
        writer.write(ask("bytes?n=1000"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert b"keep-alive" in head.lower()
        assert len(await asyncio.wait_for(reader.readexactly(1000), 10)) == 1000
        # and when one comes without (chunked upstream: a 1.0 client cannot take
        # chunks), it ends where the connection closes, instead of never
        writer.write(ask("chunked?n=100000"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert b"content-length" not in head.lower() and b"chunked" not in head.lower()
        body = await asyncio.wait_for(reader.read(), 10)
        assert len(body) == 100_000
    finally:
        writer.close()
