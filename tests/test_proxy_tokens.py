"""Proxy tokens: the owner's API, the store at rest, and the command line.

Given a server with allowed ports, when the owner (Jupyter auth + XSRF) lists,
creates and revokes proxy tokens and sets the proxy mode, then the JSON
shapes, statuses and reasons are those of DESIGN.md and the token file holds
no plain token, mode 0600, and survives a restart.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_lims_bridge import cli_tokens
from jupyter_lims_bridge.errors import LimsError
from jupyter_lims_bridge.proxy_tokens import AttemptLimiter, ProxyTokenStore

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


@pytest.fixture
def bridge_config():
    return {"allowed_ports": [8050, "9000-9002"]}


async def api(jp_fetch, *parts, method="GET", body=None, headers=None):
    kwargs = {"raise_error": False, "method": method, "headers": headers or {}}
    if body is not None and method in ("POST", "PUT"):
        kwargs["body"] = json.dumps(body)
    elif method in ("POST", "PUT"):
        kwargs["body"] = ""
    r = await jp_fetch("lims", "api", *parts, **kwargs)
    return r.code, (json.loads(r.body) if r.body else None), r


# -- the API --------------------------------------------------------------------------


async def test_create_list_revoke(jp_fetch, bridge, jp_base_url):
    code, created, r = await api(
        jp_fetch, "tokens", method="POST", body={"name": "ci", "ports": [8050], "expiresIn": 86400}
    )
    assert code == 201
    assert set(created) == {"id", "name", "token", "ports", "createdAt", "expiresAt"}
    assert created["token"].startswith("jlb_") and len(created["token"]) >= 4 + 43
    assert created["ports"] == [8050] and created["name"] == "ci"
    assert ISO.match(created["createdAt"]) and ISO.match(created["expiresAt"])
    assert r.headers["Location"] == f"{jp_base_url}lims/api/tokens/{created['id']}"

    code, listed, _ = await api(jp_fetch, "tokens")
    assert code == 200
    assert listed["mode"] == "token"
    assert listed["allowedPorts"] == [8050, 9000, 9001, 9002]
    [entry] = listed["tokens"]
    assert set(entry) == {"id", "name", "ports", "createdAt", "expiresAt", "lastUsedAt"}
    assert entry["lastUsedAt"] is None
    assert created["token"] not in json.dumps(listed)

    code, body, _ = await api(jp_fetch, "tokens", created["id"], method="DELETE")
    assert code == 204 and body is None
    code, listed, _ = await api(jp_fetch, "tokens")
    assert listed["tokens"] == []
    code, body, _ = await api(jp_fetch, "tokens", created["id"], method="DELETE")
    assert (code, body["reason"]) == (404, "not_found")


async def test_create_defaults_all_ports_no_expiry(jp_fetch):
    code, created, _ = await api(jp_fetch, "tokens", method="POST", body={"name": "all"})
    assert code == 201
    assert created["ports"] is None and created["expiresAt"] is None


@pytest.mark.parametrize(
    "body, reason",
    [
        ({}, "bad_request"),
        ({"name": ""}, "bad_request"),
        ({"name": "x", "ports": "8050"}, "bad_request"),
        ({"name": "x", "ports": [0]}, "bad_request"),
        ({"name": "x", "expiresIn": -1}, "bad_request"),
        ({"name": "x", "ports": [1234]}, "port_not_allowed"),
    ],
)
async def test_create_refuses_bad_input(jp_fetch, body, reason):
    code, answer, _ = await api(jp_fetch, "tokens", method="POST", body=body)
    assert answer["reason"] == reason
    assert code in (400, 403)


async def test_create_refuses_non_json(jp_fetch):
    r = await jp_fetch("lims", "api", "tokens", method="POST", body="{nope", raise_error=False)
    assert (r.code, json.loads(r.body)["reason"]) == (400, "bad_request")


async def test_set_proxy_mode(jp_fetch, bridge):
    for mode in ("open", "disabled", "token"):
        code, body, _ = await api(jp_fetch, "proxy", method="PUT", body={"mode": mode})
        assert (code, body) == (200, {"mode": mode})
        assert bridge.port_proxy.mode == mode
        code, status, _ = await api(jp_fetch, "status")
        assert status["proxy"]["mode"] == mode
    code, body, _ = await api(jp_fetch, "proxy", method="PUT", body={"mode": "wide"})
    assert (code, body["reason"]) == (400, "bad_request")


@pytest.mark.parametrize(
    "parts, method",
    [
        (("tokens",), "GET"),
        (("tokens",), "POST"),
        (("tokens", "abc"), "DELETE"),
        (("proxy",), "PUT"),
    ],
)
async def test_unauthenticated_is_refused(jp_fetch, parts, method):
    code, _, _ = await api(
        jp_fetch,
        *parts,
        method=method,
        body={"name": "x", "mode": "open"},
        headers={"Authorization": ""},
    )
    assert code == 403


async def test_cookie_post_without_xsrf_is_refused(jp_fetch, jp_serverapp):
    from .test_proxy import login_cookies

    cookies, xsrf_cookie, xsrf = await login_cookies(jp_fetch, jp_serverapp, with_xsrf=True)
    code, _, _ = await api(
        jp_fetch,
        "tokens",
        method="POST",
        body={"name": "x"},
        headers={"Authorization": "", "Cookie": cookies},
    )
    assert code == 403
    code, created, _ = await api(
        jp_fetch,
        "tokens",
        method="POST",
        body={"name": "x"},
        headers={"Authorization": "", "Cookie": f"{cookies}; {xsrf_cookie}", "X-XSRFToken": xsrf},
    )
    assert code == 201
    # DELETE and PUT with the cookie need the _xsrf too
    for method, parts, body in (
        ("DELETE", ("tokens", created["id"]), None),
        ("PUT", ("proxy",), {"mode": "open"}),
    ):
        code, _, _ = await api(
            jp_fetch,
            *parts,
            method=method,
            body=body,
            headers={"Authorization": "", "Cookie": cookies},
        )
        assert code == 403, method
        code, _, _ = await api(
            jp_fetch,
            *parts,
            method=method,
            body=body,
            headers={
                "Authorization": "",
                "Cookie": f"{cookies}; {xsrf_cookie}",
                "X-XSRFToken": xsrf,
            },
        )
        assert code in (200, 204), method


async def test_events_for_create_and_revoke(jp_fetch, bridge):
    seen = []
    bridge.proxy_tokens.event_logger = type(
        "L", (), {"emit": lambda self, schema_id, data: seen.append((schema_id, data))}
    )()
    _, created, _ = await api(jp_fetch, "tokens", method="POST", body={"name": "ev"})
    await api(jp_fetch, "tokens", created["id"], method="DELETE")
    assert [d["action"] for _, d in seen] == ["created", "revoked"]
    assert all(schema.endswith("/proxy_tokens") for schema, _ in seen)
    assert created["token"] not in json.dumps([d for _, d in seen])


# -- the store at rest ----------------------------------------------------------------------


def test_file_is_private_hashed_and_survives_restart(tmp_path):
    path = tmp_path / "state" / "proxy_tokens.json"
    store = ProxyTokenStore(path)
    created = store.create("ci", [8050], 3600)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode == 0o600
    text = path.read_text()
    assert created["token"] not in text
    assert created["token"][4:] not in text
    assert not list(path.parent.glob(".*tmp"))  # written atomically, no leftovers
    again = ProxyTokenStore(path)
    rec = again.check(created["token"], 8050)
    assert rec["id"] == created["id"]


def test_check_reasons(tmp_path):
    now = [1000.0]
    store = ProxyTokenStore(tmp_path / "t.json", clock=lambda: now[0])
    scoped = store.create("s", [8050], 10)["token"]
    with pytest.raises(LimsError) as e:
        store.check(None, 8050)
    assert e.value.reason == "token_missing"
    with pytest.raises(LimsError) as e:
        store.check("jlb_" + "x" * 43, 8050)
    assert e.value.reason == "token_invalid"
    with pytest.raises(LimsError) as e:
        store.check("x" * 10000, 8050)
    assert e.value.reason == "token_invalid"
    with pytest.raises(LimsError) as e:
        store.check(scoped, 9000)
    assert e.value.reason == "port_not_allowed"
    assert store.check(scoped, 8050)
    now[0] += 11
    with pytest.raises(LimsError) as e:
        store.check(scoped, 8050)
    assert e.value.reason == "token_expired"


def test_last_used_is_persisted_lazily(tmp_path):
    path = tmp_path / "t.json"
    store = ProxyTokenStore(path)
    created = store.create("x")
    before = path.stat().st_mtime_ns
    store.check(created["token"], 1)
    assert path.stat().st_mtime_ns == before  # no write per request
    assert store.list()[0]["lastUsedAt"] is not None
    store.flush()
    assert json.loads(path.read_text())["tokens"][0]["lastUsedAt"] is not None


def test_change_by_another_process_is_noticed(tmp_path):
    path = tmp_path / "t.json"
    server = ProxyTokenStore(path)
    cli = ProxyTokenStore(path)
    created = cli.create("from-cli")
    server._next_stat = 0.0
    assert server.check(created["token"], 1)
    cli.revoke(created["id"])
    server._next_stat = 0.0
    with pytest.raises(LimsError):
        server.check(created["token"], 1)


def test_mode_persisted_unless_operator_changed_it(tmp_path):
    path = tmp_path / "t.json"
    store = ProxyTokenStore(path)
    store.save_mode("open", "token")
    assert ProxyTokenStore(path).startup_mode("token") == "open"
    assert ProxyTokenStore(path).startup_mode("disabled") == "disabled"


def test_attempt_limiter():
    limiter = AttemptLimiter(max_failures=3, window=60)
    for _ in range(3):
        limiter.check("1.2.3.4")
        limiter.failed("1.2.3.4")
    with pytest.raises(LimsError) as e:
        limiter.check("1.2.3.4")
    assert (e.value.reason, e.value.status) == ("too_many_attempts", 429)
    assert limiter.over_limit("1.2.3.4") and not limiter.over_limit("5.6.7.8")
    limiter.check("5.6.7.8")  # other clients are not affected


# -- the command line --------------------------------------------------------------------------


def test_cli_create_list_revoke(tmp_path, capsys, monkeypatch):
    import argparse

    monkeypatch.setenv("LIMS_BRIDGE_ALLOWED_PORTS", "8050,9000-9010")

    parser = argparse.ArgumentParser()
    cli_tokens.add_parser(parser.add_subparsers(dest="command"))
    state = str(tmp_path / "st")

    def run(*argv):
        args = parser.parse_args(["tokens", "--state-dir", state, "--json", *argv])
        code = args.run(args)
        return code, capsys.readouterr().out

    code, out = run("create", "ci", "--port", "8050", "--expires-in", "60")
    assert code == 0
    created = json.loads(out)
    assert created["token"].startswith("jlb_") and created["ports"] == [8050]
    code, out = run("list")
    listed = json.loads(out)["tokens"]
    assert [t["id"] for t in listed] == [created["id"]]
    assert created["token"] not in out
    code, out = run("revoke", created["id"])
    assert code == 0
    code, out = run("revoke", created["id"])
    assert code == 1 and "not_found" in out
    assert stat.S_IMODE(os.stat(tmp_path / "st" / "proxy_tokens.json").st_mode) == 0o600
    # a port the server would refuse is refused here too, and nothing is stored
    code, out = run("create", "typo", "--port", "8051")
    assert code == 1 and "port_not_allowed" in out
    assert json.loads(run("list")[1])["tokens"] == []


def test_cli_entry_point_reads_the_servers_config(tmp_path):
    # `jupyter lims-bridge tokens` as a terminal in the container runs it: the
    # state dir and allowed_ports come from the same config file as the server's
    config = tmp_path / "config"
    config.mkdir()
    state = tmp_path / "state"
    (config / "jupyter_server_config.json").write_text(
        json.dumps({"LimsBridge": {"state_dir": str(state), "allowed_ports": ["9000-9010"]}})
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER_", "LIMS_BRIDGE_"))}
    env.update(JUPYTER_CONFIG_DIR=str(config), JUPYTER_DATA_DIR=str(tmp_path / "data"))
    jupyter = Path(sys.executable).with_name("jupyter")

    def run(*argv):
        return subprocess.run(
            [str(jupyter), "lims-bridge", "tokens", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = run("create", "ci", "--port", "9005", "--json")
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    assert created["ports"] == [9005]
    assert (state / "proxy_tokens.json").exists()
    refused = run("create", "x", "--port", "8050")
    assert refused.returncode == 1 and "port_not_allowed" in refused.stdout + refused.stderr
    listed = run("list")
    assert created["id"] in listed.stdout and created["token"] not in listed.stdout


def test_cli_state_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LIMS_BRIDGE_STATE_DIR", str(tmp_path / "env"))
    assert cli_tokens.state_dir() == tmp_path / "env"
    assert cli_tokens.state_dir(str(tmp_path / "x")) == tmp_path / "x"


async def test_refused_use_is_an_event(jp_fetch, bridge):
    seen = []
    bridge.proxy_tokens.event_logger = type(
        "L", (), {"emit": lambda self, schema_id, data: seen.append((schema_id, data))}
    )()
    r = await jp_fetch(
        "lims",
        "proxy",
        "8050",
        "x",
        headers={"Authorization": "", "X-Proxy-Token": "jlb_wrong"},
        raise_error=False,
    )
    assert r.code == 401
    [(schema, data)] = seen
    assert schema.endswith("/proxy_tokens")
    assert data["action"] == "use_failed" and data["reason"] == "token_invalid"
    assert data["port"] == 8050 and "jlb_wrong" not in json.dumps(data)


def test_event_schemas_validate_what_the_managers_emit(tmp_path):
    # Given jupyter_events' real logger with the package's schemas, the
    # managers' events validate (a schema mismatch would only be logged)
    import logging

    from jupyter_events import EventLogger

    from jupyter_lims_bridge import events
    from jupyter_lims_bridge.proxy.service import ProxyService

    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.msg)

    logger = EventLogger(handlers=[Collect()])
    events.register_event_schemas(logger)
    store = ProxyTokenStore(tmp_path / "t.json", event_logger=logger)
    created = store.create("ci", [8050], 60)
    with pytest.raises(LimsError):
        store.check("jlb_nope", 8050, "127.0.0.1")
    store.revoke(created["id"])
    proxy = ProxyService(
        mode="token",
        ports=frozenset({8050}),
        cors_origins=[],
        websocket_max_message_size=1024,
        event_logger=logger,
    )
    started = proxy.session_started(8050, "/a/lims/proxy/8050/ws", "token", "echo.v2")
    proxy.session_ended(8050, "/a/lims/proxy/8050/ws", "token", started, 3, 1000)
    actions = [r["action"] if isinstance(r, dict) else json.loads(r)["action"] for r in records]
    assert actions == ["created", "use_failed", "revoked", "started", "ended"]


async def test_an_empty_port_scope_is_refused(jp_fetch):
    # a token that works on no port would only confuse; leaving "ports" out means all allowed
    code, body, _ = await api(jp_fetch, "tokens", method="POST", body={"name": "x", "ports": []})
    assert (code, body["reason"]) == (400, "bad_request")
    code, listed, _ = await api(jp_fetch, "tokens")
    assert listed["tokens"] == []


def test_still_valid_follows_revocation_expiry_scope_and_other_processes(tmp_path):
    path = tmp_path / "t.json"
    now = [1000.0]
    store = ProxyTokenStore(path, clock=lambda: now[0])
    scoped = store.create("s", [8050], expires_in=60)
    other = store.create("o")
    assert store.still_valid(scoped["id"], 8050)
    assert not store.still_valid(scoped["id"], 8051)  # outside its scope
    now[0] += 61
    assert not store.still_valid(scoped["id"], 8050)  # expired
    ProxyTokenStore(path).revoke(other["id"])  # the CLI, another process
    store._next_stat = 0.0
    assert not store.still_valid(other["id"], 8050)
    assert not store.still_valid("no-such-id", 8050)
