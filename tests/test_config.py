"""Configuration: traits, LIMS_BRIDGE_* environment fallbacks, validation, and the CSP for embedding."""

from __future__ import annotations

import pytest
from traitlets import TraitError
from traitlets.config import Config

from jupyter_lims_bridge.app import LimsBridge, parse_ports


def test_every_option_of_design_exists_with_help():
    names = [
        "owner",
        "public_keys",
        "jwks_url",
        "hmac_secret",
        "issuers",
        "audience",
        "max_token_lifetime",
        "leeway",
        "workspace_dir",
        "templates_dir",
        "open_url",
        "data_mounts",
        "data_url_prefixes",
        "max_download_bytes",
        "allowed_ports",
        "proxy_mode",
        "cors_origins",
        "embed_origins",
    ]
    traits = LimsBridge.class_traits(config=True)
    for name in names:
        assert name in traits, name
        assert len(traits[name].help) > 40, f"{name} needs a help= with unit, default, example"


def test_defaults():
    bridge = LimsBridge()
    assert bridge.audience == "jupyter-lims-bridge"
    assert (bridge.max_token_lifetime, bridge.leeway) == (600, 30)
    assert (bridge.workspace_dir, bridge.open_url, bridge.proxy_mode) == (
        "lims",
        "lab/tree/{path}",
        "token",
    )


def test_state_and_the_token_file_default_to_the_jupyter_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("LIMS_BRIDGE_STATE_DIR", raising=False)
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    assert LimsBridge().state_dir == str(tmp_path / "data" / "lims_bridge")
    from jupyter_lims_bridge import cli_tokens

    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "no-config"))
    assert cli_tokens.state_dir() == tmp_path / "data" / "lims_bridge"


def test_owner_defaults_to_the_hub_user(monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_USER", "carol")
    assert LimsBridge().owner == "carol"


@pytest.mark.parametrize(
    "name,text,expected",
    [
        ("OWNER", "dave", "dave"),
        ("PUBLIC_KEYS", '["/k1.pem", "/k2.pem"]', ["/k1.pem", "/k2.pem"]),
        (
            "ISSUERS",
            "https://a.example, https://b.example",
            ["https://a.example", "https://b.example"],
        ),
        ("MAX_TOKEN_LIFETIME", "120", 120),
        ("DATA_MOUNTS", '{"archive": "/mnt/archive"}', {"archive": "/mnt/archive"}),
        ("ALLOWED_PORTS", "8050,9000-9002", ["8050", "9000-9002"]),
        ("ALLOWED_PORTS", '[8050, "9000-9002"]', [8050, "9000-9002"]),
        ("PROXY_MODE", "disabled", "disabled"),
        ("WAIT_FOR_DATA", "false", False),
    ],
)
def test_environment_fallbacks(monkeypatch, name, text, expected):
    monkeypatch.setenv(f"LIMS_BRIDGE_{name}", text)
    assert getattr(LimsBridge(), name.lower()) == expected


def test_config_files_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("LIMS_BRIDGE_AUDIENCE", "from-env")
    bridge = LimsBridge()
    bridge.update_config(Config({"LimsBridge": {"audience": "from-config"}}))
    assert bridge.audience == "from-config"


@pytest.mark.parametrize(
    "name,text",
    [
        ("MAX_TOKEN_LIFETIME", "ten"),
        ("ALLOWED_PORTS", "80-70"),
        ("PROXY_MODE", "sometimes"),
        ("OPEN_URL", "https://evil.example/{path}"),
        ("CORS_ORIGINS", "not an origin"),
    ],
)
def test_bad_environment_values_name_the_variable(monkeypatch, name, text):
    monkeypatch.setenv(f"LIMS_BRIDGE_{name}", text)
    with pytest.raises(TraitError, match=f"LIMS_BRIDGE_{name}"):
        LimsBridge()


def test_port_ranges():
    assert parse_ports([8050, "9000-9002", "7000"]) == {8050, 9000, 9001, 9002, 7000}
    for bad in (["0"], ["70000"], ["a-b"], [True]):
        with pytest.raises(ValueError):
            parse_ports(bad)


@pytest.fixture
def bridge_config():
    return {"embed_origins": ["https://eln.example.org"]}


async def test_embed_origins_extend_frame_ancestors(jp_fetch):
    response = await jp_fetch("lims", "api", "status")
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'self' https://eln.example.org" in csp
