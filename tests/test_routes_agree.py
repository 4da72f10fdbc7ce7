"""The panel's URLs (labextension/src/tokens.ts) and the server's route table agree.

Given the server's ``PATTERNS`` and the ``URLS`` object of ``tokens.ts``,
when each pattern is turned into a template (``(?P<name>…)`` -> ``{name}``,
the proxied path dropped), then both sides name the same routes with the same
URLs, and the labextension, its package.json and the Python package share one version.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from jupyter_lims_bridge import __version__
from jupyter_lims_bridge.routes import NAMESPACE, PATTERNS

ROOT = Path(__file__).resolve().parents[1]
TOKENS_TS = ROOT / "labextension" / "src" / "tokens.ts"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _template(pattern: str) -> str:
    """``lims/proxy/(?P<port>\\d+)(?P<proxied_path>/.*)?`` -> ``lims/proxy/{port}/``."""
    template = re.sub(r"\(\?P<proxied_path>[^)]*\)\?", "/", pattern)
    template = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", template)
    assert not re.search(r"[()\\?*+\[\]]", template), f"untranslated regex in {pattern!r}"
    return template


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
    server = {_camel(name): _template(pattern) for name, pattern in PATTERNS.items()}
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


def test_the_template_of_a_pattern():
    assert _template(PATTERNS["proxy"]) == "lims/proxy/{port}/"
    assert _template(PATTERNS["token"]) == "lims/api/tokens/{token_id}"
