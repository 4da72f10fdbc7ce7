"""Events to the LIMS: signed webhook deliveries from a real server to a real receiver.

Given a webhook receiver on 127.0.0.1 (tests/support/webhook_receiver.py) that verifies
Standard Webhooks signatures with the reference ``standardwebhooks`` package,
and a real Jupyter server with the bridge (pytest-jupyter) whose
``event_webhook_url`` points at it: a real open arrives as a signed ``open``
event without the token; events wait while the receiver is down or failing and
arrive in order, with the same ``webhook-id``, once it is back; a full queue
drops the oldest and counts them; proxy sessions report start and end. The
restart cases (a server killed with events queued and a websocket open, then
started again on the same state directory) are in test_webhook_restart.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import stat
import time
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from traitlets import TraitError

from jupyter_lims_bridge import events, webhook
from jupyter_lims_bridge.app import LimsBridge
from jupyter_lims_bridge.webhook import WebhookJournal, parse_secret, sign

from .support.net import free_port
from .support.webhook_receiver import WebhookReceiver

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def receiver_port() -> int:
    return free_port()


@pytest.fixture
def receiver(receiver_port):
    """The LIMS endpoint, not started: tests start it when the LIMS is up."""
    r = WebhookReceiver(SECRET, port=receiver_port)
    yield r
    r.stop()


@pytest.fixture
def bridge_config(receiver, monkeypatch):
    # The secret comes from the environment, as docs/webhooks.md advises: traitlets
    # logs config values ("Config changed: …") at DEBUG level, the environment not.
    monkeypatch.setenv("LIMS_BRIDGE_EVENT_WEBHOOK_SECRET", SECRET)
    return {
        "event_webhook_url": receiver.url,
        "event_webhook_retry_initial": 0.05,
        "event_webhook_retry_max": 0.2,
        "event_webhook_timeout": 5.0,
    }


async def accepted(receiver: WebhookReceiver, count: int, timeout: float = 15.0):
    """Wait (on the server's loop) until ``count`` distinct events were accepted."""
    for _ in range(int(timeout / 0.05)):
        if len(receiver.accepted()) >= count:
            return receiver.accepted()
        await asyncio.sleep(0.05)
    raise AssertionError(f"only {len(receiver.accepted())} of {count} events arrived")


async def status(jp_fetch) -> dict:
    r = await jp_fetch("lims", "api", "status")
    return json.loads(r.body)["webhook"]


async def until(predicate, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


def all_logs(caplog, jp_logging_stream) -> str:
    """What the server logged: its own stream (set up before pytest-jupyter
    re-routes it) and the records captured since."""
    records = [r.getMessage() for when in ("setup", "call") for r in caplog.get_records(when)]
    return jp_logging_stream.getvalue() + "\n".join(records)


def doc_verify():
    """The standard-library ``verify`` of docs/webhooks.md, run as written."""
    text = (Path(__file__).parent.parent / "docs" / "webhooks.md").read_text()
    [code] = [
        block.split("```", 1)[0]
        for block in text.split("```python\n")[1:]
        if "def verify(" in block
    ]
    namespace: dict = {}
    exec(code, namespace)
    return namespace["verify"]


# -- signing and configuration ---------------------------------------------------------


def test_signature_verifies_with_the_reference_implementation():
    key = parse_secret(SECRET)
    body = '{"type":"open","data":{"path":"lims/ä.ipynb"}}'
    ts = int(time.time())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(key, "msg_1", ts, body),
    }
    assert Webhook(SECRET).verify(body.encode(), headers) == json.loads(body)
    # and one byte changed does not verify
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace("open", "opeN").encode(), headers)


@pytest.mark.parametrize(
    "name,value,message",
    [
        ("EVENT_WEBHOOK_SECRET", "s3cret-value-not-whsec", "whsec_<base64 key>"),
        ("EVENT_WEBHOOK_SECRET", "whsec_not*base64*at*all", "must be base64"),
        (
            "EVENT_WEBHOOK_SECRET",
            "whsec_" + base64.b64encode(b"short-key").decode(),
            "at least 24 bytes of key, not 9",
        ),
        ("EVENT_WEBHOOK_URL", "ftp://lims.example.org/hook", "http:// or https://"),
        ("EVENT_WEBHOOK_URL", "lims.example.org/hook", "http:// or https://"),
        ("EVENT_WEBHOOK_QUEUE_SIZE", "0", "at least 1"),
    ],
)
def test_bad_webhook_settings_are_refused_with_a_clear_message(monkeypatch, name, value, message):
    monkeypatch.setenv(f"LIMS_BRIDGE_{name}", value)
    with pytest.raises(TraitError, match=f"LIMS_BRIDGE_{name}") as e:
        LimsBridge()
    assert message in str(e.value)
    if "SECRET" in name:
        assert value not in str(e.value) and value.split("_", 1)[-1] not in str(e.value)


def test_webhook_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("LIMS_BRIDGE_EVENT_WEBHOOK_URL", "https://lims.example.org/hook")
    monkeypatch.setenv("LIMS_BRIDGE_EVENT_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("LIMS_BRIDGE_EVENT_WEBHOOK_EVENTS", "open,save")
    monkeypatch.setenv("LIMS_BRIDGE_EVENT_WEBHOOK_QUEUE_SIZE", "50")
    bridge = LimsBridge()
    assert (bridge.event_webhook_url, bridge.event_webhook_secret) == (
        "https://lims.example.org/hook",
        SECRET,
    )
    assert (bridge.event_webhook_events, bridge.event_webhook_queue_size) == (["open", "save"], 50)
    assert LimsBridge.class_traits()["event_webhook_events"].default() == [
        "open",
        "save",
        "staging",
        "proxy_session",
    ]


# -- the queue on disk ----------------------------------------------------------------


def test_journal_is_private_bounded_and_survives_a_torn_line(tmp_path):
    path = tmp_path / "q.jsonl"
    journal = WebhookJournal(path, max_size=3)
    for i in range(5):
        journal.add({"id": f"m{i}", "type": "open", "body": "{}"})
    journal.done("m2")
    assert list(journal.pending) == ["m3", "m4"] and journal.dropped == 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    journal.close()
    # a crash in the middle of a line: that line is skipped, the rest kept
    with path.open("a") as f:
        f.write('{"op":"add","msg":{"id":"m5","ty')
    again = WebhookJournal(path, max_size=3)
    assert list(again.pending) == ["m3", "m4"] and again.dropped == 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # a lower bound at the next start drops the oldest too
    smaller = WebhookJournal(path, max_size=1)
    assert list(smaller.pending) == ["m4"] and smaller.dropped == 3


# -- a real server ----------------------------------------------------------------------


async def test_a_real_open_arrives_signed_and_without_the_token(
    receiver, open_api, sign, jp_fetch, caplog, jp_logging_stream
):
    caplog.set_level(logging.DEBUG)
    receiver.start()
    token = sign()
    r = await open_api(token)
    assert r.code == 201
    [delivery] = await accepted(receiver, 1)
    assert delivery.verified
    # the verification example of docs/webhooks.md accepts it too
    assert doc_verify()(SECRET, delivery.headers, delivery.body) == delivery.payload
    assert delivery.headers["content-type"] == "application/json"
    assert delivery.id.startswith("msg_")
    assert abs(int(delivery.headers["webhook-timestamp"]) - time.time()) < 60
    body = delivery.payload
    assert set(body) == {"type", "timestamp", "owner", "data"}
    assert (body["type"], body["owner"]) == ("open", "alice")
    assert body["timestamp"].endswith("Z")
    data = body["data"]
    assert (data["action"], data["entityType"], data["entityId"]) == ("opened", "sample", "S-42")
    assert data["path"] == json.loads(r.body)["path"]
    # no token in the body, nor the token's signature part; no secret or token in the logs
    assert token not in delivery.body.decode() and token.split(".")[2] not in delivery.body.decode()
    logged = all_logs(caplog, jp_logging_stream)
    assert token not in logged and SECRET.split("_", 1)[1] not in logged
    await until(lambda: _status_is(jp_fetch, {"queued": 0, "dropped": 0, "lastError": None}))


async def _status_is(jp_fetch, expected: dict) -> bool:
    return await status(jp_fetch) == expected


async def test_events_wait_while_the_lims_is_down_and_arrive_in_order(
    receiver, open_api, sign, jp_fetch, caplog
):
    # the LIMS is down: nothing listens on its port
    await open_api(sign())  # opened
    await open_api(sign(exp=1))  # refused: token_expired
    await until(
        lambda: _status_is(jp_fetch, {"queued": 2, "dropped": 0, "lastError": "connection failed"})
    )
    assert "webhook to http://127.0.0.1" in caplog.text  # one warning, the URL without query
    # it comes back, answers 503 once, then accepts
    receiver.failures = [503]
    receiver.start()
    first, second = await accepted(receiver, 2)
    assert [first.payload["data"]["action"], second.payload["data"]["action"]] == [
        "opened",
        "refused",
    ]
    assert second.payload["data"]["reason"] == "token_expired"
    # the refused attempt and the accepted one carry the same webhook-id, each signed
    attempts = [d for d in receiver.deliveries if d.id == first.id]
    assert [d.status for d in attempts] == [503, 204] and all(d.verified for d in attempts)
    await until(lambda: _status_is(jp_fetch, {"queued": 0, "dropped": 0, "lastError": None}))


@pytest.fixture
def small_queue(bridge_config):
    bridge_config["event_webhook_queue_size"] = 3


async def test_a_full_queue_drops_the_oldest_and_counts_them(
    small_queue, receiver, jp_serverapp, jp_fetch, caplog
):
    for i in range(5):
        jp_serverapp.event_logger.emit(
            schema_id=events.OPEN,
            data={"action": "refused", "reason": "token_invalid", "jti": f"j{i}"},
        )
    await until(lambda: _status_is_like(jp_fetch, queued=3, dropped=2))
    assert "dropped the 1 oldest" in caplog.text  # warned with the count (then rate-limited)
    receiver.start()
    arrived = await accepted(receiver, 3)
    assert [d.payload["data"]["jti"] for d in arrived] == ["j2", "j3", "j4"]
    await until(lambda: _status_is_like(jp_fetch, queued=0, dropped=2))


async def _status_is_like(jp_fetch, **expected) -> bool:
    got = await status(jp_fetch)
    return all(got[k] == v for k, v in expected.items())


async def test_proxy_sessions_report_start_and_end(receiver, bridge, jp_serverapp):
    receiver.start()
    proxy = bridge.port_proxy  # the real emitters of proxy/service.py, without a websocket
    a = proxy.session_started(8050, "/a/lims/proxy/8050/ws", "token", "echo.v2")
    await asyncio.sleep(0.05)
    b = proxy.session_started(8050, "/a/lims/proxy/8050/ws", "token", None)
    await asyncio.sleep(0.05)
    proxy.session_ended(8050, "/a/lims/proxy/8050/ws", "token", b, 3, 1000)
    started, _, ended = await accepted(receiver, 3)
    assert started.payload["type"] == "proxy_session"
    assert started.payload["data"] == {
        "action": "started",
        "session": a.id,
        "port": 8050,
        "path": "/a/lims/proxy/8050/ws",
        "via": "token",
        "subprotocol": "echo.v2",
    }
    assert ended.payload["data"]["action"] == "ended" and ended.payload["data"]["messages"] == 3
    # the end names its session: the webhook pairs them by id, not by port and path
    assert ended.payload["data"]["session"] == b.id != a.id
    assert ended.payload["data"]["bytesUp"] == ended.payload["data"]["bytesDown"] == 0
    # the other one is still open (ended at the next start if the server stopped now)
    assert list(bridge.webhook.journal.sessions) == [a.id]
    proxy.session_ended(8050, "/a/lims/proxy/8050/ws", "token", a, 1, None)
    await accepted(receiver, 4)
    assert bridge.webhook.journal.sessions == {}


@pytest.fixture
def only_open_events(bridge_config):
    bridge_config["event_webhook_events"] = ["open", "no-such-type"]


async def test_only_the_configured_types_are_sent(only_open_events, receiver, bridge, jp_serverapp):
    assert bridge.webhook.types == ["open"]  # the unknown one ignored (warned: see below)
    receiver.start()
    bridge.port_proxy.session_started(8050, "/ws", "open", None)
    jp_serverapp.event_logger.emit(
        schema_id=events.OPEN, data={"action": "refused", "reason": "token_missing"}
    )
    [only] = await accepted(receiver, 1)
    await asyncio.sleep(0.2)
    assert only.payload["type"] == "open" and len(receiver.accepted()) == 1


def test_a_field_named_like_a_credential_is_never_sent(tmp_path, caplog):
    service = webhook.WebhookService(
        url="https://lims.example.org/h",
        secret=SECRET,
        types=["save", "saves"],
        owner="alice",
        state_dir=tmp_path,
    )
    assert "ignoring unknown type(s) saves" in caplog.text
    service.enqueue("save", {"path": "a.ipynb", "grant": "g-123", "Token": "jlb_x"})
    [msg] = service.journal.pending.values()
    assert json.loads(msg["body"])["data"] == {"path": "a.ipynb"}
    assert "g-123" not in (tmp_path / webhook.JOURNAL).read_text()
    service.journal.release()


@pytest.fixture
def no_webhook(bridge_config, monkeypatch):
    bridge_config.clear()
    monkeypatch.delenv("LIMS_BRIDGE_EVENT_WEBHOOK_SECRET")


async def test_without_a_url_there_is_no_webhook(no_webhook, bridge, jp_fetch, tmp_path):
    assert bridge.webhook is None
    assert await status(jp_fetch) is None
    assert not (tmp_path / "state" / webhook.JOURNAL).exists()


@pytest.fixture
def short_timeout(bridge_config):
    bridge_config["event_webhook_timeout"] = 0.3


async def test_a_lims_that_does_not_answer_in_time_gets_the_event_again(
    short_timeout, receiver, jp_serverapp, jp_fetch
):
    receiver.hangs = [1.0]
    receiver.start()
    jp_serverapp.event_logger.emit(
        schema_id=events.OPEN, data={"action": "refused", "reason": "token_missing"}
    )
    await until(lambda: _status_is_like(jp_fetch, lastError="timeout"))
    [delivery] = await accepted(receiver, 1)

    async def both_recorded() -> bool:  # the hung answer is recorded when it ends
        return len(receiver.deliveries) == 2

    await until(both_recorded)
    assert [d.id for d in receiver.deliveries] == [delivery.id, delivery.id]


def test_backoff_doubles_up_to_the_maximum_with_jitter(tmp_path):
    service = webhook.WebhookService(
        url="https://lims.example.org/h",
        secret=SECRET,
        types=["open"],
        owner="alice",
        state_dir=tmp_path,
        retry_initial=1.0,
        retry_max=60.0,
    )
    for failures, full in [(1, 1.0), (2, 2.0), (3, 4.0), (7, 60.0), (500, 60.0)]:
        delays = [service.backoff(failures) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1  # jittered
    service.journal.release()


def test_sessions_pair_by_id_when_the_events_carry_one(tmp_path):
    service = webhook.WebhookService(
        url="https://lims.example.org/h",
        secret=SECRET,
        types=["proxy_session"],
        owner="alice",
        state_dir=tmp_path,
    )
    base = {"port": 8050, "path": "/ws", "via": "token"}
    for sid in ("s1", "s2"):
        service._track_session({"action": "started", "session": sid, **base})
    # s1 ended just now after a long session: the duration alone would have picked s2
    service._track_session({"action": "ended", "session": "s1", "durationSeconds": 0.0, **base})
    assert list(service.journal.sessions) == ["s2"]
    service.journal.release()
    # the next start ends the one left open, once
    again = webhook.WebhookService(
        url="https://lims.example.org/h",
        secret=SECRET,
        types=["proxy_session"],
        owner="alice",
        state_dir=tmp_path,
    )
    [msg] = again.journal.pending.values()
    assert json.loads(msg["body"])["data"]["reason"] == "server_stopped"
    assert again.journal.sessions == {}
    again.journal.release()


async def test_a_save_event_is_sent_as_type_save(receiver, jp_serverapp):
    """The bridge's own ``save`` schema (Save to ELN) maps to webhook type ``save``."""
    receiver.start()
    assert webhook.SCHEMAS["save"] == events.SAVE
    events.emit(
        jp_serverapp.event_logger,
        events.SAVE,
        {"action": "saved", "path": "lims/a.ipynb", "elnStatus": 201},
    )
    [saved] = await accepted(receiver, 1)
    assert (saved.payload["type"], saved.payload["data"]) == (
        "save",
        {"action": "saved", "path": "lims/a.ipynb", "elnStatus": 201},
    )


def test_servers_sharing_a_state_dir_keep_their_own_queues_and_take_over_stopped_ones(tmp_path):
    """Named servers of one user share the state directory: a running server's
    queue is never read by another; a stopped server's is taken over at a start."""

    def service():
        return webhook.WebhookService(
            url="https://lims.example.org/h",
            secret=SECRET,
            types=["open", "proxy_session"],
            owner="alice",
            state_dir=tmp_path,
        )

    def queued(s) -> list[str]:
        return [json.loads(m["body"])["data"].get("n", "ended") for m in s.journal.pending.values()]

    a, b = service(), service()
    a.enqueue("open", {"n": "a1"})
    b.enqueue("open", {"n": "b1"})
    b._track_session({"action": "started", "port": 1, "path": "/ws", "via": "open"})
    assert a.journal.path != b.journal.path
    # while both run, a third server sees neither queue
    c = service()
    assert queued(c) == []
    c.journal.release()
    # a and b stop (as a SIGKILL would: nothing delivered); the next start takes both over,
    # in order, and ends b's open session
    a.journal.release()
    b.journal.release()
    d = service()
    assert queued(d) == ["a1", "b1", "ended"]
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == [webhook.JOURNAL]
    d.journal.release()
