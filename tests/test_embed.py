"""Embedding JupyterLab in the ELN's page: ``embed_origins`` in the CSP of every
page, the cookies' cross-site attributes, the origins the panel may post to, and
the configurations refused at start-up."""

from __future__ import annotations

import pytest
from traitlets import TraitError

from jupyter_lims_bridge import embed
from jupyter_lims_bridge.app import LimsBridge

from .conftest import body

ELN = "https://eln.example.org"
DEFAULT_CSP = "frame-ancestors 'self'; report-uri /api/security/csp-report"


@pytest.fixture
def bridge_config():
    return {"embed_origins": [ELN, "http://127.0.0.1:8900"]}


def frame_ancestors(response) -> list[str]:
    csp = response.headers["Content-Security-Policy"]
    directive = next(d.strip() for d in csp.split(";") if d.strip().startswith("frame-ancestors"))
    return directive.split()[1:]


def set_cookies(response) -> dict[str, str]:
    return {c.split("=", 1)[0]: c for c in response.headers.get_list("Set-Cookie")}


def attributes(cookie: str) -> set[str]:
    return {a.strip().lower() for a in cookie.split(";")[1:]}


# -- the CSP of every page -----------------------------------------------------


async def test_frame_ancestors_on_the_bridge_pages_api_and_files(jp_fetch, jp_root_dir, sign):
    # Given embed_origins and a file in the server's root
    (jp_root_dir / "plot.html").write_text("<p>hi</p>")
    # When JupyterLab's files, the launch page, its error page and the API are fetched
    responses = {
        "files": await jp_fetch("files", "plot.html"),
        "launch": await jp_fetch("lims", "open", params={"lims_token": sign()}),
        "error": await jp_fetch("lims", "open", raise_error=False),
        "api": await jp_fetch("lims", "api", "status"),
        "server page": await jp_fetch("login", raise_error=False, follow_redirects=False),
    }
    # Then each may be framed by itself and the listed origins only
    for name, response in responses.items():
        assert frame_ancestors(response) == ["'self'", ELN, "http://127.0.0.1:8900"], name
    # and jupyter_server's own policy is kept: its report-uri, the API's default-src,
    # the files' sandbox
    assert "report-uri" in responses["launch"].headers["Content-Security-Policy"]
    assert "default-src 'none'" in responses["api"].headers["Content-Security-Policy"]
    assert "sandbox allow-scripts" in responses["files"].headers["Content-Security-Policy"]
    # and no other header is replaced
    assert responses["launch"].headers["Referrer-Policy"] == "no-referrer"


async def test_status_names_the_origins_the_panel_may_post_to(jp_fetch):
    reply = body(await jp_fetch("lims", "api", "status"))
    assert reply["embed"] == {"origins": [ELN, "http://127.0.0.1:8900"]}


async def test_page_config_carries_the_origins(bridge):
    page_config = bridge.serverapp.web_app.settings["page_config_data"]
    assert page_config["limsBridgeEmbedOrigins"] == [ELN, "http://127.0.0.1:8900"]


# -- cookies -----------------------------------------------------------------------


async def test_xsrf_and_login_cookies_are_cross_site(jp_fetch, jp_serverapp, sign):
    # When a browser gets the launch page (which sets _xsrf) ...
    launch = await jp_fetch("lims", "open", params={"lims_token": sign()})
    xsrf = set_cookies(launch)["_xsrf"]
    # ... and logs in with the server's token in the URL (which sets the login cookie)
    login = await jp_fetch(
        "lims",
        "open",
        params={"lims_token": sign(), "token": jp_serverapp.identity_provider.token},
        headers={"Authorization": ""},
    )
    cookies = set_cookies(login)
    login_cookie = next(v for k, v in cookies.items() if k != "_xsrf")
    # Then both are SameSite=None; Secure, so the browser sends them inside the frame
    for cookie in (xsrf, login_cookie):
        assert {"samesite=none", "secure"} <= attributes(cookie), cookie
        assert "partitioned" not in attributes(cookie)
    assert "httponly" in attributes(login_cookie)


class TestPartitioned:
    @pytest.fixture
    def bridge_config(self):
        return {"embed_origins": [ELN], "embed_partitioned_cookies": True}

    async def test_cookies_are_partitioned(self, jp_fetch, jp_serverapp, sign):
        response = await jp_fetch(
            "lims",
            "open",
            params={"lims_token": sign(), "token": jp_serverapp.identity_provider.token},
            headers={"Authorization": ""},
        )
        cookies = set_cookies(response)
        assert len(cookies) == 2  # _xsrf and the login cookie
        for cookie in cookies.values():
            assert {"samesite=none", "secure", "partitioned"} <= attributes(cookie), cookie
            assert cookie.lower().count("partitioned") == 1


class TestNotEmbedded:
    @pytest.fixture
    def bridge_config(self):
        return {}

    async def test_defaults_are_untouched(self, jp_fetch, sign, bridge):
        response = await jp_fetch("lims", "open", params={"lims_token": sign()})
        assert frame_ancestors(response) == ["'self'"]
        assert "samesite=none" not in attributes(set_cookies(response)["_xsrf"])
        assert body(await jp_fetch("lims", "api", "status"))["embed"] == {"origins": []}
        assert embed.PartitionedCookies not in bridge.serverapp.web_app.transforms


# -- refused configurations ------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        "*",
        "https://*.example.org",
        "eln.example.org",
        "https://eln.example.org/",
        "https://eln.example.org/path",
        "https://eln.example.org?x=1",
        "https://user@eln.example.org",
        "ftp://eln.example.org",
        "https://eln.example.org:99999",
        "'self'",
        "https://a.org https://b.org",
    ],
)
def test_not_an_exact_origin_is_refused_at_start_up(origin):
    with pytest.raises(TraitError, match="embed_origins"):
        LimsBridge(embed_origins=[origin])


def test_refusal_names_the_variable(monkeypatch):
    monkeypatch.setenv("LIMS_BRIDGE_EMBED_ORIGINS", "*")
    with pytest.raises(TraitError, match=r"LIMS_BRIDGE_EMBED_ORIGINS.*wildcards"):
        LimsBridge()


def test_exact_origins_are_accepted(monkeypatch):
    monkeypatch.setenv("LIMS_BRIDGE_EMBED_ORIGINS", "https://eln.example.org,http://localhost:8900")
    monkeypatch.setenv("LIMS_BRIDGE_EMBED_PARTITIONED_COOKIES", "1")
    bridge = LimsBridge()
    assert bridge.embed_origins == ["https://eln.example.org", "http://localhost:8900"]
    assert bridge.embed_partitioned_cookies is True


# -- the pure rules ------------------------------------------------------------------------


def test_merge_keeps_an_operators_policy():
    csp = "default-src 'self'; frame-ancestors 'self' https://other.example; img-src *"
    merged = embed.merge_frame_ancestors(csp, [ELN], DEFAULT_CSP)
    assert merged == (
        f"default-src 'self'; frame-ancestors 'self' https://other.example {ELN}; img-src *"
    )


def test_merge_adds_the_directive_when_missing_and_replaces_none():
    assert embed.merge_frame_ancestors("img-src *", [ELN], DEFAULT_CSP) == (
        f"frame-ancestors 'self' {ELN}; img-src *"
    )
    assert embed.merge_frame_ancestors("frame-ancestors 'none'", [ELN], DEFAULT_CSP) == (
        f"frame-ancestors 'self' {ELN}"
    )
    assert embed.merge_frame_ancestors(None, [ELN], DEFAULT_CSP).startswith(
        f"frame-ancestors 'self' {ELN}; report-uri"
    )


def test_partitioned_only_on_cross_site_cookies():
    assert embed.partitioned("a=1; Path=/; SameSite=None; Secure") == (
        "a=1; Path=/; SameSite=None; Secure; Partitioned"
    )
    assert embed.partitioned("a=1; SameSite=Lax; Secure") == "a=1; SameSite=Lax; Secure"
    assert embed.partitioned("a=1; SameSite=None; Secure; Partitioned").count("Partitioned") == 1


def test_the_hub_can_merge_its_csp_without_jupyter_server():
    # docs/embedding.md and deploy/hub_config.py use merge_frame_ancestors in the hub
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['jupyter_server'] = None\n"
        "from jupyter_lims_bridge.embed import merge_frame_ancestors\n"
        "print(merge_frame_ancestors(\"frame-ancestors 'none'\", ['https://e.org'], ''))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "frame-ancestors 'self' https://e.org", result.stderr
