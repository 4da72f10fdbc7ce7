"""Named services (issue #11 item 3): ``lims/proxy/<name>/`` for services
declared in ``c.ServerProxy.servers``, launched on their first request through
jupyter-server-proxy and relayed by our proxy with the same token rules.

The service is real: ``tests/support/named_service.py`` (HTTP + websocket),
started by jupyter-server-proxy's own supervision on the first request."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

#: every test runs on both of the proxy's paths (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("proxy_path")

SERVICE = Path(__file__).parent / "support" / "named_service.py"


@pytest.fixture
def bridge_config():
    return {"allowed_services": ["echo-app", "not-declared"]}


@pytest.fixture
def jp_server_config(jp_server_config):
    declared = {
        "echo-app": {"command": [sys.executable, str(SERVICE), "{port}"], "timeout": 30},
        "hidden-app": {"command": [sys.executable, str(SERVICE), "{port}"], "timeout": 30},
    }
    return {**jp_server_config, "ServerProxy": {"servers": declared}}


@pytest.fixture
def server(http_server_client, jp_http_port, jp_base_url) -> str:
    return f"http://127.0.0.1:{jp_http_port}{jp_base_url}"


async def fetch(jp_fetch, *parts, token=None, owner=False, absolute=False, **kwargs):
    headers = {} if owner else {"Authorization": ""}
    if token is not None:
        headers["X-Proxy-Token"] = token
    prefix = ("lims", "proxy", "absolute") if absolute else ("lims", "proxy")
    kwargs.setdefault("raise_error", False)
    kwargs.setdefault("follow_redirects", False)
    return await jp_fetch(*prefix, *parts, headers=headers, **kwargs)


def body(response) -> dict:
    return json.loads(response.body)


async def test_a_declared_service_is_launched_on_first_request_and_relayed(jp_fetch, bridge):
    token = bridge.proxy_tokens.create("svc")["token"]
    # Given a service declared in ServerProxy.servers and allowed; nothing runs yet
    # When a client with a proxy token asks for it
    r = await fetch(jp_fetch, "echo-app", "hello", token=token, params={"x": "1"})
    # Then jupyter-server-proxy launched it and our proxy relayed the request
    assert r.code == 200, r.body
    seen = body(r)
    assert seen["service"] == "echo-app" and seen["path"] == "/hello" and seen["query"] == "x=1"
    assert "x-proxy-token" not in seen["headers"]  # the same header hygiene as for ports
    # and later requests reach the same process (launched once)
    again = body(await fetch(jp_fetch, "echo-app", "again", token=token))
    assert again["pid"] == seen["pid"]
    # the absolute route forwards the full path
    full = body(await fetch(jp_fetch, "echo-app", "x", token=token, absolute=True))
    assert full["path"].endswith("/lims/proxy/absolute/echo-app/x")
    # the bare name redirects to add the slash, as for ports
    bare = await fetch(jp_fetch, "echo-app", token=token)
    assert bare.code == 302 and bare.headers["Location"].endswith("/lims/proxy/echo-app/")


async def test_the_owner_session_and_mode_open_reach_it_too(jp_fetch, bridge):
    r = await fetch(jp_fetch, "echo-app", "owner", owner=True)
    assert r.code == 200 and body(r)["path"] == "/owner"
    assert "authorization" not in body(r)["headers"]  # the owner's credential stays here
    r = await fetch(jp_fetch, "echo-app", "nobody")
    assert (r.code, body(r)["reason"]) == (401, "token_missing")
    bridge.set_proxy_mode("open")
    r = await fetch(jp_fetch, "echo-app", "anyone")
    assert r.code == 200 and body(r)["path"] == "/anyone"


async def test_unknown_and_not_allowed_names(jp_fetch, bridge):
    token = bridge.proxy_tokens.create("svc")["token"]
    # declared but not in allowed_services, and neither declared nor allowed: 403
    for name in ("hidden-app", "no-such-app"):
        r = await fetch(jp_fetch, name, "x", token=token)
        assert (r.code, body(r)["reason"]) == (403, "service_not_allowed"), name
    # an unauthenticated caller learns nothing about which names exist
    r = await fetch(jp_fetch, "hidden-app", "x")
    assert (r.code, body(r)["reason"]) == (401, "token_missing")
    r = await fetch(jp_fetch, "no-such-app", "x", token="jlb_wrong")
    assert (r.code, body(r)["reason"]) == (401, "token_invalid")
    # allowed but not declared: the operator's mistake, 502
    r = await fetch(jp_fetch, "not-declared", "x", token=token)
    assert (r.code, body(r)["reason"]) == (502, "backend_unavailable")
    # names that are not service names never reach the handler
    r = await fetch(jp_fetch, "Echo-App", "x", token=token)
    assert r.code == 404


async def test_token_scopes_for_services(jp_fetch, bridge):
    store = bridge.proxy_tokens
    by_service = store.create(
        "svc", services=["echo-app"], allowed_services=frozenset({"echo-app"})
    )
    by_port = store.create("port", [8050])
    r = await fetch(jp_fetch, "echo-app", "x", token=by_service["token"])
    assert r.code == 200
    # a token scoped to ports only reaches no service, and the other way round
    r = await fetch(jp_fetch, "echo-app", "x", token=by_port["token"])
    assert (r.code, body(r)["reason"]) == (403, "service_not_allowed")
    assert not store.still_valid(by_service["id"], 8050)
    assert store.still_valid(by_service["id"], "echo-app")


async def test_the_tokens_api_scopes_a_token_to_services(jp_fetch):
    async def post(payload):
        r = await jp_fetch(
            "lims", "api", "tokens", method="POST", body=json.dumps(payload), raise_error=False
        )
        return r.code, json.loads(r.body)

    code, created = await post({"name": "dash", "services": ["echo-app"]})
    assert code == 201 and created["services"] == ["echo-app"] and created["ports"] is None
    code, refused = await post({"name": "x", "services": ["hidden-app"]})
    assert (code, refused["reason"]) == (403, "service_not_allowed")
    code, refused = await post({"name": "x", "services": "echo-app"})
    assert (code, refused["reason"]) == (400, "bad_request")
    listed = json.loads((await jp_fetch("lims", "api", "tokens")).body)
    assert listed["allowedServices"] == ["echo-app", "not-declared"]
    assert [t.get("services") for t in listed["tokens"]] == [["echo-app"]]


async def test_a_websocket_session_through_a_named_service(server, bridge):
    events = []
    bridge.port_proxy.event_logger = type(
        "L", (), {"emit": lambda self, schema_id, data: events.append(data)}
    )()
    created = bridge.proxy_tokens.create("ws", services=["echo-app"])
    url = f"ws{server[4:]}lims/proxy/echo-app/ws"
    ws = await websocket_connect(HTTPRequest(url, headers={"X-Proxy-Token": created["token"]}))
    await ws.write_message("round trip")
    assert await ws.read_message() == "round trip"
    # revoking the token ends the session as for ports (the sweeper re-checks the service)
    bridge.proxy_tokens.revoke(created["id"])
    assert await asyncio.wait_for(ws.read_message(), 3) is None
    assert ws.close_code == 1008
    for _ in range(100):
        if len(events) >= 2:
            break
        await asyncio.sleep(0.02)
    started, ended = events
    assert started["service"] == ended["service"] == "echo-app"
    assert started["session"] == ended["session"] and ended["bytesUp"] > 0


def test_cli_scopes_a_token_to_services(tmp_path, capsys, monkeypatch):
    import argparse

    from jupyter_lims_bridge import cli_tokens

    monkeypatch.setenv("LIMS_BRIDGE_ALLOWED_SERVICES", "dashboard,echo-app")
    parser = argparse.ArgumentParser()
    cli_tokens.add_parser(parser.add_subparsers(dest="command"))

    def run(*argv):
        args = parser.parse_args(["tokens", "--state-dir", str(tmp_path), "--json", *argv])
        code = args.run(args)
        return code, capsys.readouterr().out

    code, out = run("create", "dash", "--service", "dashboard")
    assert code == 0 and json.loads(out)["services"] == ["dashboard"]
    code, out = run("create", "typo", "--service", "dashbaord")
    assert code == 1 and "service_not_allowed" in out


class TestWithJupyterServerProxysOwnRoute:
    @pytest.fixture
    def jp_server_config(self, jp_server_config):
        extensions = {**jp_server_config["ServerApp"]["jpserver_extensions"]}
        extensions["jupyter_server_proxy"] = True
        server_app = {**jp_server_config["ServerApp"], "jpserver_extensions": extensions}
        return {**jp_server_config, "ServerApp": server_app}

    async def test_its_route_and_ours_share_one_process(self, jp_fetch, bridge):
        # Given jupyter-server-proxy's own extension is enabled as well
        token = bridge.proxy_tokens.create("svc")["token"]
        # When the service is reached through its route, then through ours
        theirs = json.loads((await jp_fetch("echo-app", "pid")).body)
        ours = body(await fetch(jp_fetch, "echo-app", "pid", token=token))
        # Then both reached the same process: it was launched once
        assert theirs["pid"] == ours["pid"]
        # (jupyter-server-proxy stops it when the server process exits; a test
        # server does not exit, so stop it here)
        await bridge.port_proxy.services._states["echo-app"]["proc"].terminate()
