"""The demo in Chromium: its ELN page on ``127.0.0.1`` shows JupyterLab embedded
from ``localhost`` (another site) and hears ``lims-bridge:opened``; its proxy
section shows a client without a token refused and one with the token passing,
its curl lines wrapped inside their box at 1280 px; "Save to ELN" in a notebook
opened from the demo ELN lands back there. Screenshots
``test-artifacts/demo-embedded.png``, ``demo-curl.png`` (and ``demo-curl-narrow.png``, 560 px) and ``demo-save.png``."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.support.browser import CHROMIUM_ARGS, profile_with_third_party_cookies
from tests.support.demo import running_demo

from .conftest import CHROMIUM, screenshot


@pytest.fixture(scope="module")
def demo_url() -> Iterator[str]:
    with running_demo() as demo:
        yield demo.eln_url


def test_the_demo_eln_shows_jupyterlab_embedded_and_what_a_proxy_token_is_for(
    browser, demo_url, tmp_path
):
    profile = profile_with_third_party_cookies(tmp_path / "profile", allowed=True)
    context = browser.browser_type.launch_persistent_context(
        str(profile),
        executable_path=CHROMIUM,
        args=CHROMIUM_ARGS,
        viewport={"width": 1280, "height": 900},
    )
    try:
        context.set_default_timeout(60_000)
        page = context.pages[0] if context.pages else context.new_page()
        # the ELN page: the proxy tried without and with a token
        page.goto(demo_url)
        tries = page.locator("pre.proxy-try")
        expect(tries).to_have_count(2)
        expect(tries.nth(0)).to_have_attribute("data-status", "401")
        expect(tries.nth(1)).to_have_attribute("data-status", "200")
        # the entry with JupyterLab inside the page
        page.get_by_role("link", name="Show JupyterLab in this page").first.click()
        frame = page.frame_locator("#jupyter")
        try:
            expect(frame.locator(".jp-LimsBridge-ElnLink a")).to_contain_text(
                "ELN: Buffer screen 1", timeout=60_000
            )
        finally:
            screenshot(page, "demo-embedded")
        expect(page.locator("#messages")).to_contain_text('"type":"lims-bridge:opened"')
        page.wait_for_timeout(1000)
        screenshot(page, "demo-embedded")
    finally:
        context.close()


def test_the_demo_curl_lines_wrap_and_save_to_eln_lands_back_in_the_demo_eln(browser, demo_url):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        context.set_default_timeout(60_000)
        page = context.new_page()
        page.goto(demo_url)
        # the proxy section's curl lines wrap inside their box: nothing to scroll sideways
        tries = page.locator("pre.proxy-try")
        expect(tries).to_have_count(2)
        for i in range(2):
            overflow = tries.nth(i).evaluate("el => el.scrollWidth - el.clientWidth")
            assert overflow <= 0, f"curl line {i} overflows its box by {overflow} px"
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 1280
        page.locator("section.proxy-demo").scroll_into_view_if_needed()
        screenshot(page, "demo-curl")
        # and still on a narrow window, where the URL itself must break (after "/")
        page.set_viewport_size({"width": 560, "height": 900})
        for i in range(2):
            overflow = tries.nth(i).evaluate("el => el.scrollWidth - el.clientWidth")
            assert overflow <= 0, f"curl line {i} overflows its box by {overflow} px at 560 px"
        page.locator("section.proxy-demo").scroll_into_view_if_needed()
        screenshot(page, "demo-curl-narrow")
        page.set_viewport_size({"width": 1280, "height": 900})

        # Given the entry S-2 opened from the demo ELN
        card = page.locator("section.entry[data-entry='S-2']")
        expect(card.locator(".attachments")).to_have_attribute("data-versions", "0")
        card.locator("a.lims-open").click()
        page.wait_for_url(re.compile(r".*/lab/tree/.*S-2\.ipynb"), timeout=90_000)
        toolbar = page.locator(".jp-NotebookPanel:visible .jp-NotebookPanel-toolbar")
        expect(toolbar.locator(".jp-LimsBridge-ElnLink a")).to_contain_text("Protein prep 7")

        # When the scientist clicks "Save to ELN"
        toolbar.get_by_role("button", name="Save to ELN").click()

        # Then it is saved as version 1, and the demo ELN's page shows it after a reload
        expect(toolbar.locator(".jp-LimsBridge-SaveStatus")).to_have_text(
            re.compile(r"Saved to ELN \(version 1\)"), timeout=60_000
        )
        page.goto(demo_url)
        card = page.locator("section.entry[data-entry='S-2']")
        expect(card.locator(".attachments")).to_have_attribute("data-versions", "1")
        expect(card.locator("li.attachment")).to_contain_text("version 1")
        card.scroll_into_view_if_needed()
        screenshot(page, "demo-save")
        # and its HTML export opens from the card
        view = card.locator("a.view").get_attribute("href")
        assert page.request.get(view).ok
    finally:
        context.close()
