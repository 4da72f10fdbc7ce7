"""Answers given before a request's body is read keep the client's connection usable.

Given one keep-alive connection to the server (as configurable-http-proxy and
browsers keep them), when the bridge answers a request before reading its body
(a proxy refusal, a CORS preflight, the proxy's slash redirect, an open body
that is too large), then either the same connection serves the next request,
or the answer says ``Connection: close``. tornado closes a connection whose
request body a ``stream_request_body`` handler did not read; answered silently,
the next request on that connection met a reset (seen as configurable-http-proxy
answering 503 "read ECONNRESET" for a proxied request).
"""

from __future__ import annotations

import asyncio

import pytest

from .support.net import read_response

#: every test runs on both of the proxy's paths (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("proxy_path")

ELN = "https://eln.example.org"
PORT = 18777  # allowed, nothing listens: no request here reaches a backend


@pytest.fixture
def bridge_config():
    return {"allowed_ports": [PORT], "cors_origins": [ELN]}


async def exchange(reader, writer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` on the open connection; read one whole response."""
    writer.write(request)
    await writer.drain()
    return await read_response(reader)


def get(path: str, *extra: str) -> bytes:
    return ("\r\n".join([f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *extra]) + "\r\n\r\n").encode()


@pytest.mark.parametrize(
    "first, status",
    [
        ("refused: no token", 401),
        ("refused: wrong token", 401),
        ("CORS preflight", 204),
        ("slash redirect", 302),
    ],
)
async def test_an_early_answer_to_a_bodyless_request_keeps_the_connection(
    http_server_client, jp_http_port, jp_base_url, bridge, first, status
):
    # Given one keep-alive connection to the server
    proxy = f"{jp_base_url}lims/proxy/{PORT}"
    token = bridge.proxy_tokens.create("keepalive")["token"]
    requests = {
        "refused: no token": get(f"{proxy}/x"),
        "refused: wrong token": get(f"{proxy}/x", "X-Proxy-Token: jlb_wrong"),
        "CORS preflight": (
            f"OPTIONS {proxy}/x HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {ELN}\r\n"
            "Access-Control-Request-Method: POST\r\n\r\n"
        ).encode(),
        "slash redirect": get(proxy, f"X-Proxy-Token: {token}"),
    }
    reader, writer = await asyncio.open_connection("127.0.0.1", jp_http_port)
    try:
        # When the bridge answers a request without a body before reaching any backend
        code, headers, _ = await exchange(reader, writer, requests[first])
        assert code == status
        assert headers.get("connection", "").lower() != "close"
        # Then the same connection serves the next request
        code, _, body = await exchange(reader, writer, get(f"{proxy}/y"))
        assert code == 401 and b"token_missing" in body
    finally:
        writer.close()


async def test_a_refused_request_with_an_unread_body_says_connection_close(
    http_server_client, jp_http_port, jp_base_url
):
    # Given a proxied POST whose body the bridge will not read (no token)
    reader, writer = await asyncio.open_connection("127.0.0.1", jp_http_port)
    try:
        request = (
            f"POST {jp_base_url}lims/proxy/{PORT}/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Length: 100000\r\n\r\n"
        ).encode() + b"x" * 1000
        # When it is refused
        code, headers, _ = await exchange(reader, writer, request)
        # Then the answer tells the client not to reuse the connection
        assert code == 401
        assert headers.get("connection", "").lower() == "close"
    finally:
        writer.close()


async def test_an_open_body_refused_as_too_large_says_connection_close(
    http_server_client, jp_http_port, jp_base_url
):
    reader, writer = await asyncio.open_connection("127.0.0.1", jp_http_port)
    try:
        request = (
            f"POST {jp_base_url}lims/api/open HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json\r\nContent-Length: 40000000\r\n\r\n"
        ).encode()
        code, headers, body = await exchange(reader, writer, request)
        assert code == 413 and b"body_too_large" in body
        assert headers.get("connection", "").lower() == "close"
    finally:
        writer.close()
