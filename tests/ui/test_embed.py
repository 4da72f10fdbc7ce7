"""JupyterLab inside an ELN's page, in Chromium: a page of another site frames it
from an allowed origin and follows a deep link inside the frame (and hears
``lims-bridge:opened``); a page from an origin not listed is refused by the
browser (CSP ``frame-ancestors``); with third-party cookies blocked the launch
page offers "Open in a new tab" instead of looping through the login; an error
inside the frame is posted to the parent and leads back to the entry.

JupyterLab runs on ``127.0.0.1`` with ``LIMS_BRIDGE_EMBED_ORIGINS`` naming the
ELN stand-in on ``http://localhost:<port>``: another site, so every frame here is
a cross-site frame. Debian's Chromium 156 blocks third-party cookies by default
(``--test-third-party-cookie-phaseout`` changes nothing there): each test starts a
profile that allows or blocks them (``tests/support/browser.py``). Screenshots in
``test-artifacts/embed-*.png``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from jupyter_lims_bridge import signing
from tests.support.browser import CHROMIUM_ARGS, profile_with_third_party_cookies
from tests.support.eln_page import ElnPage
from tests.support.lims_standin import LimsStandIn

from .conftest import CHROMIUM, OWNER, Lab, running_lab, screenshot

ENTITY = {
    "type": "sample",
    "id": "S-42",
    "title": "Buffer screen 3",
    "url": "https://eln.example.org/samples/S-42",
}


@pytest.fixture(scope="module")
def eln() -> Iterator[ElnPage]:
    page = ElnPage().start()
    yield page
    page.stop()


@pytest.fixture(scope="module")
def stranger() -> Iterator[ElnPage]:
    """A page on an origin that is not in ``embed_origins``."""
    page = ElnPage().start()
    yield page
    page.stop()


@pytest.fixture(scope="module")
def embedded_lab(tmp_path_factory, backend, eln, lims_standin) -> Iterator[Lab]:
    with running_lab(
        tmp_path_factory.mktemp("embedded-lab"),
        backend,
        bridge_env={
            "LIMS_BRIDGE_EMBED_ORIGINS": eln.origin,
            "LIMS_BRIDGE_RETURN_URL_PREFIXES": lims_standin.prefix,
        },
    ) as lab:
        yield lab


def deep_link(lab: Lab, **claims: Any) -> str:
    """A deep link that also signs the frame in to Jupyter (``token=``), so the
    login cookie is set inside the frame, as a hub's login would."""
    claims = {"entity": ENTITY, **claims}
    link = signing.make_deep_link(lab.url, lab.private_key, sub=OWNER, **claims)
    return f"{link}&token={lab.token}"


def messages(page: Page, seconds: float = 15) -> list[dict]:
    """What the ELN page has received so far (waits for the first message)."""
    page.wait_for_function("() => window.received.length > 0", timeout=seconds * 1000)
    return page.evaluate("() => window.received")


@pytest.fixture
def open_browser(browser, tmp_path) -> Iterator[Any]:
    """``open_browser(third_party_cookies=True)``: a page in a fresh Chromium profile."""
    contexts: list[Any] = []

    def _open(*, third_party_cookies: bool = True) -> Page:
        profile = profile_with_third_party_cookies(
            tmp_path / f"profile-{len(contexts)}", allowed=third_party_cookies
        )
        context = browser.browser_type.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800},
        )
        context.set_default_timeout(30_000)
        contexts.append(context)
        return context.pages[0] if context.pages else context.new_page()

    yield _open
    for context in contexts:
        context.close()


def test_an_eln_page_frames_jupyterlab_and_follows_a_deep_link(open_browser, embedded_lab, eln):
    page = open_browser(third_party_cookies=True)
    # Given the ELN's entry page on another site, framing a deep link
    page.goto(eln.entry_url(deep_link(embedded_lab)))
    frame = page.frame_locator("#jupyter")
    # Then the parent hears that the notebook was opened, from JupyterLab's origin
    received = messages(page)
    origin = embedded_lab.url.split("/user/")[0]
    opened = [m for m in received if m["data"]["type"] == "lims-bridge:opened"]
    assert opened, received
    assert opened[0]["origin"] == origin
    assert opened[0]["data"]["entity"] == {"type": "sample", "id": "S-42"}
    assert opened[0]["data"]["path"].endswith("S-42.ipynb")
    assert "lims_token" not in str(received) and embedded_lab.token not in str(received)
    # And JupyterLab runs inside the frame with the notebook (its cookies were kept)
    expect(frame.locator(".jp-NotebookPanel-toolbar .jp-LimsBridge-ElnLink a")).to_have_text(
        "ELN: Buffer screen 3 ↗", timeout=60_000
    )
    frame_url = page.frame_locator("#jupyter").locator("body").evaluate("() => location.href")
    assert "/lab/tree/lims/sample-S-42" in frame_url  # JupyterLab in the frame, not its login
    # and the panel's postToParent (embed.ts) finds the allowed origins in the page config
    config = page.frame_locator("#jupyter").locator("#jupyter-config-data").text_content()
    assert json.loads(config)["limsBridgeEmbedOrigins"] == [eln.origin]
    # the frame got its cookies as SameSite=None; Secure
    cookies = {c["name"]: c for c in page.context.cookies(embedded_lab.url)}
    assert cookies["_xsrf"]["sameSite"] == "None" and cookies["_xsrf"]["secure"]
    page.wait_for_timeout(500)
    screenshot(page, "embed-eln-page-with-jupyterlab")


def test_a_page_from_an_origin_not_listed_is_refused(open_browser, embedded_lab, stranger):
    page = open_browser(third_party_cookies=True)
    refusals: list[str] = []
    page.on("console", lambda m: refusals.append(m.text) if "frame-ancestors" in m.text else None)
    # Given a page on an origin that is not in embed_origins, framing JupyterLab
    page.goto(stranger.entry_url(f"{embedded_lab.url}lab?token={embedded_lab.token}"))
    # Then the browser refuses to show it, naming the CSP directive
    deadline = time.monotonic() + 15
    while not refusals and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert refusals and "frame-ancestors" in refusals[0], refusals
    # and the frame is Chromium's error page, never JupyterLab (its URL can stay
    # empty for a moment after the refusal on a busy machine)
    frame = page.frame(url=re.compile(r"^(?!http://localhost).*"))
    while frame is not None and frame.url == "" and time.monotonic() < deadline + 5:
        page.wait_for_timeout(200)
    assert (
        frame is None or frame.url in ("", "about:blank") or frame.url.startswith("chrome-error://")
    ), frame.url
    assert not page.frame_locator("iframe").locator(".jp-LabShell").count()
    assert page.evaluate("() => window.received") == []
    screenshot(page, "embed-refused-origin")


def test_an_expired_link_in_the_frame_tells_the_parent_and_leads_back(
    open_browser, embedded_lab, eln
):
    page = open_browser(third_party_cookies=True)
    now = int(time.time())
    page.goto(eln.entry_url(deep_link(embedded_lab, now=now - 400, lifetime=300)))
    received = messages(page)
    assert received[0]["data"] == {"type": "lims-bridge:error", "reason": "token_expired"}
    frame = page.frame_locator("#jupyter")
    expect(frame.locator("h1")).to_have_text("This link has expired")
    back = frame.get_by_role("link", name="Back to the ELN entry")
    expect(back).to_have_attribute("href", ENTITY["url"])
    expect(back).to_have_attribute("target", "_top")  # the ELN page itself goes back
    screenshot(page, "embed-expired-link-in-frame")


def test_blocked_third_party_cookies_offer_a_new_tab_not_a_loop(open_browser, embedded_lab, eln):
    page = open_browser(third_party_cookies=False)
    requests_seen: list[str] = []
    page.on("request", lambda r: requests_seen.append(r.url))
    link = deep_link(embedded_lab, notebook={"new": True})
    # Given a browser that blocks third-party cookies, on the ELN's page
    page.goto(eln.entry_url(link))
    frame = page.frame_locator("#jupyter")
    # Then the launch page offers a tab of its own instead of opening in the frame
    new_tab = frame.get_by_role("link", name="Open in a new tab")
    expect(new_tab).to_be_visible()
    expect(frame.locator("#lims-cookies-blocked")).to_contain_text("signed in")
    assert messages(page)[0]["data"]["reason"] == "cookies_blocked"
    screenshot(page, "embed-third-party-cookies-blocked")
    # and nothing loops: no login page, no JupyterLab, the link not used up
    page.wait_for_timeout(1500)
    assert not [u for u in requests_seen if "/login" in u or "/lab" in u]
    assert not [u for u in requests_seen if "/lims/api/open" in u]
    # When the scientist clicks it, the notebook opens in a tab of its own
    with page.context.expect_page() as popup_info:
        new_tab.click()
    popup = popup_info.value
    popup.wait_for_url(re.compile(r".*/lab/tree/.*\.ipynb"), timeout=60_000)
    expect(popup.locator(".jp-LimsBridge-ElnLink a")).to_have_text(
        "ELN: Buffer screen 3 ↗", timeout=60_000
    )
    screenshot(popup, "embed-third-party-cookies-blocked-new-tab")


def test_save_to_eln_inside_the_frame_tells_the_eln_page(
    open_browser, embedded_lab, eln, lims_standin: LimsStandIn
):
    page = open_browser(third_party_cookies=True)
    # Given the ELN's page framing a deep link whose token carries a return
    entity = {**ENTITY, "id": "S-45", "title": "Buffer screen 6"}
    claim = lims_standin.return_claim()
    link = deep_link(embedded_lab, entity=entity, extra={"return": claim})
    page.goto(eln.entry_url(link))
    frame = page.frame_locator("#jupyter")
    toolbar = frame.locator(".jp-NotebookPanel:visible .jp-NotebookPanel-toolbar")
    expect(toolbar.locator(".jp-LimsBridge-ElnLink a")).to_have_text(
        "ELN: Buffer screen 6 ↗", timeout=60_000
    )
    before = len(lims_standin.attachments)
    # When the scientist clicks "Save to ELN" inside the frame
    toolbar.get_by_role("button", name="Save to ELN").click()
    expect(toolbar.locator(".jp-LimsBridge-SaveStatus")).to_have_text(
        re.compile(r"Saved to ELN \(version \d+\)"), timeout=30_000
    )
    # Then the notebook landed in the LIMS and the ELN page heard it, from JupyterLab's origin
    assert len(lims_standin.attachments) == before + 1
    deadline = time.monotonic() + 10
    saved: list[dict] = []
    while not saved and time.monotonic() < deadline:
        received = page.evaluate("() => window.received")
        saved = [m for m in received if m["data"]["type"] == "lims-bridge:saved"]
        time.sleep(0.1)
    assert saved, received
    assert saved[0]["origin"] == embedded_lab.url.split("/user/")[0]
    assert saved[0]["data"]["path"].endswith("S-45.ipynb")
    assert saved[0]["data"]["status"] == "saved" and saved[0]["data"]["version"] is not None
    assert claim["grant"] not in json.dumps(received)
    screenshot(page, "embed-save-to-eln")
