"""The port proxy end to end through JupyterHub and configurable-http-proxy.

Given alice's server spawned by a real hub, a backend on one of her allowed
ports and a proxy token she created through her own API, when a client with
no hub cookie calls ``/user/alice/lims/proxy/<port>/`` with only
``X-Proxy-Token``, then it reaches the backend; without the token it gets 401,
on a port outside the list 403, and a websocket behaves the same way.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.e2e

BACKEND = Path(__file__).resolve().parents[1] / "support" / "proxy_backend.py"
USER = "alice"


def _free_allowed_port(ports: range) -> int:
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip(f"no free port in {ports}")


@pytest.fixture(scope="module")
def backend(hub) -> Iterator[int]:
    port = _free_allowed_port(hub.allowed_ports)
    proc = subprocess.Popen(
        [sys.executable, str(BACKEND), str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def proxy_token(hub, backend) -> str:
    session = hub.user_session(USER)
    r = session.post(
        hub.user_url(USER) + "lims/api/tokens",
        json={"name": "e2e", "ports": [backend]},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    return r.json()["token"]


def test_token_alone_reaches_the_service(hub, backend, proxy_token):
    url = hub.user_url(USER) + f"lims/proxy/{backend}/echo/x?y=1"
    forged = {
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Proto": "https",
        "Forwarded": "host=evil.example",
        "X-Real-Ip": "10.6.6.6",
    }
    r = requests.get(
        url, headers={"X-Proxy-Token": proxy_token, **forged}, timeout=30, allow_redirects=False
    )
    assert r.status_code == 200, r.text
    echo = r.json()
    assert echo["path"] == "/echo/x" and echo["query"] == "y=1"
    seen = json.dumps(echo["headers"])
    assert proxy_token not in seen
    assert echo["headers"]["x-forwarded-prefix"] == [f"/user/{USER}/lims/proxy/{backend}"]
    # the hub's view of the request, not the client's claims (issue #9, item 9)
    assert "evil.example" not in seen and "10.6.6.6" not in seen
    assert echo["headers"]["x-forwarded-host"] == [hub.user_url(USER).split("/")[2]]
    assert echo["headers"]["x-forwarded-proto"] == ["http"]


def test_without_token_401(hub, backend, proxy_token):
    r = requests.get(
        hub.user_url(USER) + f"lims/proxy/{backend}/echo", timeout=30, allow_redirects=False
    )
    assert r.status_code == 401
    assert r.json()["reason"] == "token_missing"


def test_port_outside_the_list_403(hub, backend, proxy_token):
    outside = hub.allowed_ports[-1] + 100
    # the token is scoped to the backend's port: a valid token learns the refusal
    for port in (
        outside,
        hub.allowed_ports[-1] if hub.allowed_ports[-1] != backend else backend - 1,
    ):
        r = requests.get(
            hub.user_url(USER) + f"lims/proxy/{port}/echo",
            headers={"X-Proxy-Token": proxy_token},
            timeout=30,
        )
        assert r.status_code == 403, (port, r.text)
        assert r.json()["reason"] == "port_not_allowed"


def test_hub_session_cookie_does_not_reach_the_service(hub, backend, proxy_token):
    session = hub.user_session(USER)
    r = session.get(hub.user_url(USER) + f"lims/proxy/{backend}/echo", timeout=30)
    assert r.status_code == 200, r.text
    cookie = " ".join(r.json()["headers"].get("cookie", []))
    assert "jupyterhub-" not in cookie and "_xsrf" not in cookie


def test_websocket_with_token(hub, backend, proxy_token):
    from tornado.httpclient import HTTPClientError, HTTPRequest
    from tornado.websocket import websocket_connect

    ws_url = "ws" + hub.user_url(USER)[4:] + f"lims/proxy/{backend}/ws"

    async def scenario() -> None:
        ws = await websocket_connect(
            HTTPRequest(ws_url, headers={"X-Proxy-Token": proxy_token}, connect_timeout=30),
            subprotocols=["echo.v2"],
        )
        assert ws.selected_subprotocol == "echo.v2"
        start = time.monotonic()
        for i in range(20):
            await ws.write_message(f"m{i}")
            assert await ws.read_message() == f"m{i}"
        assert time.monotonic() - start < 30
        ws.close()
        with pytest.raises(HTTPClientError) as info:
            await websocket_connect(HTTPRequest(ws_url, connect_timeout=30))
        assert info.value.code == 401
        outside = "ws" + hub.user_url(USER)[4:] + f"lims/proxy/{hub.allowed_ports[-1] + 100}/ws"
        with pytest.raises(HTTPClientError) as info:
            await websocket_connect(
                HTTPRequest(outside, headers={"X-Proxy-Token": proxy_token}, connect_timeout=30)
            )
        assert info.value.code == 403

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_guesses_are_limited_whatever_address_the_client_claims(hub, backend, proxy_token):
    # Last in this module: it puts this client over the limiter for its window.
    # JupyterHub's single-user server trusts X-headers; a client that makes up
    # a new X-Real-Ip / X-Forwarded-For for every guess is still one client,
    # the address configurable-http-proxy appended.
    url = hub.user_url(USER) + f"lims/proxy/{backend}/echo"
    for i in range(10):
        forged = {"X-Real-Ip": f"10.1.0.{i}", "X-Forwarded-For": f"10.2.0.{i}"}
        r = requests.get(url, headers={"X-Proxy-Token": f"jlb_guess{i}", **forged}, timeout=30)
        assert (r.status_code, r.json()["reason"]) == (401, "token_invalid")
    r = requests.get(
        url, headers={"X-Proxy-Token": "jlb_guess", "X-Real-Ip": "10.9.9.9"}, timeout=30
    )
    assert (r.status_code, r.json()["reason"]) == (429, "too_many_attempts")
    # a valid token from that very address still passes (issue #9, item 7)
    r = requests.get(url, headers={"X-Proxy-Token": proxy_token}, timeout=30)
    assert r.status_code == 200, r.text
