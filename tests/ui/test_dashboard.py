"""A real Bokeh dashboard (a page, its scripts and a websocket) behind the named-service
proxy, in Chromium (issue #11 item 3).

``bokeh serve tests/support/bokeh_app.py`` is declared in ``c.ServerProxy.servers``,
allowed in ``allowed_services``, and launched by jupyter-server-proxy on its first
request. A click on the dashboard's button runs a Python callback in the Bokeh
server, which writes the Div's new text back over the websocket: a changed Div is
a websocket round trip through our proxy.

Bokeh behind a path prefix, two ways (both declared here, both tested):

- ``dashboard`` at ``lims/proxy/dashboard/`` (the prefix is stripped): Bokeh runs
  without ``--prefix``. Its redirect to ``/bokeh_app`` is rewritten under the prefix
  by the proxy and its websocket URL follows the page's own path, but its scripts
  are absolute ``/static/…`` paths, so it must inline them (``BOKEH_RESOURCES=inline``).
- ``dashboard-prefixed`` at ``lims/proxy/absolute/dashboard-prefixed/`` (the prefix
  is kept): Bokeh is told its prefix (``--prefix {base_url}lims/proxy/absolute/…``)
  and serves its scripts itself.

Neither needs ``--allow-websocket-origin``: the proxy does not forward ``Origin`` on
websocket upgrades (it applies Jupyter's own origin check to the owner's session).

Who may pass: a client that adds ``X-Proxy-Token`` to every request, the websocket
handshake included (a kiosk, an ELN-side gateway), stands in as Playwright's
``extra_http_headers`` (Chromium: CDP ``Network.setExtraHTTPHeaders``); the owner in
their Jupyter session; nobody else. Screenshots in ``test-artifacts/dashboard-*.png``.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Page, expect

from .conftest import Lab, running_lab, screenshot

APP = Path(__file__).resolve().parents[1] / "support" / "bokeh_app.py"
BOKEH = [sys.executable, "-m", "bokeh", "serve", str(APP), "--address", "127.0.0.1"]
SERVERS = {
    "dashboard": {
        "command": [*BOKEH, "--port", "{port}"],
        "environment": {"BOKEH_RESOURCES": "inline"},
        "timeout": 60,
    },
    "dashboard-prefixed": {
        "command": [
            *BOKEH,
            "--port",
            "{port}",
            "--prefix",
            "{base_url}lims/proxy/absolute/dashboard-prefixed",
        ],
        "timeout": 60,
    },
}
STRIPPED = "lims/proxy/dashboard/"
PREFIXED = "lims/proxy/absolute/dashboard-prefixed/"

#: how long Bokeh may take to render or answer (ms; a busy 2-core machine)
WAIT = 20_000
#: open a websocket from the page: "open" once the handshake passed (101), "refused" if not
PROBE = """url => new Promise(resolve => {
    const ws = new WebSocket(url);
    ws.onopen = () => { resolve("open"); ws.close(); };
    ws.onerror = () => resolve("refused");
    setTimeout(() => resolve("no answer"), 10000);
})"""


@pytest.fixture(scope="module")
def dash_lab(tmp_path_factory, backend) -> Iterator[Lab]:
    with running_lab(
        tmp_path_factory.mktemp("dash-lab"),
        backend,
        bridge_env={"LIMS_BRIDGE_ALLOWED_SERVICES": ",".join(SERVERS)},
        server_config={"ServerProxy": {"servers": SERVERS}},
    ) as lab:
        yield lab


@pytest.fixture
def context(browser) -> Iterator[Any]:
    """A browser context factory; every context starts with no cookies (no session)."""
    contexts = []

    def new(**kwargs: Any) -> Any:
        context = browser.new_context(viewport={"width": 1000, "height": 600}, **kwargs)
        context.set_default_timeout(30_000)  # the first request launches Bokeh
        contexts.append(context)
        return context

    yield new
    for context in contexts:
        context.close()


def proxy_token(lab: Lab, *services: str) -> str:
    response = lab.api(
        "POST", "lims/api/tokens", data=json.dumps({"name": "kiosk", "services": list(services)})
    )
    assert response.status_code == 201, response.text
    return response.json()["token"]


def round_trip(page: Page) -> None:
    """The dashboard rendered (BokehJS drew the document it pulled over the websocket)
    and two clicks come back from the server's callback."""
    button = page.get_by_role("button", name="Count")
    expect(button).to_be_visible(timeout=WAIT)
    expect(page.get_by_text("no clicks yet")).to_be_visible(timeout=WAIT)
    button.click()
    expect(page.get_by_text("the server counted 1 click", exact=True)).to_be_visible(timeout=WAIT)
    button.click()
    expect(page.get_by_text("the server counted 2 clicks", exact=True)).to_be_visible(timeout=WAIT)


def websocket_url(page: Page) -> str:
    """Bokeh's websocket: the app's page path plus ``/ws``."""
    return "ws" + page.url.removeprefix("http").split("?")[0].rstrip("/") + "/ws"


def assert_refused(response: Any, status: int, reason: str) -> None:
    assert response is not None and response.status == status
    assert response.headers["content-type"].startswith("application/json")
    assert json.loads(response.body())["reason"] == reason


def test_a_client_sending_a_proxy_token_on_every_request_uses_the_dashboard(context, dash_lab):
    # Given a proxy token scoped to the dashboard, and a browser that adds it to every
    # request it makes, websocket handshakes included, and has no Jupyter session
    token = proxy_token(dash_lab, "dashboard")
    kiosk = context(extra_http_headers={"X-Proxy-Token": token})
    page = kiosk.new_page()
    websockets: list[str] = []
    page.on("websocket", lambda ws: websockets.append(ws.url))

    # When it opens lims/proxy/dashboard/ (the first request launches Bokeh)
    response = page.goto(dash_lab.url + STRIPPED)

    # Then Bokeh's redirect stayed under the prefix and the page rendered
    assert response is not None and response.status == 200
    assert page.url == dash_lab.url + STRIPPED + "bokeh_app"
    expect(page).to_have_title("LIMS dashboard")
    # and a click reached the server's callback over the websocket and came back
    round_trip(page)
    assert websockets == [websocket_url(page)]
    assert kiosk.cookies() == []  # the header was the only credential
    screenshot(page, "dashboard-proxy-token")

    # The header is what lets the handshake through: without it the same handshake
    # from the same page is refused, with it again it passes
    assert page.evaluate(PROBE, websocket_url(page)) == "open"
    kiosk.set_extra_http_headers({})
    assert page.evaluate(PROBE, websocket_url(page)) == "refused"
    kiosk.set_extra_http_headers({"X-Proxy-Token": token})
    assert page.evaluate(PROBE, websocket_url(page)) == "open"

    # And the same page load without the header is refused
    plain = context().new_page()
    assert_refused(plain.goto(dash_lab.url + STRIPPED), 401, "token_missing")
    expect(plain.get_by_role("button", name="Count")).to_have_count(0)


@pytest.mark.parametrize("path", [STRIPPED, PREFIXED], ids=["stripped", "prefixed"])
def test_the_owner_uses_the_dashboard_in_their_jupyter_session(context, dash_lab, path):
    # Given the owner's browser, logged in to Jupyter (cookie), with no proxy token
    owner = context()
    page = owner.new_page()
    page.goto(f"{dash_lab.url}api/status?token={dash_lab.token}")
    assert any(c["name"].startswith("username-") for c in owner.cookies())

    # When the owner opens the dashboard
    response = page.goto(dash_lab.url + path)

    # Then it renders and its websocket round trip works
    assert response is not None and response.status == 200
    assert page.url == dash_lab.url + path + "bokeh_app"
    round_trip(page)
    screenshot(page, f"dashboard-owner-{path.split('/')[-2]}")


@pytest.mark.parametrize("path", [STRIPPED, PREFIXED], ids=["stripped", "prefixed"])
def test_without_a_token_or_a_session_the_dashboard_is_refused(context, dash_lab, path):
    page = context().new_page()
    # no token, no session: the page is a JSON refusal, not the dashboard
    assert_refused(page.goto(dash_lab.url + path), 401, "token_missing")
    expect(page.get_by_role("button", name="Count")).to_have_count(0)
    # a wrong token: the same
    wrong = context(extra_http_headers={"X-Proxy-Token": "jlb_" + "x" * 43}).new_page()
    assert_refused(wrong.goto(dash_lab.url + path), 401, "token_invalid")
    # a token scoped to another service is refused this one
    other = "dashboard-prefixed" if path == STRIPPED else "dashboard"
    scoped = context(extra_http_headers={"X-Proxy-Token": proxy_token(dash_lab, other)})
    assert_refused(scoped.new_page().goto(dash_lab.url + path), 403, "service_not_allowed")
    # and a websocket handshake without credentials never reaches Bokeh
    handshake = requests.get(
        dash_lab.url + path + "bokeh_app/ws",
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        },
        timeout=10,
    )
    assert (handshake.status_code, handshake.json()["reason"]) == (401, "token_missing")
