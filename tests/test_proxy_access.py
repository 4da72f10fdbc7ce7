"""The one access decision of the port proxy (proxy/access.py), made for new
requests and re-made for live sessions: the rules as a table, without HTTP."""

from __future__ import annotations

import pytest

from jupyter_lims_bridge.errors import LimsError
from jupyter_lims_bridge.proxy.access import Access, Presented
from jupyter_lims_bridge.proxy.service import LiveSession, ProxyService
from jupyter_lims_bridge.proxy_tokens import AttemptLimiter, ProxyTokenStore


@pytest.fixture
def access(tmp_path):
    store = ProxyTokenStore(tmp_path / "t.json")
    service = ProxyService(
        mode="token",
        ports=frozenset({8050, 8051}),
        cors_origins=[],
        websocket_max_message_size=1024,
        tokens=store,
        attempts=AttemptLimiter(max_failures=2),
    )
    return Access(service)


async def owner_ok() -> None:
    return None


async def no_owner() -> None:
    raise LimsError("token_missing")


async def reason(access: Access, port: int, presented: Presented) -> str:
    try:
        caller = await access.admit(port, presented)
    except LimsError as e:
        return e.reason
    return caller.via


async def test_new_requests_follow_the_rules_in_order(access):
    tokens = access.service.tokens
    scoped = tokens.create("s", [8050])
    # a token is checked before the port: only a valid one learns which ports exist
    assert await reason(access, 9999, Presented(token="jlb_nope")) == "token_invalid"
    assert await reason(access, 9999, Presented(token=scoped["token"])) == "port_not_allowed"
    assert await reason(access, 8051, Presented(token=scoped["token"])) == "port_not_allowed"
    assert await reason(access, 8050, Presented(token=scoped["token"])) == "token"
    assert await reason(access, 8050, Presented(owner=owner_ok)) == "session"
    assert await reason(access, 8050, Presented(owner=no_owner)) == "token_missing"
    assert await reason(access, 8050, Presented()) == "token_missing"
    # over the failed-attempt limit: wrong tokens get 429, a valid one still passes
    for _ in range(2):
        await reason(access, 8050, Presented(token="jlb_nope", client="c"))
    assert await reason(access, 8050, Presented(token="jlb_x", client="c")) == "too_many_attempts"
    assert await reason(access, 8050, Presented(token=scoped["token"], client="c")) == "token"
    access.service.set_mode("open")
    assert await reason(access, 8050, Presented(token="jlb_nope")) == "open"
    assert await reason(access, 9999, Presented()) == "port_not_allowed"
    access.service.set_mode("disabled")
    assert await reason(access, 8050, Presented(token=scoped["token"])) == "proxy_disabled"


async def test_live_sessions_get_the_same_decision(access):
    tokens = access.service.tokens
    created = tokens.create("t", [8050])

    def live(via, token_id=None, port=8050):
        return LiveSession(port, via, token_id, "websocket", lambda: None)

    by_token, by_owner, by_open = live("token", created["id"]), live("session"), live("open")
    assert [await access.still_admitted(s) for s in (by_token, by_owner, by_open)] == [
        True,
        True,
        False,  # mode token: a client let in by mode open has nothing to show
    ]
    access.service.set_mode("open")
    assert all([await access.still_admitted(s) for s in (by_token, by_owner, by_open)])
    access.service.set_mode("token")
    tokens.revoke(created["id"])
    assert not await access.still_admitted(by_token)
    assert await access.still_admitted(by_owner)
    access.service.set_mode("disabled")
    assert not await access.still_admitted(by_owner)


def test_the_mode_is_checked_and_kept_in_one_place(access, tmp_path):
    with pytest.raises(LimsError) as e:
        access.service.set_mode("wide")
    assert e.value.reason == "bad_request"
    access.service.set_mode("open")
    # the owner's choice survives a restart while the configured mode is unchanged
    again = ProxyService(
        mode="token",
        ports=frozenset(),
        cors_origins=[],
        websocket_max_message_size=1,
        tokens=ProxyTokenStore(tmp_path / "t.json"),
    )
    assert again.mode == "open"
