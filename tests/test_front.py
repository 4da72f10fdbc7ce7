"""The connection-level front of the port proxy (proxy/front.py), on raw sockets.

Given a real Jupyter server whose connections the front reads first, when one
client connection mixes proxied requests with anything else (Jupyter's own
API, a body, a head tornado reads its own way), as configurable-http-proxy's
pooled connections do, then the front serves the proxied ones, tornado reads
each other one with every byte not yet served, the front has the next
request again, and each answer is the one tornado's path would give.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import json

import pytest

from .support.net import free_port, proxy_backend, read_response


@pytest.fixture(scope="module")
def backend_port():
    port = free_port()
    with proxy_backend(port):
        yield port


@pytest.fixture
def bridge_config(backend_port):
    return {"allowed_ports": [backend_port]}


@pytest.fixture
def token(bridge):
    return bridge.proxy_tokens.create("front")["token"]


@pytest.fixture
def front(bridge, http_server):
    assert bridge.proxy_front is not None
    return bridge.proxy_front


@pytest.fixture
def routed(jp_serverapp, monkeypatch):
    """The methods and paths of the requests that reached tornado's routing."""
    web_app = jp_serverapp.web_app
    seen: list[str] = []
    find_handler = web_app.find_handler

    def counting(request, **kwargs):
        seen.append(f"{request.method} {request.path}")
        return find_handler(request, **kwargs)

    monkeypatch.setattr(web_app, "find_handler", counting)
    return seen


@pytest.fixture
def connect(jp_http_port, http_server):
    """Open a raw client connection to the server (closed after the test)."""
    writers = []

    async def _connect():
        reader, writer = await asyncio.open_connection("127.0.0.1", jp_http_port)
        writers.append(writer)
        return reader, writer

    yield _connect
    for writer in writers:
        writer.close()


def request(method: str, path: str, *headers: str, body: bytes = b"", eol: str = "\r\n") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return (eol.join(lines) + eol + eol).encode() + body


async def test_pipelined_requests_are_served_in_order_each_by_its_own_path(
    connect, jp_base_url, backend_port, token, jp_serverapp, routed, front, monkeypatch
):
    # (and the requests the front's route was asked about)
    asked = []
    route = front.route
    monkeypatch.setattr(
        front, "route", lambda request: asked.append(request.path) or route(request)
    )
    # Given one connection with two proxied GETs, then Jupyter's own API, then a
    # proxied GET again, all written at once (pipelined)
    reader, writer = await connect()
    proxied = f"{jp_base_url}lims/proxy/{backend_port}/echo"
    api = f"{jp_base_url}api/status"
    writer.write(
        request("GET", proxied + "?n=1", f"X-Proxy-Token: {token}")
        + request("GET", proxied + "?n=2", f"X-Proxy-Token: {token}")
        + request("GET", api, f"Authorization: token {jp_serverapp.identity_provider.token}")
        + request("GET", proxied + "?n=3", f"X-Proxy-Token: {token}")
    )
    # Then each gets its own answer, in order, on the one connection
    answers = [await read_response(reader) for _ in range(4)]
    assert [status for status, _, _ in answers] == [200, 200, 200, 200]
    assert json.loads(answers[0][2])["query"] == "n=1"
    assert json.loads(answers[1][2])["query"] == "n=2"
    assert "last_activity" in json.loads(answers[2][2])  # Jupyter's own answer
    assert json.loads(answers[3][2])["query"] == "n=3"
    # and tornado read only the API call: the front had the connection again after it
    assert routed == [f"GET {api}"]
    # (whose headers the front did not parse: not a proxy path)
    assert asked == [proxied, proxied, proxied]


async def test_a_body_goes_to_tornado_with_every_byte_and_the_connection_comes_back(
    connect, jp_base_url, backend_port, token, routed
):
    # Given a proxied GET then a proxied POST with a body on one connection
    reader, writer = await connect()
    proxied = f"{jp_base_url}lims/proxy/{backend_port}/echo"
    writer.write(request("GET", proxied, f"X-Proxy-Token: {token}"))
    assert (await read_response(reader))[0] == 200
    writer.write(request("POST", proxied, f"X-Proxy-Token: {token}", body=b"x" * 1000))
    # Then the handler has the POST, and the backend got the whole body
    status, _, body = await read_response(reader)
    assert status == 200
    assert json.loads(body)["bodyLength"] == 1000
    # and the next bodyless request on the connection is the front's again
    writer.write(request("GET", proxied, f"X-Proxy-Token: {token}"))
    assert (await read_response(reader))[0] == 200
    assert routed == [f"POST {proxied}"]
    # even when it came in one write with the body before it (left in tornado's buffer)
    writer.write(
        request("POST", proxied, f"X-Proxy-Token: {token}", body=b"y" * 70000)
        + request("GET", proxied + "?after=1", f"X-Proxy-Token: {token}")
    )
    status, _, body = await read_response(reader)
    assert (status, json.loads(body)["bodyLength"]) == (200, 70000)
    status, _, body = await read_response(reader)
    assert (status, json.loads(body)["query"]) == (200, "after=1")
    assert routed == [f"POST {proxied}", f"POST {proxied}"]


@pytest.mark.parametrize(
    "why, raw",
    [
        ("bare LF line ends", "bare-lf"),
        ("HTTP/1.0", "http10"),
        ("blank line first", "blank"),
    ],
)
async def test_heads_tornado_reads_its_own_way_are_tornados(
    connect, jp_base_url, backend_port, token, routed, why, raw
):
    # Given a proxied request written in a way tornado parses differently from a strict reader
    reader, writer = await connect()
    proxied = f"{jp_base_url}lims/proxy/{backend_port}/echo"
    data = {
        "bare-lf": request("GET", proxied, f"X-Proxy-Token: {token}", eol="\n"),
        "http10": request("GET", proxied, f"X-Proxy-Token: {token}").replace(
            b"HTTP/1.1", b"HTTP/1.0"
        ),
        "blank": b"\r\n" + request("GET", proxied, f"X-Proxy-Token: {token}"),
    }[raw]
    writer.write(data)
    # Then tornado read it (and the fast path it routes to answered it)
    status, _, body = await read_response(reader)
    assert status == 200, why
    assert json.loads(body)["path"] == "/echo"
    assert routed == [f"GET {proxied}"]


async def test_a_bad_host_is_tornados_400(connect, jp_base_url, backend_port, token, routed):
    # Given a proxied request whose Host tornado refuses to parse
    reader, writer = await connect()
    proxied = f"{jp_base_url}lims/proxy/{backend_port}/echo"
    writer.write(f"GET {proxied} HTTP/1.1\r\nHost: a b\r\nX-Proxy-Token: {token}\r\n\r\n".encode())
    # Then tornado answers it as it answers any bad request, and the front logged no failure
    data = await asyncio.wait_for(reader.read(), 10)
    assert data.startswith(b"HTTP/1.1 400")


async def test_a_refused_host_gets_the_handlers_403(
    connect, jp_base_url, backend_port, token, bridge, routed
):
    # Given a proxied request to a Host Jupyter's DNS-rebinding guard refuses
    reader, writer = await connect()
    proxied = f"{jp_base_url}lims/proxy/{backend_port}/echo"
    data = request("GET", proxied, f"X-Proxy-Token: {token}").replace(
        b"Host: 127.0.0.1", b"Host: rebound.example"
    )
    writer.write(data)
    # Then the handler refuses it, as for any request, and the Host is remembered as refused
    status, _, body = await read_response(reader)
    assert (status, json.loads(body)["reason"]) == (403, "host_not_allowed")
    assert routed == [f"GET {proxied}"]
    assert bridge.port_proxy.host_checks["rebound.example"] is False


async def test_connection_close_is_honoured(connect, jp_base_url, backend_port, token):
    # Given a proxied request asking to close the connection
    reader, writer = await connect()
    proxied = f"{jp_base_url}lims/proxy/{backend_port}/echo"
    writer.write(request("GET", proxied, f"X-Proxy-Token: {token}", "Connection: close"))
    # Then the answer says so, and the server closes the connection after it
    status, headers, _ = await read_response(reader)
    assert status == 200
    assert headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 10) == b""


async def test_a_body_without_length_is_chunked_and_the_connection_kept(
    connect, jp_base_url, backend_port, token
):
    # Given a backend answer without Content-Length (tornado's chunked pass-through,
    # then an HTTP/1.0-style close-delimited body is not in this backend: a chunked one is)
    reader, writer = await connect()
    proxied = f"{jp_base_url}lims/proxy/{backend_port}/chunked?n=300000"
    writer.write(request("GET", proxied, f"X-Proxy-Token: {token}"))
    status, headers, body = await read_response(reader)
    assert status == 200
    assert headers["transfer-encoding"] == "chunked"
    assert len(body) == 300000
    # Then the same connection serves the next request
    writer.write(
        request("HEAD", f"{jp_base_url}lims/proxy/{backend_port}/echo", f"X-Proxy-Token: {token}")
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Content-Length: 1234" in head  # HEAD: the backend's length, no body
    writer.write(
        request("GET", f"{jp_base_url}lims/proxy/{backend_port}/small", f"X-Proxy-Token: {token}")
    )
    assert (await read_response(reader))[0] == 200


async def test_an_idle_connection_is_closed_after_the_header_timeout(
    connect, front, monkeypatch, jp_http_port
):
    # Given tornado's header timeout set short
    params = copy.copy(front.params)
    params.header_timeout = 0.5
    monkeypatch.setattr(front, "params", params)
    reader, writer = await asyncio.open_connection("127.0.0.1", jp_http_port)
    # When a client connects and sends half a head
    writer.write(b"GET /lims/proxy/1/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    # Then the server closes the connection once the timeout has passed
    assert await asyncio.wait_for(reader.read(), 10) == b""
    assert not front.connections
    writer.close()


async def test_an_oversized_head_is_tornados(connect, front, monkeypatch, jp_base_url, token):
    # Given a head larger than tornado's limit
    reader, writer = await connect()
    writer.write(
        f"GET {jp_base_url}lims/proxy/1/ HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
        + b"X-Big: "
        + b"a" * (front.params.max_header_size + 10)
        + b"\r\n\r\n"
    )
    # Then tornado has it (it closes such a connection): nothing hangs
    await asyncio.wait_for(reader.read(), 10)
    assert not front.connections


async def test_uninstalled_the_front_closes_its_connections_and_leaves_new_ones_alone(
    connect, front, jp_base_url, backend_port, token, jp_http_port, routed
):
    # Given a connection served by the front
    reader, writer = await connect()
    proxied = f"{jp_base_url}lims/proxy/{backend_port}/echo"
    writer.write(request("GET", proxied, f"X-Proxy-Token: {token}"))
    assert (await read_response(reader))[0] == 200
    assert len(front.connections) == 1
    # When the front is taken away (the extension stops)
    front.uninstall()
    # Then its connection is closed, and a new one is tornado's from its first request
    assert await asyncio.wait_for(reader.read(), 10) == b""
    reader2, writer2 = await asyncio.open_connection("127.0.0.1", jp_http_port)
    writer2.write(request("GET", proxied, f"X-Proxy-Token: {token}"))
    assert (await read_response(reader2))[0] == 200
    assert routed == [f"GET {proxied}"]
    writer2.close()


async def test_a_served_request_leaves_no_reference_cycle(
    connect, jp_base_url, backend_port, token
):
    # Given the cyclic garbage collector off (objects in a reference cycle then stay)
    from jupyter_lims_bridge.handlers.proxy_fast import FastExchange
    from jupyter_lims_bridge.proxy.relay import Relay

    reader, writer = await connect()
    proxied = f"{jp_base_url}lims/proxy/{backend_port}/small"
    writer.write(request("GET", proxied, f"X-Proxy-Token: {token}"))  # (warm: pool, caches)
    assert (await read_response(reader))[0] == 200
    gc.collect()
    gc.disable()
    try:
        # When 20 proxied requests are served on the connection
        for _ in range(20):
            writer.write(request("GET", proxied, f"X-Proxy-Token: {token}"))
            assert (await read_response(reader))[0] == 200
        # Then none of their exchanges is left behind: reference counting freed them all
        # (a cycle per request leaves work to the cyclic collector, whose full passes
        # over Jupyter's heap stall the server: seen as a p99 of 135 ms in bench/proxy.py)
        left = [o for o in gc.get_objects() if isinstance(o, (FastExchange, Relay))]
        assert len(left) <= 2  # (the one in flight at most)
    finally:
        gc.enable()
