"""Webhook events across a server restart, with real processes.

Given a real ``jupyter server`` process whose webhook receiver (the LIMS) is
down, when an entry is opened and a websocket session is opened through the
port proxy, the events wait in the queue on disk; when the server is then
killed (SIGKILL: nothing runs at exit) or stopped (SIGTERM), and a second
server is started on the same state directory with the receiver up, then the
queued events arrive signed and in order, and the proxy session the first
server never saw end is reported ``ended``. No token and no secret is in a
body or in the server's log. A webhook URL without a secret is refused at
start-up with a message that says so.
"""

from __future__ import annotations

import base64
import os
import signal
import time
from pathlib import Path

import pytest
import websocket

from jupyter_lims_bridge import signing
from tests.support.net import free_port, proxy_backend
from tests.support.serverproc import (  # noqa: F401 - the fixtures switch pytest-jupyter off
    jp_asyncio_loop,
    jp_server_cleanup,
    jupyter_process,
)
from tests.support.webhook_receiver import WebhookReceiver

OWNER = "alice"
HERE = Path(__file__).parent
SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def backend_port():
    port = free_port()
    with proxy_backend(port):
        yield port


@pytest.fixture
def receiver():
    r = WebhookReceiver(SECRET, port=free_port())  # not started: the LIMS is down
    yield r
    r.stop()


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def webhook_status(server) -> dict:
    return server.api("GET", "lims/api/status").json()["webhook"]


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
def test_queued_events_and_an_open_session_arrive_after_a_restart(
    tmp_path, key_pair, receiver, backend_port, stop
):
    env = {
        "LIMS_BRIDGE_EVENT_WEBHOOK_URL": receiver.url,
        "LIMS_BRIDGE_EVENT_WEBHOOK_SECRET": SECRET,
        "LIMS_BRIDGE_EVENT_WEBHOOK_RETRY_INITIAL": "0.05",
        "LIMS_BRIDGE_EVENT_WEBHOOK_RETRY_MAX": "0.2",
        "LIMS_BRIDGE_ALLOWED_PORTS": str(backend_port),
    }
    options = {"owner": OWNER, "public_key": key_pair[1], "data_url_prefixes": [], "env": env}
    open_token = signing.make_token(key_pair[0], sub=OWNER, entity={"type": "sample", "id": "S-9"})

    with jupyter_process(tmp_path, **options) as server:
        r = server.api("POST", "lims/api/open", headers={"X-Lims-Token": open_token})
        assert r.status_code == 201, r.text
        proxy_token = server.api("POST", "lims/api/tokens", json={"name": "ws"}).json()["token"]
        ws = websocket.create_connection(
            f"ws{server.url[4:]}lims/proxy/{backend_port}/ws",
            header=[f"X-Proxy-Token: {proxy_token}"],
            timeout=10,
        )
        ws.send("hi")
        assert ws.recv() == "hi"
        wait_for(lambda: webhook_status(server)["queued"] == 2)
        assert webhook_status(server)["lastError"] == "connection failed"
        server.process.send_signal(stop)
        server.process.wait(20)
    ws.close()

    receiver.start()
    with jupyter_process(tmp_path, **options) as server:
        opened, started, ended = receiver.wait_for(3)
        wait_for(lambda: webhook_status(server) == {"queued": 0, "dropped": 0, "lastError": None})

    assert all(d.verified for d in receiver.deliveries)
    assert (opened.payload["type"], opened.payload["data"]["action"]) == ("open", "opened")
    assert opened.payload["data"]["entityId"] == "S-9"
    session = {"port": backend_port, "path": f"/lims/proxy/{backend_port}/ws", "via": "token"}
    assert started.payload["type"] == ended.payload["type"] == "proxy_session"
    session_id = started.payload["data"]["session"]
    assert started.payload["data"] == {"action": "started", "session": session_id, **session}
    # the end made up at the next start names the same session
    assert {k: ended.payload["data"][k] for k in ("action", "session", *session)} == {
        "action": "ended",
        "session": session_id,
        **session,
    }
    if stop == signal.SIGKILL:
        # nothing ran at exit: the second server ended it
        assert ended.payload["data"]["reason"] == "server_stopped"
        assert ended.payload["data"]["startedAt"].endswith("Z")
    # no token or secret in any body, nor in the servers' log
    bodies = " ".join(d.body.decode() for d in receiver.deliveries)
    log = (tmp_path / "server.log").read_text()
    for secret in (open_token, open_token.split(".")[2], proxy_token, SECRET.split("_", 1)[1]):
        assert secret not in bodies and secret not in log
    journal = tmp_path / "state" / "webhook_queue.jsonl"
    assert oct(journal.stat().st_mode & 0o777) == "0o600"


BAD_SECRET = "whsec_" + base64.b64encode(b"only-sixteen-byt").decode()


@pytest.mark.parametrize(
    "env,message",
    [
        (
            {"LIMS_BRIDGE_EVENT_WEBHOOK_URL": "https://lims.example.org/hook"},
            "event_webhook_url is set but event_webhook_secret is empty",
        ),
        (
            {
                "LIMS_BRIDGE_EVENT_WEBHOOK_URL": "https://lims.example.org/hook",
                "LIMS_BRIDGE_EVENT_WEBHOOK_SECRET": BAD_SECRET,
            },
            "LIMS_BRIDGE_EVENT_WEBHOOK_SECRET: event_webhook_secret must hold at least 24 bytes of key, not 16",
        ),
    ],
    ids=["no-secret", "short-secret"],
)
def test_bad_webhook_settings_are_refused_at_start_up(tmp_path, key_pair, env, message):
    with jupyter_process(
        tmp_path, owner=OWNER, public_key=key_pair[1], data_url_prefixes=[], env=env
    ) as server:
        # Jupyter runs on without the bridge, and its log says why (not the secret)
        assert server.api("GET", "lims/api/status").status_code == 404
        log = (tmp_path / "server.log").read_text()
        assert message in log
        assert BAD_SECRET.split("_", 1)[1] not in log
