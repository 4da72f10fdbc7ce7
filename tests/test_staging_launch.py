"""The deep-link launch page in a real browser while data is staged: progress,
a failure with its reason, "Retry", then navigation to the notebook; and, with
``wait_for_data`` off, straight to the notebook while the data still arrives.

A ``jupyter server`` subprocess on 127.0.0.1 (configured through
``LIMS_BRIDGE_*`` variables, as a spawner would), the test file server in a
thread, and Debian Chromium driven by sync Playwright. pytest-jupyter's
event loop is switched off in this module (sync Playwright runs its own).
Skipped when Playwright or Chromium is missing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from urllib.parse import quote

import pytest
import requests

from jupyter_lims_bridge import signing
from tests.support.browser import CHROMIUM_ARGS as ARGS
from tests.support.serverproc import (  # noqa: F401 - the fixtures switch pytest-jupyter off
    jp_asyncio_loop,
    jp_server_cleanup,
    jupyter_process,
)

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = os.environ.get("LIMS_BRIDGE_CHROMIUM", "/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM), reason="no Chromium")
OWNER = "alice"
BASE = f"/user/{OWNER}/"

SLOW = os.urandom(1024 * 1024)
BAD = os.urandom(64 * 1024)


@pytest.fixture
def server_env() -> dict[str, str]:
    """Extra ``LIMS_BRIDGE_*`` settings of the server (a test parametrizes it)."""
    return {}


@pytest.fixture
def server(tmp_path, key_pair, file_server, server_env):
    """A jupyter server with the bridge; yields (url, login token, root dir)."""
    with jupyter_process(
        tmp_path,
        owner=OWNER,
        public_key=key_pair[1],
        base_url=BASE,
        data_url_prefixes=[file_server.prefix],
        env=server_env,
    ) as server:
        yield server.url, server.login, server.root


def test_launch_page_shows_progress_and_a_failure_then_retries_and_opens(
    server, file_server, private_key
):
    url, login, root = server
    slow = file_server.add("slow.bin", SLOW, delay=0.05, chunk=32 * 1024)  # about 1.6 s
    # a 404 fails the job at once (no retry of a missing file)
    bad = file_server.add("bad.bin", BAD, status=404)
    token = signing.make_token(
        private_key,
        sub=OWNER,
        entity={"type": "sample", "id": "S-42", "title": "Buffer screen 3"},
        data=[
            {"name": "slow.bin", "url": slow, "size": len(SLOW)},
            {"name": "bad.bin", "url": bad, "sha256": hashlib.sha256(BAD).hexdigest()},
        ],
    )
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            # Given the owner follows the deep link (logged in by Jupyter's own token here)
            page.goto(f"{url}lims/open?lims_token={quote(token)}&token={login}")
            # Then while the slow download runs, its item shows a progress bar and bytes
            page.locator('li[data-name="slow.bin"] progress').wait_for(timeout=15000)
            page.wait_for_function(
                "() => / of 1\\.0 MiB/.test(document.querySelector('li[data-name=\"slow.bin\"]').textContent)",
                timeout=15000,
            )
            # And when the other item has failed: its reason, and a choice
            failed = page.locator('li[data-name="bad.bin"][data-status="failed"]')
            failed.wait_for(timeout=20000)
            assert "download_failed" in failed.text_content()
            # (the page keeps waiting for the slow item, then offers the choice)
            retry = page.get_by_role("button", name="Retry")
            retry.wait_for(timeout=20000)
            assert page.locator('li[data-name="slow.bin"]').get_attribute("data-status") == "done"
            assert page.get_by_text("Open the notebook anyway").is_visible()
            assert page.url.startswith(f"{url}lims/open")  # it did not navigate on its own
            # When the server recovers and the user clicks Retry
            file_server.files["bad.bin"].status = None
            retry.click()
            # Then the job finishes and the page navigates to the notebook
            page.wait_for_url("**/lab/tree/lims/sample-S-42/S-42.ipynb", timeout=30000)
        finally:
            browser.close()
    data = root / "lims" / "sample-S-42" / "data"
    assert (data / "slow.bin").read_bytes() == SLOW
    assert (data / "bad.bin").read_bytes() == BAD


@pytest.mark.parametrize("server_env", [{"LIMS_BRIDGE_WAIT_FOR_DATA": "false"}])
def test_without_waiting_the_notebook_opens_while_data_arrives(server, file_server, private_key):
    url, login, root = server
    slow = file_server.add("slow.bin", SLOW, delay=0.1, chunk=32 * 1024)  # about 3 s
    token = signing.make_token(
        private_key,
        sub=OWNER,
        entity={"type": "sample", "id": "S-43"},
        data=[{"name": "slow.bin", "url": slow, "sha256": hashlib.sha256(SLOW).hexdigest()}],
    )
    target = root / "lims" / "sample-S-43" / "data" / "slow.bin"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{url}lims/open?lims_token={quote(token)}&token={login}")
            # Then the page goes on to the notebook without waiting for the download
            page.wait_for_url("**/lab/tree/lims/sample-S-43/S-43.ipynb", timeout=30000)
            jobs = requests.get(
                url + "lims/api/staging", timeout=5, headers={"Authorization": f"token {login}"}
            ).json()
            assert [j["state"] for j in jobs["jobs"]] in (["queued"], ["running"])
            assert not target.exists()
        finally:
            browser.close()
    # And the data arrives beside it, whole
    deadline = time.monotonic() + 30
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert target.read_bytes() == SLOW
