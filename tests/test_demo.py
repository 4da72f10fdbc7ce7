"""``jupyter lims-bridge demo`` end to end: started as a user would, driven over HTTP.

Given the demo running as a subprocess, the ELN page's "Open in Jupyter" links
open notebooks in its JupyterLab, and SIGTERM stops everything and removes the
temporary directory.
"""

from __future__ import annotations

import base64
import html
import json
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.support.demo import STOP_TIMEOUT, RunningDemo, running_demo


@pytest.fixture
def demo() -> Iterator[RunningDemo]:
    with running_demo() as running:
        yield running


def open_links(page: str, css_class: str) -> dict[str, str]:
    """entry id -> href of its link with ``css_class`` on the ELN page."""
    links = {}
    for section in re.findall(
        r"<section class='entry' data-entry='([^']+)'>(.*?)</section>", page, re.S
    ):
        entry_id, body = section
        match = re.search(rf"<a class='[^']*\b{css_class}\b[^']*' href='([^']+)'", body)
        if match:
            links[entry_id] = html.unescape(match.group(1))
    return links


def test_demo_eln_links_open_notebooks_and_sigterm_cleans_up(demo):
    # Given the demo's ELN page
    page = requests.get(demo.eln_url, timeout=10)
    assert page.status_code == 200
    links = open_links(page.text, "lims-open")
    assert set(links) >= {"S-1", "S-2", "E-7"}
    # every load signs fresh links
    assert (
        open_links(requests.get(demo.eln_url, timeout=10).text, "lims-open")["S-1"] != links["S-1"]
    )
    link = urlsplit(links["S-1"])
    lab_url = f"{link.scheme}://{link.netloc}/"
    token = parse_qs(link.query)["lims_token"][0]

    # When a browser without scripts GETs the deep link
    launch = requests.get(links["S-1"], timeout=10)

    # Then it gets the launch page, and nothing is created yet
    assert launch.status_code == 200
    assert 'id="lims-launch"' in launch.text
    notebook = demo.root / "notebooks" / "lims" / "sample-S-1" / "S-1.ipynb"
    assert not notebook.exists()

    # When the open runs (what the launch page's script does, here server to server)
    r = requests.post(lab_url + "lims/api/open", headers={"X-Lims-Token": token}, timeout=30)

    # Then the notebook for the entry exists, with the mounted data linked beside it
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["path"] == "lims/sample-S-1/S-1.ipynb"
    assert body["url"] == "/lab/tree/lims/sample-S-1/S-1.ipynb"
    assert body["data"][0]["name"] == "raw" and body["data"][0]["status"] == "linked"
    assert notebook.is_file()
    assert (notebook.parent / "data" / "raw" / "run1.csv").is_file()

    # and the instrument simulator answers, directly and through the bridge's proxy
    instrument = re.search(r"instrument simulator\s+(http://127\.0\.0\.1:\d+)/", demo.text()).group(
        1
    )
    readings = requests.get(instrument + "/api/readings?sample=S-1&n=3", timeout=10).json()
    assert [r["well"] for r in readings["readings"]] == ["A1", "A2", "A3"]
    port = instrument.rsplit(":", 1)[1]
    proxy = lab_url + f"lims/proxy/{port}/api/readings?sample=S-1&n=3"
    # a client with neither a login nor a proxy token is refused ...
    refused = requests.get(proxy, timeout=10)
    assert refused.status_code in (401, 403), refused.text
    # ... the scientist's own (signed-in) browser passes ...
    login = parse_qs(link.query)["token"][0]
    browser = requests.Session()
    assert browser.get(lab_url + f"lab?token={login}", timeout=30).status_code == 200
    for cookie in browser.cookies:
        # Secure (embed_origins is set): a browser sends it to http://127.0.0.1, requests not
        cookie.secure = False
    proxied = browser.get(proxy, timeout=10)
    assert proxied.status_code == 200, proxied.text
    assert proxied.json() == readings
    # ... and so does a client with the proxy token the ELN page shows, tried live there
    tries = [
        (status, command.replace("<wbr>", ""))
        for status, command in re.findall(
            r"<pre class='proxy-try' data-status='(\d+)'>(.*?)</pre>", page.text, re.S
        )
    ]
    # the long curl lines may wrap after "/", "?" and "&" (and at spaces)
    assert f"lims/<wbr>proxy/<wbr>{port}/<wbr>api/<wbr>status" in page.text
    assert tries[0][0] in ("401", "403") and tries[1][0] == "200", tries
    proxy_token = re.search(r"X-Proxy-Token: ([\w-]+)", html.unescape(tries[1][1])).group(1)
    with_token = requests.get(proxy, headers={"X-Proxy-Token": proxy_token}, timeout=10)
    assert with_token.status_code == 200 and with_token.json() == readings

    # and the ELN shows JupyterLab embedded, from another site (localhost), allowed by CSP
    embedded = requests.get(demo.eln_url + "entries/S-1/embedded", timeout=10).text
    src = html.unescape(re.search(r"<iframe id='jupyter' src='([^']+)'", embedded).group(1))
    assert src.startswith(f"http://localhost:{link.port}/lims/open?lims_token=")
    csp = requests.get(src.replace("localhost", "127.0.0.1"), timeout=10).headers
    assert demo.eln_url.rstrip("/") in csp["Content-Security-Policy"]

    # When the demo gets SIGTERM
    demo.proc.send_signal(signal.SIGTERM)

    # Then it stops everything and removes its directory
    assert demo.proc.wait(STOP_TIMEOUT) == 0
    assert not demo.root.exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(lab_url + "api/status", timeout=2)
    with pytest.raises(requests.ConnectionError):
        requests.get(demo.eln_url, timeout=2)


def test_make_demo_installs_only_what_the_demo_needs():
    # the commands `make demo` would run on a clean checkout (-B: as if nothing were built)
    root = Path(__file__).parent.parent
    plan = subprocess.run(
        ["make", "-n", "-B", "demo"], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert plan.returncode == 0, plan.stderr
    assert 'pip install -q -e ".[demo]"' in plan.stdout
    assert "test,bench" not in plan.stdout and "[test" not in plan.stdout
    assert "apt-get" not in plan.stdout and "playwright" not in plan.stdout


def _claims(token: str) -> dict:
    """The open token's claims, read as anyone who sees the link can (signed, not encrypted)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_save_to_eln_lands_back_in_the_demo_eln_and_shows_on_its_page(demo):
    # Given an entry opened through the demo ELN's link (server to server, as its script does)
    page = requests.get(demo.eln_url, timeout=10).text
    assert "<div class='attachments' data-versions='0'>" in page
    link = urlsplit(open_links(page, "lims-open")["S-2"])
    lab_url = f"{link.scheme}://{link.netloc}/"
    token = parse_qs(link.query)["lims_token"][0]
    login = parse_qs(link.query)["token"][0]
    returns = _claims(token)["return"]
    assert returns["url"] == demo.eln_url + "api/jupyter/entries/S-2/attachments"
    opened = requests.post(lab_url + "lims/api/open", headers={"X-Lims-Token": token}, timeout=30)
    assert opened.status_code == 201, opened.text
    path = opened.json()["path"]

    # When the scientist's "Save to ELN" runs (the real server: export, upload)
    lab = {"Authorization": f"token {login}"}
    saved = requests.post(lab_url + "lims/api/save", json={"path": path}, headers=lab, timeout=120)

    # Then the demo ELN stored version 1 and answered its entry page
    assert saved.status_code == 200, saved.text
    assert saved.json()["status"] == "saved"
    assert saved.json()["eln"] == {
        "status": 201,
        "version": 1,
        "url": demo.eln_url + "entries/S-2",
    }
    stored = demo.root / "eln-attachments" / "S-2" / "1"
    assert json.loads((stored / "notebook.ipynb").read_text()) == json.loads(
        (demo.root / "notebooks" / path).read_text()
    )
    assert json.loads((stored / "provenance.json").read_text())["entity"]["id"] == "S-2"

    # and the entry's card shows it, with the HTML to view and the notebook to download
    entry = requests.get(demo.eln_url + "entries/S-2", timeout=10).text
    assert "data-versions='1'" in entry and "<strong>version 1</strong>" in entry
    assert returns["grant"] not in entry
    view = requests.get(demo.eln_url + "entries/S-2/attachments/1/html", timeout=10)
    assert view.status_code == 200 and "<html" in view.text.lower()
    assert view.headers["Content-Security-Policy"] == "sandbox"
    download = requests.get(demo.eln_url + "entries/S-2/attachments/1/notebook", timeout=10)
    assert download.content == (stored / "notebook.ipynb").read_bytes()
    assert 'filename="S-2.ipynb"' in download.headers["Content-Disposition"]
    # the other entries got nothing
    index = requests.get(demo.eln_url, timeout=10).text
    assert index.count("data-versions='0'") == 2 and index.count("data-versions='1'") == 1

    # When the same content is saved again: the bridge uploads nothing
    again = requests.post(lab_url + "lims/api/save", json={"path": path}, headers=lab, timeout=60)
    assert again.json()["status"] == "unchanged"

    # and the endpoint itself: no grant, 401; a repeated Idempotency-Key, the first answer
    files = {"notebook": ("S-2.ipynb", b"{}", "application/x-ipynb+json")}
    refused = requests.post(returns["url"], files=files, timeout=10)
    assert refused.status_code == 401 and returns["grant"] not in refused.text
    bearer = {"Authorization": f"Bearer {returns['grant']}", "Idempotency-Key": "k" * 64}
    first = requests.post(returns["url"], files=files, headers=bearer, timeout=10)
    repeat = requests.post(returns["url"], files=files, headers=bearer, timeout=10)
    assert first.status_code == 201 and first.json()["version"] == 2
    assert repeat.json() == first.json()
    assert sorted(p.name for p in (demo.root / "eln-attachments" / "S-2").iterdir()) == ["1", "2"]
