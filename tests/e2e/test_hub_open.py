"""Opening ELN deep links through a real JupyterHub, its proxy and a browser.

Given a hub whose single-user servers verify tokens with the LIMS's public key,
these tests follow the path a scientist's click and a LIMS backend take:
``/hub/user-redirect/lims/open?lims_token=…`` in headless Chromium, and
``POST /user/<name>/lims/api/open`` server to server.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import requests
from playwright.sync_api import TimeoutError as PlaywrightTimeout

pytestmark = pytest.mark.e2e

LAB_TIMEOUT = 60_000  # ms: a first spawn plus JupyterLab's first load on a busy machine


def entity(entity_id: str, title: str) -> dict[str, str]:
    return {
        "type": "sample",
        "id": entity_id,
        "title": title,
        "url": f"https://eln.example.org/samples/{entity_id}",
    }


def wait_for_url(hub, page, pattern: re.Pattern[str]) -> None:
    """Wait until the browser is sent to ``pattern`` (not for that page to load: tests
    that look at JupyterLab wait for what they look at); on timeout say where the
    browser stopped and why."""
    try:
        page.wait_for_url(pattern, timeout=LAB_TIMEOUT, wait_until="commit")
    except PlaywrightTimeout:
        where = page.url.split("lims_token=")[0]
        text = page.locator("body").inner_text()[:500]
        raise AssertionError(f"stopped at {where}: {text}\n{hub.extension_errors()}") from None


def notebooks_under(home: Path) -> list[str]:
    root = home / "lims"
    return sorted(str(p.relative_to(home)) for p in root.rglob("*.ipynb")) if root.exists() else []


def test_deep_link_in_browser_opens_the_notebook_in_jupyterlab(hub, page, artifacts):
    # Given alice logged in through the hub's login form (her server not started yet)
    hub.browser_login(page, "alice")
    link = hub.deep_link("alice", entity=entity("S-100", "Buffer screen 100"))

    # When she follows the ELN's deep link
    page.goto(link)

    # Then she lands in JupyterLab on the notebook made for the entry
    wait_for_url(hub, page, re.compile(r"/user/alice/lab/tree/lims/sample-S-100/S-100\.ipynb$"))
    tab = page.locator("#jp-main-dock-panel .lm-TabBar-tab", has_text="S-100.ipynb")
    tab.wait_for(state="visible", timeout=LAB_TIMEOUT)
    heading = page.locator(
        ".jp-NotebookPanel .jp-RenderedMarkdown h1", has_text="Buffer screen 100"
    )
    heading.wait_for(state="visible", timeout=LAB_TIMEOUT)
    page.screenshot(path=str(artifacts / "e2e-hub-open-notebook.png"))
    # and the notebook is in her home, under the workspace
    notebook = hub.home("alice") / "lims" / "sample-S-100" / "S-100.ipynb"
    assert notebook.is_file()
    assert json.loads(notebook.read_text())["metadata"]["lims"]["entity"]["id"] == "S-100"


def test_deep_link_with_another_users_token_shows_wrong_user(hub, page):
    # Given alice logged in, and a link the ELN made for bob
    hub.browser_login(page, "alice")
    hub.spawn("alice")
    link = hub.deep_link("bob", entity=entity("S-200", "Bob's sample"))
    before = notebooks_under(hub.home("alice"))

    # When alice follows it
    with page.expect_response(lambda r: "/user/alice/lims/open?" in r.url) as info:
        page.goto(link)

    # Then she sees a readable wrong_user page with a way back to the ELN entry
    assert info.value.status == 403
    assert page.locator("[data-reason=wrong_user]").is_visible()
    text = page.locator("main").inner_text()
    assert "made for someone else" in text and "Sign in as yourself" in text
    back = page.get_by_role("link", name="Back to the ELN entry")
    assert back.get_attribute("href") == "https://eln.example.org/samples/S-200"
    # and nothing was written
    assert notebooks_under(hub.home("alice")) == before


def test_server_to_server_open_through_the_hub_proxy(hub):
    # Given alice's running server and a token the LIMS made for her
    hub.spawn("alice")
    token = hub.token("alice", entity=entity("S-300", "Plate 300"))
    url = hub.user_url("alice") + "lims/api/open"

    # When the LIMS backend POSTs it with only X-Lims-Token (no cookies)
    r = requests.post(url, headers={"X-Lims-Token": token}, timeout=30, allow_redirects=False)

    # Then the notebook is created and described per DESIGN.md
    assert r.status_code == 201, r.text
    assert r.json() == {
        "fileName": "S-300.ipynb",
        "path": "lims/sample-S-300/S-300.ipynb",
        "url": "/user/alice/lab/tree/lims/sample-S-300/S-300.ipynb",
        "created": True,
        "dryRun": False,
        "data": [],
    }
    assert (hub.home("alice") / "lims" / "sample-S-300" / "S-300.ipynb").is_file()

    # When the same token is sent again
    again = requests.post(url, headers={"X-Lims-Token": token}, timeout=30, allow_redirects=False)

    # Then it is refused as a replay
    assert again.status_code == 409
    assert again.json()["reason"] == "token_replayed"
    assert token not in again.text


def test_browser_replay_of_a_used_link_goes_to_the_same_notebook(hub, page):
    # Given alice opened an entry through a deep link
    hub.browser_login(page, "alice")
    link = hub.deep_link("alice", entity=entity("S-400", "Replayed entry"))
    lab_url = re.compile(r"/user/alice/lab/tree/lims/sample-S-400/S-400\.ipynb$")
    page.goto(link)
    wait_for_url(hub, page, lab_url)
    notebook = hub.home("alice") / "lims" / "sample-S-400" / "S-400.ipynb"
    first = notebook.read_bytes()
    opens = []
    page.on(
        "request",
        lambda r: opens.append(r) if r.method == "POST" and "/lims/api/open" in r.url else None,
    )

    # When she follows the same (now used) link again
    page.goto(link)

    # Then she lands on the same notebook, and nothing was opened again
    wait_for_url(hub, page, lab_url)
    assert opens == []
    assert notebooks_under(hub.home("alice")).count("lims/sample-S-400/S-400.ipynb") == 1
    assert not (notebook.parent / "S-400-1.ipynb").exists()
    assert notebook.read_bytes() == first


def test_get_of_the_deep_link_has_no_side_effect(hub):
    # Given alice's logged-in HTTP session (a client that runs no scripts, like a link previewer)
    session = hub.spawn("alice")
    token = hub.token("alice", entity=entity("S-500", "Previewed entry"))
    link = hub.user_redirect_url + "lims/open?" + requests.compat.urlencode({"lims_token": token})

    # When it GETs the deep link (following the hub's redirects and OAuth)
    r = session.get(link, timeout=30)

    # Then it gets the launch page, and no notebook exists
    assert r.status_code == 200, r.text[:500]
    assert r.url.startswith(hub.user_url("alice") + "lims/open?")
    assert 'id="lims-launch"' in r.text
    assert not (hub.home("alice") / "lims" / "sample-S-500").exists()

    # and the link is still usable
    r = requests.post(
        hub.user_url("alice") + "lims/api/open", headers={"X-Lims-Token": token}, timeout=30
    )
    assert r.status_code == 201, r.text
    assert (hub.home("alice") / "lims" / "sample-S-500" / "S-500.ipynb").is_file()


def test_deep_link_for_a_browser_not_logged_in_goes_through_the_hub_login(hub, page):
    # Given a browser that is not logged in to the hub, and a link the ELN made for alice
    link = hub.deep_link("alice", entity=entity("S-600", "Logged in on the way"))

    # When it follows the link, and alice logs in on the form the hub shows
    page.goto(link)
    page.wait_for_url(re.compile(r"/hub/login\?next="))
    page.fill("#username_input", "alice")
    page.fill("#password_input", hub.password)
    page.click("#login_submit")

    # Then she lands in JupyterLab on the entry's notebook
    wait_for_url(hub, page, re.compile(r"/user/alice/lab/tree/lims/sample-S-600/S-600\.ipynb$"))
    assert (hub.home("alice") / "lims" / "sample-S-600" / "S-600.ipynb").is_file()


def test_the_owners_session_reads_status_configured_by_the_spawner(hub):
    # Given alice's session on his server (OAuth done, XSRF header set)
    session = hub.user_session("alice")

    # When she asks the bridge for its status, and an anonymous client does the same
    mine = session.get(hub.user_url("alice") + "lims/api/status", timeout=10)
    anonymous = requests.get(
        hub.user_url("alice") + "lims/api/status", timeout=10, allow_redirects=False
    )

    # Then she sees the configuration the spawner gave through LIMS_BRIDGE_* variables
    assert mine.status_code == 200, mine.text
    status = mine.json()
    assert status["owner"] == "alice"
    assert status["proxy"]["allowedPorts"] == list(hub.allowed_ports)
    assert status["mounts"] == ["archive"]
    # and the anonymous client is refused
    assert anonymous.status_code in (302, 401, 403)


def test_deep_link_with_data_waits_for_the_download_then_opens(hub, page):
    # Given an entry with a file on the LIMS's file server and a folder on the mounted store
    content = b"well,value\n" + b"".join(b"A%d,%d\n" % (i, i * 7) for i in range(1, 5000))
    (hub.files_dir / "plate-700.csv").write_bytes(content)
    data = [
        {
            "name": "plate.csv",
            "url": hub.files_url + "plate-700.csv",
            "sha256": hashlib.sha256(content).hexdigest(),
            "size": len(content),
        },
        {"name": "raw", "mount": "archive", "path": "2026/S-42/raw"},
    ]
    hub.browser_login(page, "alice")
    link = hub.deep_link("alice", entity=entity("S-700", "Plate with data"), data=data)
    staging = []
    page.on(
        "response", lambda r: staging.append(r.status) if "/lims/api/staging" in r.url else None
    )

    # When alice follows the link
    page.goto(link)

    # Then she lands on the notebook with the data beside it: downloaded, verified, linked
    wait_for_url(hub, page, re.compile(r"/user/alice/lab/tree/lims/sample-S-700/S-700\.ipynb$"))
    folder = hub.home("alice") / "lims" / "sample-S-700"
    assert (folder / "data" / "plate.csv").read_bytes() == content
    assert (folder / "data" / "raw" / "run1.csv").read_text() == "a,b\n1,2\n"
    # and the launch page's progress polls, if any, were answered through the hub
    assert all(status == 200 for status in staging), staging
