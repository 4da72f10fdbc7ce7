"""The LIMS panel in a real browser against a real server and a real backend service.

Each test saves a screenshot under ``test-artifacts/``.
"""

from __future__ import annotations

import json
import re
import time

import pytest
import requests
from playwright.sync_api import Page, expect

from jupyter_lims_bridge import signing

from .conftest import OWNER, PANEL_ID, Lab, require_route, screenshot

S42 = {
    "type": "sample",
    "id": "S-42",
    "title": "Buffer screen 3",
    "url": "https://eln.example.org/samples/S-42",
}
S41 = {
    "type": "sample",
    "id": "S-41",
    "title": "Buffer screen 2",
    "url": "https://eln.example.org/samples/S-41",
}


def wait_for_lab(page: Page) -> None:
    expect(page.locator(f'.jp-SideBar .lm-TabBar-tab[data-id="{PANEL_ID}"]')).to_be_visible()


def open_panel(page: Page) -> None:
    """Click the LIMS tab of the left sidebar (JupyterLab's layout restore beats activateById)."""
    wait_for_lab(page)
    panel = page.locator(f"#{PANEL_ID}")
    if not panel.is_visible():
        page.click(f'.jp-SideBar .lm-TabBar-tab[data-id="{PANEL_ID}"]')
    expect(panel).to_be_visible()
    expect(panel.locator(".jp-LimsBridge-Banner-info")).to_have_count(0)


def set_theme(page: Page, dark: bool) -> None:
    theme = "JupyterLab Dark" if dark else "JupyterLab Light"
    page.evaluate(
        "t => window.jupyterapp.commands.execute('apputils:change-theme', {theme: t})", theme
    )
    expect(page.locator("body")).to_have_attribute(
        "data-jp-theme-light", "false" if dark else "true"
    )
    page.wait_for_timeout(300)  # let the theme's CSS apply before a screenshot


def proxy_status(lab: Lab, token: str | None) -> requests.Response:
    headers = {"X-Proxy-Token": token} if token else {}
    return requests.get(lab.proxy_url(), headers=headers, timeout=10)


def wait_for_status(lab: Lab, token: str, status: int, seconds: float = 5) -> requests.Response:
    deadline = time.monotonic() + seconds
    while True:
        response = proxy_status(lab, token)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


def test_a_token_created_in_the_panel_reaches_the_backend_until_it_is_revoked(page: Page, lab: Lab):
    require_route(lab, "lims/api/tokens", "proxy tokens")
    # Given JupyterLab with the LIMS panel open
    wait_for_lab(page)
    set_theme(page, dark=False)
    open_panel(page)
    panel = page.locator(f"#{PANEL_ID}")
    expect(panel.locator(".jp-LimsBridge-Port")).to_contain_text(f"lims/proxy/{lab.backend_port}/")

    # When the user creates a token "ci" scoped to the backend's port
    panel.get_by_role("button", name="New token…").click()
    form = panel.get_by_role("form", name="Create a proxy token")
    form.get_by_label("Name").fill("ci")
    form.get_by_label(str(lab.backend_port), exact=True).check()
    form.get_by_label("Expires after").select_option(label="1 day")
    form.get_by_role("button", name="Create token").click()

    # Then the token is shown once, with a plain warning and a ready curl line
    box = panel.locator(".jp-LimsBridge-NewToken")
    expect(box).to_contain_text("you will not see it again")
    token = box.locator(".jp-LimsBridge-Secret code").inner_text().strip()
    assert token.startswith("jlb_")
    expect(box.locator(".jp-LimsBridge-Curl code")).to_have_text(
        f"curl -H \"X-Proxy-Token: {token}\" '{lab.proxy_url()}'"
    )
    screenshot(page, "panel-token-created-light")

    # And an HTTP client holding it reaches the backend through the proxy
    response = proxy_status(lab, token)
    assert response.status_code == 200
    assert response.text == "hello from the instrument simulator\n"

    # When the user has copied it, the secret is gone and the token is listed
    box.get_by_role("button", name="I have copied it").click()
    expect(box).to_have_count(0)
    expect(panel.locator(".jp-LimsBridge-Secret")).to_have_count(0)
    row = panel.locator(".jp-LimsBridge-Token", has_text="ci")
    expect(row).to_contain_text(str(lab.backend_port))
    expect(row.locator("dd").nth(2)).to_have_text("tomorrow")  # expires in a day

    # When the server refuses a request, the panel shows the server's message
    page.route(
        "**/lims/api/tokens?*",
        lambda route: (
            route.fulfill(
                status=403,
                content_type="application/json",
                body=json.dumps(
                    {
                        "message": "A token can only be scoped to ports in allowed_ports.",
                        "reason": "port_not_allowed",
                    }
                ),
            )
            if route.request.method == "POST"
            else route.fallback()
        ),
    )
    panel.get_by_role("button", name="New token…").click()
    form.get_by_label("Name").fill("too-wide")
    form.get_by_role("button", name="Create token").click()
    expect(form.get_by_role("alert")).to_have_text(
        "A token can only be scoped to ports in allowed_ports."
    )
    form.get_by_role("button", name="Cancel").click()
    page.unroute("**/lims/api/tokens?*")

    # When the user revokes it and confirms
    row.get_by_role("button", name="Revoke token ci").click()
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_contain_text('Revoke the token "ci"?')
    screenshot(page, "panel-token-revoke-dialog-light")
    dialog.get_by_role("button", name="Revoke").click()
    expect(row).to_have_count(0)

    # Then the same token is refused
    response = wait_for_status(lab, token, 401)
    assert response.status_code == 401
    assert response.json()["reason"] == "token_invalid"


def test_the_panel_is_restored_with_the_layout(page: Page, lab: Lab):
    # Given the user opened the LIMS panel
    open_panel(page)
    page.wait_for_timeout(1500)  # JupyterLab saves the layout to the workspace shortly after
    # When JupyterLab is loaded again (without resetting the workspace)
    page.goto(f"{lab.url}lab")
    # Then the panel is open again, without a click
    wait_for_lab(page)
    expect(page.locator(f"#{PANEL_ID}")).to_be_visible()
    expect(page.locator(f'.jp-SideBar .lm-TabBar-tab[data-id="{PANEL_ID}"]')).to_have_class(
        re.compile(r"lm-mod-current")
    )


def test_the_settings_schema_is_served_with_a_title_and_description_per_property(lab: Lab):
    response = lab.api("GET", "lab/api/settings/jupyter-lims-bridge:plugin")
    assert response.status_code == 200
    properties = response.json()["schema"]["properties"]
    assert set(properties) == {"refreshInterval", "defaultTokenExpiry"}
    for name, spec in properties.items():
        assert spec.get("title") and spec.get("description"), name


def test_switching_the_mode_to_disabled_refuses_the_proxy(page: Page, lab: Lab, reset_proxy_mode):
    require_route(lab, "lims/api/tokens", "proxy tokens")
    # Given a valid token and the panel open in the dark theme
    created = lab.api(
        "POST", "lims/api/tokens", data=json.dumps({"name": "script", "ports": [lab.backend_port]})
    )
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    assert proxy_status(lab, token).status_code == 200
    wait_for_lab(page)
    set_theme(page, dark=True)
    open_panel(page)

    # When the user picks "Disabled" as the proxy mode
    mode = page.get_by_label("Proxy mode")
    expect(mode).to_have_value("token")
    mode.select_option("disabled")

    # Then the proxy refuses even a valid token: 403 proxy_disabled
    response = wait_for_status(lab, token, 403)
    assert response.status_code == 403
    assert response.json()["reason"] == "proxy_disabled"
    assert lab.api("GET", "lims/api/status").json()["proxy"]["mode"] == "disabled"
    # and the panel no longer offers curl lines for a proxy that refuses them
    expect(page.locator(f"#{PANEL_ID} .jp-LimsBridge-Curl")).to_have_count(0)
    screenshot(page, "panel-mode-disabled-dark")


def test_a_deep_link_opens_the_notebook_with_an_eln_link_and_lists_it_first(page: Page, lab: Lab):
    # Given an entry opened earlier by the LIMS, server to server
    earlier = signing.make_token(lab.private_key, sub=OWNER, entity=S41)
    response = requests.post(
        lab.url + "lims/api/open", headers={"X-Lims-Token": earlier}, json={}, timeout=10
    )
    assert response.status_code in (200, 201), response.text

    wait_for_lab(page)
    set_theme(page, dark=False)
    # When the user follows a signed deep link from the ELN
    page.goto(signing.make_deep_link(lab.url, lab.private_key, sub=OWNER, entity=S42))

    # Then the notebook opens, with a toolbar link back to the ELN entry
    page.wait_for_url(re.compile(r".*/lab/tree/.*S-42\.ipynb"))
    link = page.locator(".jp-NotebookPanel-toolbar .jp-LimsBridge-ElnLink a")
    expect(link).to_have_text("ELN: Buffer screen 3 ↗")
    expect(link).to_have_attribute("href", S42["url"])
    expect(link).to_have_attribute("target", "_blank")

    # And the panel lists it under recent entries, newest first, linking to the ELN
    open_panel(page)
    items = page.locator(".jp-LimsBridge-RecentItem")
    expect(items).to_have_count(2)
    expect(items.nth(0)).to_contain_text("Buffer screen 3")
    expect(items.nth(1)).to_contain_text("Buffer screen 2")
    expect(
        items.nth(0).get_by_role("link", name="Open Buffer screen 3 in the ELN")
    ).to_have_attribute("href", S42["url"])
    screenshot(page, "deep-link-notebook-and-recent-light")

    # And a notebook that was not opened from the ELN has no such link
    kernelspec = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    plain = {
        "type": "notebook",
        "content": {
            "cells": [],
            "metadata": {"kernelspec": kernelspec},
            "nbformat": 4,
            "nbformat_minor": 5,
        },
    }
    assert lab.api("PUT", "api/contents/plain.ipynb", data=json.dumps(plain)).status_code in (
        200,
        201,
    )
    page.evaluate(
        "() => { window.jupyterapp.commands.execute('docmanager:open', {path: 'plain.ipynb'}); }"
    )
    expect(page.locator(".jp-NotebookPanel:visible .jp-NotebookPanel-toolbar")).to_be_visible()
    expect(page.locator(".jp-NotebookPanel:visible .jp-LimsBridge-ElnLink")).to_be_hidden()

    # When the user opens the older entry from the panel, its notebook opens
    items.nth(1).get_by_role("button").click()
    expect(page.locator(".jp-NotebookPanel-toolbar .jp-LimsBridge-ElnLink a:visible")).to_have_text(
        "ELN: Buffer screen 2 ↗"
    )
    set_theme(page, dark=True)
    screenshot(page, "deep-link-notebook-and-recent-dark")


@pytest.mark.parametrize(
    ("status", "body", "says", "dark"),
    [
        (404, "<html>404 Not Found</html>", "is not running on this Jupyter server", True),
        (200, None, "is version 9.9.9, this panel is version", False),
    ],
    ids=["missing", "other-version"],
)
def test_the_panel_says_plainly_when_the_server_extension_is_missing_or_different(
    page: Page, lab: Lab, status, body, says, dark
):
    # Given a server whose lims/api/status is absent, or reports another version
    if body is None:
        real = lab.api("GET", "lims/api/status").json()
        body = json.dumps({**real, "version": "9.9.9"})
    page.route(
        "**/lims/api/status*",
        lambda route: route.fulfill(status=status, body=body, content_type="application/json"),
    )
    # When JupyterLab starts and the user opens the panel
    page.reload()
    wait_for_lab(page)
    set_theme(page, dark=dark)
    open_panel(page)
    # Then the panel says so in words
    banner = page.locator(f"#{PANEL_ID} .jp-LimsBridge-Banner")
    expect(banner).to_contain_text(says)
    expect(banner).to_have_attribute("role", "alert")
    name = "missing" if status == 404 else "other-version"
    screenshot(page, f"panel-server-{name}-{'dark' if dark else 'light'}")


def test_the_data_section_shows_progress_and_retries_a_failed_download(page: Page, lab: Lab):
    # Given staging jobs in progress and one failed (the staging API answered by the test)
    jobs = [
        {
            "id": "j1",
            "name": "plate.csv",
            "path": "lims/sample-S-42/data/plate.csv",
            "state": "running",
            "bytesDone": 7 * 1024 * 1024,
            "bytesTotal": 20 * 1024 * 1024,
            "reason": None,
        },
        {
            "id": "j2",
            "name": "raw.h5",
            "path": "lims/sample-S-42/data/raw.h5",
            "state": "failed",
            "bytesDone": 0,
            "bytesTotal": None,
            "reason": "download_failed",
            "message": "The LIMS answered 503 while downloading raw.h5.",
        },
        {
            "id": "j3",
            "name": "notes.txt",
            "path": "lims/sample-S-42/data/notes.txt",
            "state": "done",
            "bytesDone": 1200,
            "bytesTotal": 1200,
            "reason": None,
        },
    ]
    retried: list[str] = []

    def staging(route):
        if route.request.method == "POST":
            retried.append(route.request.url.split("?")[0].rsplit("/", 1)[-1])
            jobs[1] = {**jobs[1], "state": "queued", "reason": None}
            route.fulfill(status=200, body=json.dumps(jobs[1]), content_type="application/json")
        else:
            route.fulfill(
                status=200, body=json.dumps({"jobs": jobs}), content_type="application/json"
            )

    page.route(re.compile(r".*/lims/api/staging(/[^/?]+)?(\?.*)?$"), staging)
    page.reload()
    wait_for_lab(page)
    set_theme(page, dark=False)
    # When the user opens the panel and folds the Proxy and Tokens sections with the keyboard
    open_panel(page)
    panel = page.locator(f"#{PANEL_ID}")
    for section in ("Proxy", "Tokens"):
        header = panel.get_by_role("button", name=section, exact=True)
        header.focus()
        page.keyboard.press("Enter")
        expect(header).to_have_attribute("aria-expanded", "false")
        expect(
            panel.locator(f".jp-LimsBridge-Section-{section} .jp-LimsBridge-SectionBody")
        ).to_be_hidden()
    data = panel.locator(".jp-LimsBridge-Section-Data")
    # Then the running job shows its progress and the failed one its reason
    progress = data.get_by_role("progressbar", name="Download of plate.csv")
    expect(progress).to_have_attribute("value", str(7 * 1024 * 1024))
    expect(data.locator('[data-job-id="j1"]')).to_contain_text("7.0 MiB of 20.0 MiB")
    expect(data.locator('[data-job-id="j2"]')).to_contain_text(
        "The LIMS answered 503 while downloading raw.h5. (download_failed)"
    )
    screenshot(page, "panel-data-light")
    # When the user retries the failed download
    data.get_by_role("button", name="Retry raw.h5").click()
    # Then the panel asks the server to retry it and shows it queued again
    expect(data.locator('[data-job-id="j2"] .jp-LimsBridge-JobState')).to_have_text("queued")
    assert retried == ["j2"]


def test_a_real_failed_download_shows_its_reason_and_is_retried(page: Page, lab: Lab):
    require_route(lab, "lims/api/staging", "data staging")
    # Given an entry opened by the LIMS whose data file fails its checksum
    token = signing.make_token(
        lab.private_key,
        sub=OWNER,
        entity={"type": "sample", "id": "S-77", "title": "Checksum trouble"},
        data=[
            {
                "name": "plate.csv",
                "url": f"http://127.0.0.1:{lab.backend_port}/files/plate.csv",
                "sha256": "0" * 64,
            }
        ],
    )
    opened = requests.post(
        lab.url + "lims/api/open", headers={"X-Lims-Token": token}, json={}, timeout=10
    )
    assert opened.status_code == 201, opened.text
    job_id = opened.json()["data"][0]["job"]
    # When the user opens the panel
    wait_for_lab(page)
    open_panel(page)
    job = page.locator(f'#{PANEL_ID} [data-job-id="{job_id}"]')
    # Then the job is shown failed, with the server's reason
    expect(job.locator(".jp-LimsBridge-JobState")).to_have_text("failed")
    expect(job).to_contain_text("(checksum_mismatch)")
    set_theme(page, dark=True)
    job.scroll_into_view_if_needed()
    screenshot(page, "panel-data-failed-download-dark")
    # When the user retries it, the panel asks the server to run it again
    with page.expect_response(
        lambda r: (
            r.url.split("?")[0].endswith(f"/lims/api/staging/{job_id}")
            and r.request.method == "POST"
        )
    ) as retried:
        job.get_by_role("button", name="Retry plate.csv").click()
    assert retried.value.status == 202
    # and, at the panel's next refresh, it has failed the same way again
    expect(job.locator(".jp-LimsBridge-JobState")).to_have_text("failed", timeout=15_000)
    expect(job).to_contain_text("(checksum_mismatch)")
