"""The bridge's URL namespace: every URL it answers, by route name.

Owns the URL templates (relative to a Jupyter server's base URL, which
jupyter_server prefixes to every handler), the tornado patterns derived from
them, and :func:`url_for`, which builds a URL from a route name. Everything
that spells a URL of the bridge (handlers, ``Location`` headers, the proxy's
prefix, the signing helpers, the hub side) asks this module.

Must not: import anything of the bridge or of jupyter_server (the hub side
imports it), or know which handler serves a route (``handlers/`` does).
The JupyterLab panel keeps its own copy in ``labextension/src/tokens.ts``; a
test checks that the two agree.
"""

from __future__ import annotations

import re
from urllib.parse import quote

NAMESPACE = "lims"

#: route name -> URL template below ``NAMESPACE``; ``{name}`` marks a path parameter
TEMPLATES: dict[str, str] = {
    "open_page": "open",
    "open_api": "api/open",
    "status": "api/status",
    "staging": "api/staging",
    "staging_job": "api/staging/{job_id}",
    "tokens": "api/tokens",
    "token": "api/tokens/{token_id}",
    "proxy_mode": "api/proxy",
    "save": "api/save",
    "proxy_absolute": "proxy/absolute/{port}{proxied_path}",
    "proxy": "proxy/{port}{proxied_path}",
}

#: what each path parameter matches
_PARAMETERS: dict[str, str] = {
    "job_id": r"[A-Za-z0-9_-]+",
    "token_id": r"[A-Za-z0-9_-]+",
    # a port, or the name of a service (proxy/services.py): never all digits,
    # never "absolute" (lims/proxy/absolute/… is the other route)
    "port": r"\d+|(?!absolute(?![a-z0-9-]))[a-z][a-z0-9-]*",
    "proxied_path": r"/.*",
}
#: parameters a URL may leave out ("lims/proxy/8050" redirects to add the slash)
_OPTIONAL = frozenset({"proxied_path"})


def _pattern(template: str) -> str:
    escaped = re.escape(template).replace(r"\{", "{").replace(r"\}", "}")

    def group(match: re.Match[str]) -> str:
        name = match[1]
        return f"(?P<{name}>{_PARAMETERS[name]})" + ("?" if name in _OPTIONAL else "")

    return re.sub(r"\{(\w+)\}", group, escaped)


#: route name -> tornado pattern (relative to the base URL), in the order they must be matched
PATTERNS: dict[str, str] = {
    name: f"{NAMESPACE}/{_pattern(template)}" for name, template in TEMPLATES.items()
}


def url_for(name: str, base_url: str = "/", **params: str | int) -> str:
    """The URL of route ``name`` under ``base_url``, its parameters quoted.

    >>> url_for("token", "/user/alice/", token_id="abc")
    '/user/alice/lims/api/tokens/abc'
    >>> url_for("proxy", "/", port=8050, proxied_path="/")
    '/lims/proxy/8050/'
    """
    template = TEMPLATES[name]
    values = {"proxied_path": ""}
    for key, value in params.items():
        # the proxied path keeps its slashes (and stays as escaped as it came)
        values[key] = str(value) if key == "proxied_path" else quote(str(value), safe="")
    return base_url.rstrip("/") + f"/{NAMESPACE}/" + template.format(**values)
