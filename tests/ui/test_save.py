"""Save to ELN in a real browser: the toolbar button lands the notebook in the LIMS stand-in.

Screenshots under ``test-artifacts/``.
"""

from __future__ import annotations

import json
import re

import requests
from playwright.sync_api import Locator, Page, expect

from jupyter_lims_bridge import signing
from tests.support.lims_standin import LimsStandIn

from .conftest import OWNER, PANEL_ID, Lab, screenshot

S43 = {
    "type": "sample",
    "id": "S-43",
    "title": "Buffer screen 4",
    "url": "https://eln.example.org/samples/S-43",
}
S44 = {"type": "sample", "id": "S-44", "title": "Buffer screen 5"}


def close_left_panel(page: Page) -> None:
    """With the LIMS panel open (a restored layout), the narrower notebook toolbar moves
    its last items into an overflow menu: close it, as a scientist with a small screen would."""
    panel = page.locator(f"#{PANEL_ID}")
    if panel.is_visible():
        page.click(f'.jp-SideBar .lm-TabBar-tab[data-id="{PANEL_ID}"]')
        expect(panel).to_be_hidden()


def notebook_toolbar(page: Page, name: str) -> Locator:
    """The toolbar of notebook ``name`` once it is the current document (a restored
    layout may show an earlier notebook first)."""
    expect(page.locator("#jp-main-dock-panel .lm-TabBar-tab.jp-mod-current")).to_contain_text(name)
    close_left_panel(page)
    return page.locator(".jp-NotebookPanel:visible .jp-NotebookPanel-toolbar")


def test_save_to_eln_from_the_toolbar_lands_in_the_lims(
    page: Page, lab: Lab, lims_standin: LimsStandIn
):
    before = len(lims_standin.attachments)
    # Given a deep link whose token carries a return to the LIMS
    link = signing.make_deep_link(
        lab.url,
        lab.private_key,
        sub=OWNER,
        entity=S43,
        extra={"return": lims_standin.return_claim()},
    )
    expect(page.locator(f'.jp-SideBar .lm-TabBar-tab[data-id="{PANEL_ID}"]')).to_be_visible()
    page.goto(link)
    page.wait_for_url(re.compile(r".*/lab/tree/.*S-43\.ipynb"))
    toolbar = notebook_toolbar(page, "S-43.ipynb")
    expect(toolbar.locator(".jp-LimsBridge-ElnLink a")).to_have_text("ELN: Buffer screen 4 ↗")
    close_left_panel(page)
    button = toolbar.get_by_role("button", name="Save to ELN")
    expect(button).to_be_visible()
    # the kernel's first answer adds its metadata: let it settle before editing
    expect(toolbar.locator(".jp-Notebook-ExecutionIndicator")).to_have_attribute(
        "data-status", "idle", timeout=30_000
    )

    # When the scientist edits the notebook (unsaved) and clicks "Save to ELN"
    cell = page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell").last
    cell.click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")  # a new code cell below
    page.keyboard.press("Enter")
    page.keyboard.type("result = 42  # analysed in Jupyter")
    page.keyboard.press("Escape")
    assert page.evaluate("() => window.jupyterapp.shell.currentWidget.context.model.dirty"), (
        "the edit is not saved yet"
    )
    button.click()

    # Then the notebook was saved first and landed in the LIMS, with its HTML export
    status = toolbar.locator(".jp-LimsBridge-SaveStatus")
    expect(status).to_have_text(re.compile(r"Saved to ELN \(version \d+\)"), timeout=30_000)
    assert len(lims_standin.attachments) == before + 1
    attachment = lims_standin.attachments[-1]
    notebook = json.loads(attachment.parts["notebook"].content)
    assert any("analysed in Jupyter" in "".join(c["source"]) for c in notebook["cells"])
    assert b"analysed in Jupyter" in attachment.parts["html"].content
    assert attachment.json("provenance")["entity"]["id"] == "S-43"
    assert lims_standin.received[-1].grant_ok
    dirty = page.evaluate("() => window.jupyterapp.shell.currentWidget.context.model.dirty")
    screenshot(page, "save-to-eln-toolbar")

    # And the panel's recent entries show the last save
    page.click(f'.jp-SideBar .lm-TabBar-tab[data-id="{PANEL_ID}"]')
    item = page.locator(".jp-LimsBridge-RecentItem", has_text="Buffer screen 4")
    expect(item.locator(".jp-LimsBridge-LastSave")).to_contain_text("saved to ELN", timeout=10_000)
    expect(item.locator(".jp-LimsBridge-LastSave")).to_contain_text(
        f"(version {attachment.version})"
    )
    screenshot(page, "save-to-eln-recent")
    close_left_panel(page)

    # When it is clicked again without a change, nothing is uploaded
    if dirty:  # the kernel's metadata arrived after the save: that is a change
        page.keyboard.press("Control+s")
        expect(page.locator(".jp-mod-current.jp-mod-dirty")).to_have_count(0)
        button.click()
        expect(status).to_have_text(re.compile(r"Saved to ELN"))
    count = len(lims_standin.attachments)
    button.click()
    expect(status).to_have_text(re.compile(r"Unchanged since the last save to ELN"))
    assert len(lims_standin.attachments) == count


def test_a_failed_save_shows_the_servers_message(page: Page, lab: Lab, lims_standin: LimsStandIn):
    link = signing.make_deep_link(
        lab.url,
        lab.private_key,
        sub=OWNER,
        entity=S44,
        extra={"return": lims_standin.return_claim()},
    )
    expect(page.locator(f'.jp-SideBar .lm-TabBar-tab[data-id="{PANEL_ID}"]')).to_be_visible()
    page.goto(link)
    page.wait_for_url(re.compile(r".*/lab/tree/.*S-44\.ipynb"))
    toolbar = notebook_toolbar(page, "S-44.ipynb")
    # Given a LIMS that refuses the upload
    lims_standin.behaviours = [403]
    toolbar.get_by_role("button", name="Save to ELN").click()
    # Then the scientist reads the status, never the LIMS's body
    status = toolbar.locator(".jp-LimsBridge-SaveStatus")
    expect(status).to_contain_text("The ELN refused the upload (HTTP 403)")
    expect(
        page.locator(".jp-Notification-Toast-error, .Toastify__toast--error").first
    ).to_be_visible()
    screenshot(page, "save-to-eln-refused")


def test_a_notebook_without_a_return_has_no_save_button(page: Page, lab: Lab):
    token = signing.make_token(
        lab.private_key, sub=OWNER, entity={**S43, "id": "S-45", "title": "Buffer screen 6"}
    )
    response = requests.post(
        lab.url + "lims/api/open", headers={"X-Lims-Token": token}, json={}, timeout=10
    )
    assert response.status_code in (200, 201), response.text
    path = response.json()["path"]
    expect(page.locator(f'.jp-SideBar .lm-TabBar-tab[data-id="{PANEL_ID}"]')).to_be_visible()
    page.evaluate(
        "p => { window.jupyterapp.commands.execute('docmanager:open', {path: p}); }", path
    )
    toolbar = page.locator(".jp-NotebookPanel:visible .jp-NotebookPanel-toolbar")
    expect(toolbar.locator(".jp-LimsBridge-ElnLink")).to_be_visible()
    page.wait_for_timeout(1000)  # the button asks the server once the notebook is ready
    expect(toolbar.get_by_role("button", name="Save to ELN")).to_have_count(0)
