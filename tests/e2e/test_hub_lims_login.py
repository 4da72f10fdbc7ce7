"""The hub side end to end: a real JupyterHub configured by deploy/hub_config.py
(LimsAuthenticator + LimsSpawnHook), configurable-http-proxy, a LIMS stand-in on
127.0.0.1 for the mounts, single-user servers with the bridge, and Chromium.

Given a browser that never logged in to the hub, the ELN's unchanged deep link
must land it in the notebook in one click; the login use of a token is recorded
apart from the open's, a hostile ``next`` goes to ``/hub/home``, and the mounts
the LIMS names reach the user's server.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse

import pytest
import requests
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.e2e.conftest import ELN_URL

pytestmark = pytest.mark.e2e

LAB_TIMEOUT = 60_000  # ms: a first spawn plus JupyterLab's first load on a busy machine


def entity(entity_id: str) -> dict[str, str]:
    return {
        "type": "sample",
        "id": entity_id,
        "title": f"Sample {entity_id}",
        "url": f"https://eln.example.org/samples/{entity_id}",
    }


def wait_for_url(hub, page, pattern: re.Pattern[str]) -> None:
    try:
        page.wait_for_url(pattern, timeout=LAB_TIMEOUT, wait_until="commit")
    except PlaywrightTimeout:
        where = page.url.split("lims_token=")[0]
        text = page.locator("body").inner_text()[:500]
        raise AssertionError(f"stopped at {where}: {text}\n{hub.log_tail(30)}") from None


def login_page_url(hub, next_url: str) -> str:
    return hub.url + "hub/login?" + urllib.parse.urlencode({"next": next_url})


def hub_log(hub) -> str:
    return hub.log_path.read_text(errors="replace")


def assert_token_only_in_request_lines(hub, token: str) -> None:
    """Our code never logs a token; JupyterHub's (and the proxy's) request lines
    carry ``next=…`` with it, which docs/deploy.md tells operators."""
    for line in hub_log(hub).splitlines():
        if token in line or urllib.parse.quote(token, safe="") in line:
            assert re.search(r"\b(GET|POST|HEAD) /", line), f"a token in a log line: {line[:200]}"


# -- one click from the ELN ---------------------------------------------------------


def test_a_browser_never_logged_in_follows_a_deep_link_into_the_notebook_with_lims_data(
    lims_hub, lims_stand_in, lims_page, artifacts
):
    # Given the LIMS says alice's server mounts her archive (a host path here: the
    # local spawner can mount nothing) and the ELN links an entry with data in it
    lims_stand_in.answers["alice"] = {
        "mounts": [{"name": "archive", "hostPath": str(lims_hub.mount_dir)}]
    }
    link = lims_hub.deep_link(
        "alice",
        entity=entity("S-300"),
        data=[{"name": "raw", "mount": "archive", "path": "2026/S-42/raw"}],
    )
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)["lims_token"][0]

    # When a browser that never saw the hub follows it
    lims_page.goto(link)

    # Then it lands in JupyterLab on the entry's notebook, with no login form on the way
    wait_for_url(
        lims_hub, lims_page, re.compile(r"/user/alice/lab/tree/lims/sample-S-300/S-300\.ipynb$")
    )
    tab = lims_page.locator("#jp-main-dock-panel .lm-TabBar-tab", has_text="S-300.ipynb")
    tab.wait_for(state="visible", timeout=LAB_TIMEOUT)
    heading = lims_page.locator(
        ".jp-NotebookPanel .jp-RenderedMarkdown h1", has_text="Sample S-300"
    )
    heading.wait_for(state="visible", timeout=LAB_TIMEOUT)
    lims_page.screenshot(path=str(artifacts / "e2e-hub-lims-login-notebook.png"))
    # the hub asked the LIMS with its service token, and the server got the mount
    assert {"user": "alice", "authorized": True} in [
        {k: r[k] for k in ("user", "authorized")} for r in lims_stand_in.requests
    ]
    env = lims_hub.server_env("alice")
    assert json.loads(env["LIMS_BRIDGE_DATA_MOUNTS"]) == {"archive": str(lims_hub.mount_dir)}
    assert "LIMS_HUB_SERVICE_TOKEN" not in env and lims_stand_in.service_token not in json.dumps(
        env
    )
    # and linked the entry's data from it into the workspace
    link_path = lims_hub.home("alice") / "lims" / "sample-S-300" / "data" / "raw"
    assert link_path.is_symlink()
    assert link_path.resolve() == (lims_hub.mount_dir / "2026" / "S-42" / "raw").resolve()
    assert (link_path / "run1.csv").read_text() == "a,b\n1,2\n"
    assert_token_only_in_request_lines(lims_hub, token)


def test_a_replayed_login_token_from_a_second_fresh_browser_is_refused(
    lims_hub, lims_page, artifacts
):
    # Given carol's link was used to log in once (the launch page's POST)
    token = lims_hub.token("carol", entity=entity("S-301"))
    _, first = lims_hub.lims_login(token)
    assert first.status_code == 200, first.text
    assert first.json()["next"].startswith("/hub/user-redirect/lims/open?")

    # When another browser, never logged in, follows the same link
    lims_page.goto(
        lims_hub.user_redirect_url + "lims/open?" + urllib.parse.urlencode({"lims_token": token})
    )

    # Then its login is refused as replayed, and it stays logged out
    error = lims_page.locator("#lims-error")
    error.wait_for(state="visible", timeout=30_000)
    assert "token_replayed" in error.inner_text()
    lims_page.screenshot(path=str(artifacts / "e2e-hub-lims-login-replayed.png"))
    assert "/hub/login" in lims_page.url
    names = [c["name"] for c in lims_page.context.cookies()]
    assert "jupyterhub-hub-login" not in names
    # and without a browser: 401 token_replayed
    _, again = lims_hub.lims_login(token)
    assert (again.status_code, again.json()["reason"]) == (401, "token_replayed")
    assert token not in again.text
    assert_token_only_in_request_lines(lims_hub, token)


def test_a_hostile_next_lands_on_the_hub_home(lims_hub, lims_page):
    # Given a valid token, inside a next that points elsewhere
    token = lims_hub.token("dave", entity=entity("S-302"))
    hostile = "//evil.example/hub/user-redirect/lims/open?" + urllib.parse.urlencode(
        {"lims_token": token}
    )

    # When a fresh browser opens the login page with it
    lims_page.goto(login_page_url(lims_hub, hostile))

    # Then it is logged in and sent to this hub's home, nowhere else
    wait_for_url(lims_hub, lims_page, re.compile(r"^http://127\.0\.0\.1:\d+/hub/home$"))


@pytest.mark.parametrize(
    "hostile",
    [
        "///evil.example/hub/user-redirect/lims/open?lims_token=T",
        "\\\\evil.example/hub/user-redirect/lims/open?lims_token=T",
        "/\\evil.example/hub/user-redirect/lims/open?lims_token=T",
        "https://evil.example/hub/user-redirect/lims/open?lims_token=T",
        "/%2F%2Fevil.example/hub/user-redirect/lims/open?lims_token=T",
        "/user/mallory/lims/open?lims_token=T",
        "/hub/admin?lims_token=T",
    ],
)
def test_every_hostile_next_gets_the_hub_home_from_the_login_endpoint(lims_hub, hostile):
    token = lims_hub.token("erin", entity=entity("S-303"))
    _, r = lims_hub.lims_login(token, next_url=hostile.replace("T", token))
    assert r.status_code == 200, r.text
    assert r.json() == {"next": "/hub/home"}


def test_a_plain_form_post_is_redirected_to_next_or_shown_the_error_page(lims_hub):
    # the launch page's no-script button posts a form and follows the redirect
    token = lims_hub.token("erin", entity=entity("S-312"))
    link = "/hub/user-redirect/lims/open?" + urllib.parse.urlencode({"lims_token": token})
    session = requests.Session()
    session.get(login_page_url(lims_hub, link), timeout=10)
    form = {"lims_token": token, "next": link, "_xsrf": session.cookies.get("_xsrf", path="/hub/")}
    r = session.post(lims_hub.url + "hub/lims/login", data=form, allow_redirects=False, timeout=30)
    assert (r.status_code, r.headers["Location"]) == (302, link)
    # the same form from another browser
    other = requests.Session()
    other.get(login_page_url(lims_hub, link), timeout=10)
    form["_xsrf"] = other.cookies.get("_xsrf", path="/hub/")
    again = other.post(
        lims_hub.url + "hub/lims/login", data=form, allow_redirects=False, timeout=30
    )
    assert again.status_code == 401 and 'data-reason="token_replayed"' in again.text
    assert token not in again.text


def test_a_deep_link_to_the_users_own_server_is_kept(lims_hub):
    token = lims_hub.token("erin", entity=entity("S-304"))
    own = "/user/erin/lims/open?" + urllib.parse.urlencode({"lims_token": token})
    _, r = lims_hub.lims_login(token, next_url=own)
    assert r.json() == {"next": own}


# -- pages without a usable token ---------------------------------------------------


def test_the_login_page_without_a_token_says_to_start_from_the_eln(lims_hub):
    r = requests.get(lims_hub.url + "hub/login", timeout=10)
    assert r.status_code == 200
    assert "Sign in from the ELN" in r.text and f'href="{ELN_URL}"' in r.text
    assert 'name="password"' not in r.text


@pytest.mark.parametrize(
    "claims, reason, status",
    [
        ({"lifetime": -120}, "token_expired", 401),
        ({"audience": "another-app"}, "wrong_audience", 401),
        ({"sub": "Frank"}, "wrong_user", 403),
    ],
)
def test_a_bad_token_gets_a_readable_error_page_without_the_token(lims_hub, claims, reason, status):
    token = lims_hub.token(claims.pop("sub", "frank"), entity=entity("S-305"), **claims)
    r = requests.get(
        login_page_url(lims_hub, "/hub/user-redirect/lims/open?lims_token=" + token), timeout=10
    )
    assert r.status_code == status
    assert f'data-reason="{reason}"' in r.text and "This link cannot sign you in" in r.text
    assert token not in r.text
    assert r.headers["Cache-Control"] == "no-store"


def test_a_token_signed_by_another_key_is_refused(lims_hub):
    from jupyter_lims_bridge import signing

    other = signing.load_private_key(signing.generate_key_pair()[0])
    token = signing.make_token(other, sub="frank", entity=entity("S-306"))
    r = requests.get(
        login_page_url(lims_hub, "/hub/user-redirect/lims/open?lims_token=" + token), timeout=10
    )
    assert (r.status_code, 'data-reason="token_invalid"' in r.text) == (401, True)
    _, post = lims_hub.lims_login(token)
    assert (post.status_code, post.json()["reason"]) == (401, "token_invalid")


def test_the_launch_page_uses_nothing_up(lims_hub):
    # link previewers fetch the page without running its script, as often as they like
    token = lims_hub.token("gina", entity=entity("S-307"))
    for _ in range(3):
        r = requests.get(
            login_page_url(lims_hub, "/hub/user-redirect/lims/open?lims_token=" + token), timeout=10
        )
        assert r.status_code == 200 and 'id="lims-hub-login"' in r.text
        assert r.headers["Cache-Control"] == "no-store"
    _, post = lims_hub.lims_login(token)
    assert post.status_code == 200


def test_the_launch_page_escapes_what_next_carries(lims_hub):
    token = lims_hub.token("gina", entity=entity("S-311"))
    next_url = "/hub/user-redirect/lims/open?lims_token=" + token + '&x="><script>alert(1)</script>'
    r = requests.get(login_page_url(lims_hub, next_url), timeout=10)
    assert r.status_code == 200 and 'id="lims-hub-login"' in r.text
    assert "<script>alert(1)" not in r.text


def test_the_login_endpoint_requires_the_login_pages_xsrf(lims_hub):
    token = lims_hub.token("gina", entity=entity("S-308"))
    r = requests.post(lims_hub.url + "hub/lims/login", data={"lims_token": token}, timeout=10)
    assert r.status_code == 403
    # and the token is still good for the real login
    assert lims_hub.lims_login(token)[1].status_code == 200


# -- the LIMS down at spawn time ----------------------------------------------------


def spawn_and_wait(hub, session, name: str, timeout: float = 60) -> dict:
    """Start ``name``'s server and follow its progress to the end; the last event."""
    session.get(hub.url + f"hub/spawn/{name}", allow_redirects=False, timeout=30)
    last: dict = {}
    with session.get(
        hub.api_url + f"users/{name}/server/progress",
        headers={
            "Accept": "text/event-stream",
            "X-XSRFToken": session.cookies.get("_xsrf", path="/hub/") or "",
        },
        stream=True,
        timeout=timeout,
    ) as r:
        deadline = time.monotonic() + timeout
        for line in r.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                last = json.loads(line[5:])
                if last.get("ready") or last.get("failed"):
                    break
            if time.monotonic() > deadline:
                break
    return last


def test_lims_down_with_on_error_fail_shows_the_user_a_clear_spawn_failure(lims_hub, lims_stand_in):
    (lims_hub.root / "lims.json").write_text(json.dumps({"on_error": "fail"}))
    lims_stand_in.down()
    try:
        session, r = lims_hub.lims_login(lims_hub.token("hank", entity=entity("S-309")))
        assert r.status_code == 200
        event = spawn_and_wait(lims_hub, session, "hank")
    finally:
        lims_stand_in.up()
    assert event.get("failed"), event
    assert "The LIMS data for your server could not be prepared" in event["message"]
    assert "not reachable" in event["message"]
    assert not lims_hub.server_ready("hank")
    # the spawn page says the same to the user
    page = session.get(lims_hub.url + "hub/spawn-pending/hank", timeout=10)
    assert "The LIMS data for your server could not be prepared" in page.text
    assert lims_stand_in.service_token not in hub_log(lims_hub)


def test_lims_down_with_on_error_continue_spawns_without_lims_mounts(lims_hub, lims_stand_in):
    (lims_hub.root / "lims.json").write_text(json.dumps({"on_error": "continue"}))
    lims_stand_in.answers["ivan"] = {
        "mounts": [{"name": "archive", "hostPath": str(lims_hub.mount_dir)}]
    }
    lims_stand_in.down()
    try:
        session, r = lims_hub.lims_login(lims_hub.token("ivan", entity=entity("S-310")))
        assert r.status_code == 200
        event = spawn_and_wait(lims_hub, session, "ivan")
    finally:
        lims_stand_in.up()
        (lims_hub.root / "lims.json").write_text(json.dumps({"on_error": "fail"}))
    assert event.get("ready"), event
    assert "LIMS_BRIDGE_DATA_MOUNTS" not in lims_hub.server_env("ivan")
    assert "no LIMS mounts for ivan" in hub_log(lims_hub)
