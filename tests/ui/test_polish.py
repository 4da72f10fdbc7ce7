"""First-use polish, as a new user meets it in Chromium: a notebook made from a
template opens clean (no unsaved-changes mark once its kernel is up); launch-page
errors lead somewhere (back to the entry, or JupyterLab's home). Screenshots in
``test-artifacts/polish-*.png``."""

from __future__ import annotations

import re
import time

from playwright.sync_api import Page, expect

from jupyter_lims_bridge import signing

from .conftest import OWNER, Lab, screenshot

ENTITY = {
    "type": "sample",
    "id": "P-501",
    "title": "Lysozyme crystals",
    "url": "https://eln.example.org/samples/P-501",
}


def wait_for_idle_kernel(page: Page) -> None:
    expect(
        page.locator(".jp-NotebookPanel:visible .jp-Notebook-ExecutionIndicator")
    ).to_have_attribute("data-status", "idle", timeout=60_000)


def test_a_notebook_from_the_template_opens_clean(page: Page, lab: Lab):
    # When a scientist follows a deep link for a new entry
    page.goto(signing.make_deep_link(lab.url, lab.private_key, sub=OWNER, entity=ENTITY))
    page.wait_for_url(re.compile(r".*/lab/tree/.*P-501\.ipynb"))
    # and the notebook's kernel has started (it reports its language then)
    wait_for_idle_kernel(page)
    page.wait_for_timeout(1500)
    state = page.evaluate(
        """() => { const w = window.jupyterapp.shell.currentWidget;
                   return {dirty: w.context.model.dirty,
                           info: w.context.model.getMetadata('language_info'),
                           kernel: w.sessionContext.session && w.sessionContext.session.kernel.name}; }"""
    )
    assert state["dirty"] is False and state["kernel"] == "python3", state
    # Then its tab shows no unsaved-changes mark
    tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="P-501.ipynb")
    expect(tab).to_be_visible()
    expect(tab).not_to_have_class(re.compile(r"jp-mod-dirty"))
    # and the text says nothing of data the entry does not have
    expect(page.locator(".jp-NotebookPanel:visible .jp-MarkdownOutput").first).not_to_contain_text(
        "data"
    )
    screenshot(page, "polish-template-notebook-clean")


def test_an_expired_link_leads_back_to_the_entry(page: Page, lab: Lab):
    now = int(time.time())
    link = signing.make_deep_link(
        lab.url, lab.private_key, sub=OWNER, entity=ENTITY, now=now - 400, lifetime=300
    )
    page.goto(link)
    expect(page.locator("h1")).to_have_text("This link has expired")
    expect(page.get_by_role("link", name="Back to the ELN entry")).to_have_attribute(
        "href", ENTITY["url"]
    )
    expect(page.locator(".lims-reason")).to_have_text("token_expired")
    screenshot(page, "polish-error-expired")


def test_a_link_that_does_not_verify_leads_to_jupyterlab(page: Page, lab: Lab):
    from cryptography.hazmat.primitives.asymmetric import ed25519

    stranger = ed25519.Ed25519PrivateKey.generate()
    page.goto(signing.make_deep_link(lab.url, stranger, sub=OWNER, entity=ENTITY))
    expect(page.locator("h1")).to_have_text("This Jupyter cannot check this link")
    expect(page.get_by_role("link", name="Back to the ELN entry")).to_have_count(0)
    screenshot(page, "polish-error-not-verified")
    page.get_by_role("link", name="Go to JupyterLab").click()
    page.wait_for_url(re.compile(r".*/lab(\?.*)?$"))
    expect(page.locator("#jp-main-dock-panel")).to_be_visible()


def test_a_replayed_link_in_another_browser_leads_back(page: Page, lab: Lab):
    # the launch page's own error (from POST lims/api/open): a link used by the LIMS
    # itself, server to server, then followed in the browser
    import requests

    token = signing.make_token(lab.private_key, sub=OWNER, entity=ENTITY)
    page.route(
        re.compile(r".*/lims/api/open$"),
        lambda route: route.fulfill(
            status=409,
            content_type="application/json",
            body='{"message": "This link has already been used.", "reason": "token_replayed"}',
        ),
    )
    page.goto(signing.deep_link(lab.url, token))
    expect(page.locator("#lims-error-heading")).to_have_text("This link has already been used")
    expect(page.get_by_role("link", name="Back to the ELN entry")).to_have_attribute(
        "href", ENTITY["url"]
    )
    expect(page.locator("#lims-error-reason")).to_have_text("token_replayed")
    screenshot(page, "polish-error-replayed")
    del requests


# the text of each visual line of an element (the rendered line boxes, by their top)
LINES_JS = """el => {
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  const lines = [];
  let top = null;
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (let i = 0; i < node.length; i++) {
      const range = document.createRange();
      range.setStart(node, i);
      range.setEnd(node, i + 1);
      const rect = range.getClientRects()[0];
      if (!rect) { continue; }
      if (top === null || rect.top > top + 2) { lines.push(''); top = rect.top; }
      lines[lines.length - 1] += node.data[i];
    }
  }
  return lines;
}"""


def open_panel(page: Page) -> None:
    from .test_panel import open_panel as open_it

    open_it(page)


def test_urls_and_curl_lines_wrap_at_sensible_points(page: Page, lab: Lab):
    # Given the panel in a narrow sidebar
    open_panel(page)
    page.evaluate(
        "() => { const p = document.getElementById('jp-left-stack'); if (p) p.style.width = '260px'; "
        "window.dispatchEvent(new Event('resize')); }"
    )
    page.wait_for_timeout(500)
    port = page.locator(f'.jp-LimsBridge-Port[data-port="{lab.backend_port}"]')
    expect(port).to_be_visible()
    for code in (
        port.locator(".jp-LimsBridge-Code").first,
        port.locator(".jp-LimsBridge-Curl .jp-LimsBridge-Code"),
    ):
        lines = code.evaluate(LINES_JS)
        text = code.text_content()
        # Then a long line wraps, and each line ends after "/", "?", "&" or at a space
        # (a space at the end of a line is not drawn)
        assert len(lines) > 1, lines
        position = 0
        for line in lines[:-1]:
            end = text.index(line.rstrip(" "), position) + len(line.rstrip(" "))
            assert line.rstrip(" ")[-1] in "/?&" or text[end] == " ", lines
            position = end
        assert all(not line.endswith(":/") for line in lines), lines
    screenshot(page, "polish-proxy-urls-wrap")


def test_copies_of_one_entry_are_one_row_with_its_copies(page: Page, lab: Lab):
    import requests

    entity = {**ENTITY, "id": "P-502", "title": "Copies of one entry"}
    paths = []
    for new in (False, True, True):
        token = signing.make_token(lab.private_key, sub=OWNER, entity=entity, notebook={"new": new})
        r = requests.post(
            lab.url + "lims/api/open", headers={"X-Lims-Token": token}, json={}, timeout=30
        )
        assert r.status_code in (200, 201), r.text
        paths.append(r.json()["path"])
    assert len(set(paths)) == 3
    open_panel(page)
    page.evaluate("() => window.jupyterapp.commands.execute('lims-bridge:refresh')")
    row = page.locator('.jp-LimsBridge-RecentItem[data-copies="3"]')
    expect(row).to_have_count(1)
    expect(row.locator(".jp-LimsBridge-RecentTitle")).to_have_text("Copies of one entry")
    expect(row.locator(".jp-LimsBridge-RecentTitle")).to_have_attribute(
        "title", "Copies of one entry"
    )
    expect(row.locator(".jp-LimsBridge-RecentMeta").first).to_contain_text("3 notebooks")
    copies = row.locator(".jp-LimsBridge-RecentCopy")
    expect(copies).to_have_count(3)
    expect(copies.nth(0)).to_contain_text("P-502-2.ipynb")  # newest first
    copies.nth(2).scroll_into_view_if_needed()
    screenshot(page, "polish-recent-grouped")
    copies.nth(2).get_by_role("button").click()
    expect(page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.jp-mod-current")).to_contain_text(
        "P-502.ipynb"
    )
