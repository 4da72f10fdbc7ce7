"""The panel's URLs (labextension/src/tokens.ts) and the server's route table agree.

Given the server's URL templates (``urls.py``) and the ``URLS`` object of
``tokens.ts``, then both sides name the same routes with the same URLs (the
proxied path written as its leading slash), the tornado patterns match the URLs
``url_for`` builds, and the labextension, its package.json and the Python
package share one version.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from jupyter_lims_bridge import __version__
from jupyter_lims_bridge.urls import NAMESPACE, PATTERNS, TEMPLATES, url_for

ROOT = Path(__file__).resolve().parents[1]
TOKENS_TS = ROOT / "labextension" / "src" / "tokens.ts"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _panel_template(name: str) -> str:
    """``proxy/{port}{proxied_path}`` -> ``lims/proxy/{port}/``, as the panel spells it."""
    return f"{NAMESPACE}/" + TEMPLATES[name].replace("{proxied_path}", "/")


def _ts_object(name: str) -> dict[str, str]:
    source = TOKENS_TS.read_text()
    match = re.search(r"export const " + name + r" = \{(.*?)\} as const;", source, re.S)
    assert match, f"{name} not found in {TOKENS_TS}"
    return dict(re.findall(r"(\w+):\s*'([^']*)'", match.group(1)))


def _ts_const(name: str) -> str:
    match = re.search(r"export const " + name + r" = '([^']*)'", TOKENS_TS.read_text())
    assert match, f"{name} not found in {TOKENS_TS}"
    return match.group(1)


def test_every_server_route_is_in_tokens_ts_with_the_same_url():
    # Given the server's route table and the panel's URLS
    server = {_camel(name): _panel_template(name) for name in TEMPLATES}
    panel = _ts_object("URLS")
    # Then both name the same routes with the same URLs
    assert panel == server


def test_namespace_agrees():
    assert _ts_const("NAMESPACE") == NAMESPACE


def test_labextension_version_matches_the_python_package():
    package = json.loads((ROOT / "labextension" / "package.json").read_text())
    assert package["name"] == "jupyter-lims-bridge"
    assert package["version"] == __version__
    assert _ts_const("LABEXTENSION_VERSION") == __version__


def test_each_pattern_matches_the_url_built_for_it():
    params = {"job_id": "j-1", "token_id": "t_2", "port": 8050, "proxied_path": "/a/b"}
    for name, pattern in PATTERNS.items():
        wanted = {k: v for k, v in params.items() if "{" + k + "}" in TEMPLATES[name]}
        url = url_for(name, "/a%40b/", **wanted)
        assert url.startswith("/a%40b/lims/")
        match = re.fullmatch(pattern, url[len("/a%40b/") :])
        assert match, (name, url)
        assert {k: str(v) for k, v in wanted.items()} == match.groupdict()


def test_a_proxy_url_may_leave_out_the_path():
    assert re.fullmatch(PATTERNS["proxy"], "lims/proxy/8050")
    assert not re.fullmatch(PATTERNS["proxy"], "lims/proxy/absolute/8050/")


def test_a_proxy_url_names_a_port_or_a_service():
    for url in ("lims/proxy/dashboard/", "lims/proxy/my-app2/x", "lims/proxy/absolutely/"):
        assert re.fullmatch(PATTERNS["proxy"], url), url
    for url in ("lims/proxy/Dash/", "lims/proxy/2fa/", "lims/proxy/-x/", "lims/proxy/absolute/"):
        assert not re.fullmatch(PATTERNS["proxy"], url), url
    assert re.fullmatch(PATTERNS["proxy_absolute"], "lims/proxy/absolute/dashboard/x")
