"""The two small web apps of the demo: a demo ELN and an instrument simulator.

The ELN plays the LIMS: it holds the private key, lists a few entries and signs
a fresh "Open in Jupyter" deep link for each at every page load
(:func:`jupyter_lims_bridge.signing.make_deep_link`); it also serves the
files that one entry asks JupyterLab to download, and shows the
server-to-server open (``POST lims/api/open`` with ``X-Lims-Token``).

The instrument simulator is a stand-in for a service a user runs next to the
notebook: a JSON API on a port the bridge allows through ``lims/proxy/<port>/``.
"""

from __future__ import annotations

import hashlib
import html
import json
import random
import sys
from dataclasses import dataclass, field
from typing import Any

from tornado import httpclient, web

from .. import signing

# -- the ELN's entries ----------------------------------------------------------

MELT_CURVE = "temperature_c,fluorescence\n" + "".join(
    f"{t},{round(1000 / (1 + 2.718 ** ((55 - t) / 2.5)), 1)}\n" for t in range(25, 96, 5)
)


@dataclass(frozen=True)
class Entry:
    """An ELN entry and what its open token asks of Jupyter."""

    type: str
    id: str
    title: str
    summary: str
    notebook: dict[str, Any] = field(default_factory=dict)
    data: tuple[dict[str, Any], ...] = ()


def demo_entries(eln_url: str) -> list[Entry]:
    melt = MELT_CURVE.encode()
    return [
        Entry(
            "sample",
            "S-1",
            "Buffer screen 1",
            "Raw plate-reader runs on the archive store (mounted data, linked next to the notebook).",
            notebook={"template": "instrument"},
            data=({"name": "raw", "mount": "archive", "path": "S-1/raw"},),
        ),
        Entry(
            "sample",
            "S-2",
            "Protein prep 7",
            "No data: a notebook from the built-in default template.",
        ),
        Entry(
            "experiment",
            "E-7",
            "Thermal shift assay",
            "A melt curve that only the ELN has: JupyterLab downloads it and checks its SHA-256.",
            notebook={"path": "experiments/E-7 thermal shift.ipynb", "template": "instrument"},
            data=(
                {
                    "name": "melt-curve.csv",
                    "url": eln_url + "files/melt-curve.csv",
                    "sha256": hashlib.sha256(melt).hexdigest(),
                    "size": len(melt),
                },
            ),
        ),
    ]


@dataclass
class ElnContext:
    """What the ELN knows: its key, its URL, the user, and where Jupyter is."""

    private_key: Any
    eln_url: str
    lab_url: str
    owner: str
    instrument_url: str
    proxy_port: int
    #: the demo JupyterLab's login token; its links carry it, standing in for
    #: JupyterHub's login (runner.py says why)
    lab_login: str = ""
    #: the same JupyterLab under another host name (``localhost`` against the ELN's
    #: ``127.0.0.1``): another site, for the embedded view
    embed_lab_url: str = ""
    #: a proxy token the scientist made for the instrument port (``runner.py``)
    proxy_token: str = ""

    def entity(self, entry: Entry) -> dict[str, str]:
        return {
            "type": entry.type,
            "id": entry.id,
            "title": entry.title,
            "url": f"{self.eln_url}entries/{entry.id}",
        }

    def claims(self, entry: Entry, *, new: bool = False) -> dict[str, Any]:
        notebook = dict(entry.notebook)
        if new:
            notebook["new"] = True
        return {
            "sub": self.owner,
            "entity": self.entity(entry),
            "notebook": notebook or None,
            "data": list(entry.data) or None,
            "issuer": self.eln_url.rstrip("/"),
            "extra": {"instrument_url": self.instrument_url},
        }

    def deep_link(self, entry: Entry, *, new: bool = False, lab_url: str | None = None) -> str:
        link = signing.make_deep_link(
            lab_url or self.lab_url, self.private_key, **self.claims(entry, new=new)
        )
        return f"{link}&token={self.lab_login}" if self.lab_login else link

    def proxy_url(self) -> str:
        return f"{self.lab_url}lims/proxy/{self.proxy_port}/api/status"

    def token(self, entry: Entry) -> str:
        return signing.make_token(self.private_key, **self.claims(entry))


STYLE = """
body { font-family: system-ui, sans-serif; margin: 0; background: #f4f6f8; color: #1d2733; }
header { background: #23527c; color: white; padding: 0.8rem 2rem; }
header small { opacity: 0.8; }
main { max-width: 60rem; margin: 1.5rem auto; padding: 0 1rem; }
.entry { background: white; border-radius: 6px; padding: 1rem 1.2rem; margin-bottom: 1rem;
         box-shadow: 0 1px 2px rgba(0,0,0,0.12); }
.entry h2 { margin: 0 0 0.3rem 0; font-size: 1.2rem; }
.meta { color: #5a6b7b; font-size: 0.9rem; }
.actions { margin-top: 0.7rem; display: flex; gap: 0.6rem; flex-wrap: wrap; align-items: center; }
a.button, button { background: #f37726; color: white; border: 0; border-radius: 4px;
                   padding: 0.45rem 0.9rem; text-decoration: none; font-size: 0.95rem; cursor: pointer; }
a.secondary, button.secondary { background: #e1e6eb; color: #1d2733; }
pre { background: #1d2733; color: #e8edf2; padding: 0.8rem; border-radius: 4px; overflow-x: auto; }
footer { color: #5a6b7b; font-size: 0.85rem; }
"""


def _page(title: str, body: str, *, wide: bool = False) -> str:
    style = STYLE + ("main { max-width: none; margin: 1rem 2rem; }" if wide else "")
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        # the deep links hold tokens: do not send this page's URL or theirs as a Referer
        "<meta name='referrer' content='no-referrer'>"
        f"<title>{html.escape(title)}</title><style>{style}</style></head><body>"
        "<header><strong>Demo ELN</strong> <small>· plays the LIMS for jupyter-lims-bridge</small>"
        "</header><main>" + body + "</main></body></html>"
    )


class ElnHandler(web.RequestHandler):
    @property
    def eln(self) -> ElnContext:
        return self.settings["eln"]

    @property
    def entries(self) -> dict[str, Entry]:
        return self.settings["entries"]

    def set_default_headers(self) -> None:
        # every page carries freshly signed links: never cache them
        self.set_header("Cache-Control", "no-store")

    def entry_html(self, entry: Entry, *, heading: bool = True) -> str:
        eln = self.eln
        e = html.escape
        title = (
            f"<h2><a href='{e(eln.entity(entry)['url'])}'>{e(entry.title)}</a></h2>"
            if heading
            else ""
        )
        return (
            f"<section class='entry' data-entry='{e(entry.id)}'>{title}"
            f"<div class='meta'>{e(entry.type)} <strong>{e(entry.id)}</strong></div>"
            f"<p>{e(entry.summary)}</p><div class='actions'>"
            f"<a class='button lims-open' href='{e(eln.deep_link(entry))}'>Open in Jupyter</a>"
            f"<a class='button secondary lims-open-new' href='{e(eln.deep_link(entry, new=True))}'>"
            "Open a new copy</a>"
            f"<a class='button secondary lims-embedded' href='{e(eln.eln_url)}entries/"
            f"{e(entry.id)}/embedded'>Show JupyterLab in this page</a>"
            f"<form method='post' action='{e(eln.eln_url)}entries/{e(entry.id)}/open'>"
            f"{self.xsrf_form_html()}"
            "<button class='secondary' type='submit'>Open from the ELN's backend (API)</button>"
            "</form></div></section>"
        )


class ElnIndexHandler(ElnHandler):
    async def proxy_html(self) -> str:
        """What a proxy token is for, tried live: the instrument's API through
        JupyterLab's proxy, from a client without a token and from one with it."""
        eln = self.eln
        if not eln.proxy_token:
            return ""
        e = html.escape
        url = eln.proxy_url()
        client = httpclient.AsyncHTTPClient()
        rows = []
        for label, headers in (
            ("without a token", {}),
            ("with the proxy token", {"X-Proxy-Token": eln.proxy_token}),
        ):
            option = f"-H 'X-Proxy-Token: {eln.proxy_token}' " if headers else ""
            command = f"curl -i {option}'{url}'"
            try:
                response = await client.fetch(
                    url, headers=headers, raise_error=False, request_timeout=10
                )
                answer = f"{response.code} {response.reason}"
            except OSError as error:
                answer = f"no answer ({error})"
            rows.append(
                f"<p>A client {e(label)}:</p><pre class='proxy-try' data-status='"
                f"{e(answer.split()[0])}'>$ {e(command)}\n→ {e(answer)}</pre>"
            )
        return (
            "<section class='entry proxy-demo'><h2>What is a proxy token for?</h2>"
            "<p>The instrument simulator listens on an allowed port; JupyterLab passes it on at "
            f"<code>{e(url)}</code>. Your own browser, signed in to JupyterLab, passes: "
            f"<a href='{e(url)}'>try it</a>. Any other client (a script on the instrument PC, "
            "the ELN's server) is refused unless it holds a proxy token, which you make in "
            "JupyterLab's LIMS panel. This demo made one for you at start. Tried just now by "
            "the ELN's server:</p>" + "".join(rows) + "</section>"
        )

    async def get(self) -> None:
        eln = self.eln
        e = html.escape
        body = (
            f"<p>Logged in to the ELN as <strong>{e(eln.owner)}</strong>. "
            "Each link below is signed by the ELN just now (Ed25519, valid 5 minutes, one use); "
            "JupyterLab holds only the public key. Reload the page for fresh links.</p>"
            + "".join(self.entry_html(entry) for entry in self.entries.values())
            + await self.proxy_html()
            + "<footer><p>JupyterLab: "
            f"<a href='{e(eln.lab_url)}lab'>{e(eln.lab_url)}lab</a> · instrument simulator: "
            f"<a href='{e(eln.instrument_url)}/'>{e(eln.instrument_url)}/</a>, also reachable "
            f"through JupyterLab as <code>{e(eln.lab_url)}lims/proxy/{eln.proxy_port}/</code> "
            "(port allowed by the bridge).</p></footer>"
        )
        self.finish(_page("Demo ELN", body))


class ElnEntryHandler(ElnHandler):
    def get(self, entry_id: str) -> None:
        entry = self.entries.get(entry_id)
        if entry is None:
            raise web.HTTPError(404)
        body = (
            f"<p><a href='{html.escape(self.eln.eln_url)}'>← all entries</a></p>"
            f"<h1>{html.escape(entry.title)}</h1>" + self.entry_html(entry, heading=False)
        )
        self.finish(_page(entry.title, body))


class ElnEmbeddedHandler(ElnHandler):
    """The entry with JupyterLab inside the page (an iframe on another site)."""

    def get(self, entry_id: str) -> None:
        entry = self.entries.get(entry_id)
        if entry is None:
            raise web.HTTPError(404)
        eln = self.eln
        e = html.escape
        lab_url = eln.embed_lab_url or eln.lab_url
        body = (
            f"<p><a href='{e(eln.eln_url)}'>← all entries</a> · JupyterLab runs on "
            f"<code>{e(lab_url)}</code>, another site than this ELN, and allows this page to "
            "frame it (<code>embed_origins</code>). A browser that blocks third-party cookies "
            "gets &ldquo;Open in a new tab&rdquo; inside the frame.</p>"
            f"<h1>{e(entry.title)}</h1>"
            f"<iframe id='jupyter' src='{e(eln.deep_link(entry, lab_url=lab_url))}' "
            "title='JupyterLab' style='width:100%;height:70vh;border:1px solid #c9d1d9;"
            "border-radius:6px;background:white'></iframe>"
            "<p class='meta'>Messages from JupyterLab:</p><pre id='messages'>(none yet)</pre>"
            "<script>var seen = [];"
            "window.addEventListener('message', function (ev) {"
            f"if (ev.origin !== {json.dumps(lab_url.rstrip('/'))}) {{ return; }}"
            "seen.push(JSON.stringify(ev.data));"
            "document.getElementById('messages').textContent = seen.join(String.fromCharCode(10));"
            "});</script>"
        )
        self.finish(_page(entry.title, body, wide=True))


class ElnApiOpenHandler(ElnHandler):
    """The ELN's backend opens the entry server to server: ``POST lims/api/open``."""

    async def post(self, entry_id: str) -> None:
        entry = self.entries.get(entry_id)
        if entry is None:
            raise web.HTTPError(404)
        url = signing.api_open_url(self.eln.lab_url)
        client = httpclient.AsyncHTTPClient()
        response = await client.fetch(
            url,
            method="POST",
            headers={"X-Lims-Token": self.eln.token(entry), "Content-Type": "application/json"},
            body=b"{}",
            raise_error=False,
            request_timeout=30,
        )
        try:
            result = json.loads(response.body or b"{}")
        except ValueError:
            result = {"body": (response.body or b"").decode(errors="replace")[:500]}
        e = html.escape
        notebook = result.get("url")
        link = (
            f"<p><a class='button' href='{e(self.eln.lab_url.rstrip('/') + notebook)}'>"
            "Go to the notebook</a></p>"
            if isinstance(notebook, str) and notebook.startswith("/")
            else ""
        )
        body = (
            f"<p><a href='{e(self.eln.eln_url)}'>← all entries</a></p>"
            f"<h1>{e(entry.title)}: opened by the ELN's backend</h1>"
            f"<p>The ELN's server sent <code>POST {e(url)}</code> with the open token in the "
            "<code>X-Lims-Token</code> header (no Jupyter credentials). JupyterLab answered "
            f"<strong>{response.code}</strong>:</p><pre class='api-result'>"
            f"{e(json.dumps(result, indent=2))}</pre>{link}"
        )
        self.set_status(200)
        self.finish(_page(entry.title, body))


class ElnFileHandler(web.RequestHandler):
    """The files only the ELN has, downloaded by JupyterLab (``data_url_prefixes``)."""

    def get(self, name: str) -> None:
        files = {"melt-curve.csv": MELT_CURVE.encode()}
        if name not in files:
            raise web.HTTPError(404)
        self.set_header("Content-Type", "text/csv")
        self.finish(files[name])


class NoIconHandler(web.RequestHandler):
    def get(self) -> None:
        self.set_status(204)


def quiet_log(handler: web.RequestHandler) -> None:
    """Keep the demo's terminal for the banner: log only server errors."""
    if handler.get_status() >= 500:
        print(
            f"demo: {handler.get_status()} {handler.request.method} {handler.request.path}",
            file=sys.stderr,
        )


def make_eln_app(context: ElnContext) -> web.Application:
    entries = {entry.id: entry for entry in demo_entries(context.eln_url)}
    return web.Application(
        [
            (r"/", ElnIndexHandler),
            (r"/entries/([A-Za-z0-9_-]+)", ElnEntryHandler),
            (r"/entries/([A-Za-z0-9_-]+)/open", ElnApiOpenHandler),
            (r"/entries/([A-Za-z0-9_-]+)/embedded", ElnEmbeddedHandler),
            (r"/files/([A-Za-z0-9_.-]+)", ElnFileHandler),
            (r"/favicon.ico", NoIconHandler),
        ],
        log_function=quiet_log,
        eln=context,
        entries=entries,
        xsrf_cookies=True,
    )


# -- the instrument simulator -------------------------------------------------------


class InstrumentIndexHandler(web.RequestHandler):
    def get(self) -> None:
        self.finish(
            {
                "instrument": "plate-reader-sim",
                "model": "PR-96 (simulated)",
                "status": "idle",
                "endpoints": ["/api/status", "/api/readings?sample=S-1&n=8"],
            }
        )


class InstrumentStatusHandler(web.RequestHandler):
    def get(self) -> None:
        self.finish({"status": "idle", "temperatureC": 25.0, "lampHours": 1234})


class InstrumentReadingsHandler(web.RequestHandler):
    def get(self) -> None:
        sample = self.get_query_argument("sample", "blank")[:64]
        try:
            n = max(1, min(96, int(self.get_query_argument("n", "8"))))
        except ValueError:
            raise web.HTTPError(400, "n must be an integer") from None
        rng = random.Random(sample)  # the same sample reads the same: reproducible demo
        wells = [f"{row}{col}" for row in "ABCDEFGH" for col in range(1, 13)][:n]
        self.finish(
            {
                "sample": sample,
                "wavelengthNm": 600,
                "readings": [{"well": w, "od": round(rng.uniform(0.05, 1.2), 3)} for w in wells],
            }
        )


def make_instrument_app() -> web.Application:
    return web.Application(
        [
            (r"/", InstrumentIndexHandler),
            (r"/api/status", InstrumentStatusHandler),
            (r"/api/readings", InstrumentReadingsHandler),
            (r"/favicon.ico", NoIconHandler),
        ],
        log_function=quiet_log,
    )
