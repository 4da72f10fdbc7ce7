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
    "id": "S-77",
    "title": "Lysozyme crystals",
    "url": "https://eln.example.org/samples/S-77",
}


def wait_for_idle_kernel(page: Page) -> None:
    expect(
        page.locator(".jp-NotebookPanel:visible .jp-Notebook-ExecutionIndicator")
    ).to_have_attribute("data-status", "idle", timeout=60_000)


def test_a_notebook_from_the_template_opens_clean(page: Page, lab: Lab):
    # When a scientist follows a deep link for a new entry
    page.goto(signing.make_deep_link(lab.url, lab.private_key, sub=OWNER, entity=ENTITY))
    page.wait_for_url(re.compile(r".*/lab/tree/.*S-77\.ipynb"))
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
    tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="S-77.ipynb")
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
