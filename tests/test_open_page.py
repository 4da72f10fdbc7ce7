"""GET lims/open: the deep-link landing page, its error pages, and that the GET writes nothing."""

from __future__ import annotations

import html
import re
import time

import pytest

from jupyter_lims_bridge.wording import explain

from .conftest import files_under


async def page(jp_fetch, token, **kw):
    params = {"lims_token": token} if token is not None else {}
    return await jp_fetch("lims", "open", params=params, raise_error=False, **kw)


def data_attribute(text: str, name: str) -> str | None:
    m = re.search(rf'data-{name}="([^"]*)"', text)
    return html.unescape(m.group(1)) if m else None


async def test_launch_page_renders_without_side_effects(jp_fetch, sign, jp_root_dir, jp_base_url):
    # Given a valid deep link
    token = sign()
    before = files_under(jp_root_dir)
    # When the logged-in owner's browser (or a link previewer) GETs it
    response = await page(jp_fetch, token)
    # Then a launch page is rendered that will POST the open
    text = response.body.decode()
    assert response.code == 200
    assert "Opening" in text and "Buffer screen 3" in text
    assert data_attribute(text, "api-url") == f"{jp_base_url}lims/api/open"
    assert data_attribute(text, "token") == token
    assert data_attribute(text, "xsrf")
    assert "launch.js" in text
    # and nothing is written and the link is not used up
    assert files_under(jp_root_dir) == before
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"


async def test_launch_script_is_served(jp_fetch, jp_base_url):
    response = await jp_fetch("static", "lims_bridge", "launch.js")
    assert b"dataset.apiUrl" in response.body  # URLs come from the page, not hard-coded
    assert b"location.replace" in response.body


async def test_anonymous_browser_is_sent_to_login_and_back(jp_fetch, sign):
    response = await page(jp_fetch, sign(), headers={"Authorization": ""}, follow_redirects=False)
    assert response.code == 302
    assert "/login?next=" in response.headers["Location"]
    assert "lims%2Fopen" in response.headers["Location"]


@pytest.mark.parametrize(
    "spec,status,reason",
    [
        (None, 401, "token_missing"),
        ("garbage", 401, "token_invalid"),
        ({"sub": "bob"}, 403, "wrong_user"),
        ({"aud": "x"}, 401, "wrong_audience"),
        ({"entity": {"type": "s"}}, 422, "bad_claims"),
    ],
)
async def test_invalid_links_render_a_readable_error_page(jp_fetch, sign, spec, status, reason):
    token = spec if spec is None or isinstance(spec, str) else sign(**spec)
    response = await page(jp_fetch, token)
    text = response.body.decode()
    assert response.code == status
    assert response.headers["Content-Type"].startswith("text/html")
    assert f'data-reason="{reason}"' in text
    # a heading in a scientist's words, the reason small underneath
    assert f"<h1>{html.escape(explain(reason)['heading'])}</h1>" in text
    assert f'<code class="lims-reason">{reason}</code>' in text
    if token:
        assert token not in text


async def test_wrong_user_page_links_back_to_the_eln_entry(jp_fetch, sign):
    text = (await page(jp_fetch, sign(sub="bob"))).body.decode()
    assert 'href="https://eln.example.org/samples/S-42"' in text
    assert "made for someone else" in text


async def test_expired_link_leads_back_to_the_eln_entry(jp_fetch, sign, jp_base_url):
    # Given a link whose signature verifies but whose time is over
    token = sign(iat=int(time.time()) - 400, exp=int(time.time()) - 100)
    # When the browser opens it
    response = await page(jp_fetch, token)
    text = response.body.decode()
    # Then the page says so in plain words and leads back to the entry it names
    assert response.code == 401
    assert "This link has expired" in text
    assert re.search(r'id="lims-back" href="https://eln.example.org/samples/S-42"', text)
    assert f'id="lims-home" href="{jp_base_url}' in text
    assert '<code class="lims-reason">token_expired</code>' in text


async def test_link_that_does_not_verify_leads_to_jupyterlab_home(jp_fetch, jp_base_url):
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from jupyter_lims_bridge import signing

    claims = signing.make_claims(
        sub="alice", entity={"type": "s", "id": "1", "url": "https://phishing.example/"}
    )
    import jwt

    forged = jwt.encode(claims, ed25519.Ed25519PrivateKey.generate(), algorithm="EdDSA")
    response = await page(jp_fetch, forged)
    text = response.body.decode()
    assert response.code == 401
    assert "lims-back" not in text and "phishing.example" not in text
    assert re.search(rf'class="lims-button" id="lims-home" href="{re.escape(jp_base_url)}', text)
    assert "does not verify" in text  # the technical message, kept small


async def test_forged_token_gets_no_link_back(jp_fetch, sign):
    from cryptography.hazmat.primitives.asymmetric import ed25519

    forged = sign(
        key=ed25519.Ed25519PrivateKey.generate(),
        sub="bob",
        entity={"type": "s", "id": "1", "url": "https://phishing.example/"},
    )
    text = (await page(jp_fetch, forged)).body.decode()
    assert "phishing.example" not in text


async def test_replayed_link_navigates_to_the_same_notebook(jp_fetch, sign, open_api, jp_base_url):
    token = sign(notebook={"new": True})
    assert (await open_api(token)).code == 201
    before = len(list((await jp_fetch("api", "contents", "lims", "sample-S-42")).body))
    response = await page(jp_fetch, token)
    text = response.body.decode()
    assert response.code == 200
    assert (
        data_attribute(text, "replay-url") == f"{jp_base_url}lab/tree/lims/sample-S-42/S-42.ipynb"
    )
    assert len(list((await jp_fetch("api", "contents", "lims", "sample-S-42")).body)) == before
