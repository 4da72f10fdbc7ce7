"""The two small web apps of the demo: a demo ELN and an instrument simulator.

The ELN plays the LIMS: it holds the private key, lists a few entries and signs
a fresh "Open in Jupyter" deep link for each at every page load
(:func:`jupyter_lims_bridge.signing.make_deep_link`); it also serves the
files that one entry asks JupyterLab to download, and shows the
server-to-server open (``POST lims/api/open`` with ``X-Lims-Token``). Its tokens
carry a ``return`` claim (the entry's attachments endpoint and the demo's grant),
so "Save to ELN" lands back here: :class:`AttachmentStore` keeps what arrives
(in the demo's temporary directory) and each entry's card lists it. It never
writes outside that directory and never shows or logs the grant.

The instrument simulator is a stand-in for a service a user runs next to the
notebook: a JSON API on a port the bridge allows through ``lims/proxy/<port>/``.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import hmac
import html
import json
import random
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
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
    #: the bearer grant the ELN issued for "Save to ELN" (one per demo run);
    #: empty: the tokens carry no ``return`` claim
    return_grant: str = ""

    @property
    def return_prefix(self) -> str:
        """What JupyterLab allows uploads to (``LIMS_BRIDGE_RETURN_URL_PREFIXES``)."""
        return f"{self.eln_url}api/jupyter/"

    def attachments_url(self, entry_id: str) -> str:
        return f"{self.return_prefix}entries/{entry_id}/attachments"

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
        extra: dict[str, Any] = {"instrument_url": self.instrument_url}
        if self.return_grant:
            # where "Save to ELN" sends the notebook back (docs/save.md)
            extra["return"] = {"url": self.attachments_url(entry.id), "grant": self.return_grant}
        return {
            "sub": self.owner,
            "entity": self.entity(entry),
            "notebook": notebook or None,
            "data": list(entry.data) or None,
            "issuer": self.eln_url.rstrip("/"),
            "extra": extra,
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


# -- what "Save to ELN" sends back --------------------------------------------------

#: the parts the bridge sends (docs/save.md) and the names the demo stores them under
PARTS = {"notebook": "notebook.ipynb", "html": "notebook.html", "provenance": "provenance.json"}


@dataclass
class Attachment:
    """One upload the ELN accepted: its version, when, and which parts it holds."""

    version: int
    received_at: str
    parts: tuple[str, ...]
    filenames: dict[str, str]


class AttachmentError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """``name -> (filename, content)`` of a ``multipart/form-data`` body (standard library)."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise AttachmentError(415, "expected multipart/form-data")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    parts: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        disposition = part["Content-Disposition"]
        name = dict(disposition.params).get("name") if disposition else None
        if name:
            parts[name] = (
                dict(disposition.params).get("filename"),
                part.get_payload(decode=True) or b"",
            )
    return parts


class AttachmentStore:
    """The demo ELN's attachments: kept under ``root/<entry>/<version>/``, listed per
    entry, and a repeated ``Idempotency-Key`` answered with its first answer."""

    def __init__(self, root: Path, grant: str) -> None:
        self.root = root
        self._grant = grant
        self._lock = threading.Lock()
        self._attachments: dict[str, list[Attachment]] = {}
        self._answers: dict[tuple[str, str], dict[str, Any]] = {}

    def grant_ok(self, authorization: str) -> bool:
        scheme, _, credential = authorization.partition(" ")
        return (
            bool(self._grant)
            and scheme == "Bearer"
            and hmac.compare_digest(credential.encode(), self._grant.encode())
        )

    def list(self, entry_id: str) -> list[Attachment]:
        with self._lock:
            return list(self._attachments.get(entry_id, ()))

    def add(
        self, entry_id: str, content_type: str, body: bytes, key: str | None, entry_url: str
    ) -> tuple[int, dict[str, Any]]:
        """Store one upload; ``(status, answer)``: 201 for a new version, 200 for a repeat."""
        if key is not None and not re.fullmatch(r"[\x21-\x7e]{1,200}", key):
            raise AttachmentError(400, "bad Idempotency-Key")
        with self._lock:
            if key is not None and (entry_id, key) in self._answers:
                return 200, self._answers[(entry_id, key)]
        parts = parse_multipart(content_type, body)
        if "notebook" not in parts:
            raise AttachmentError(400, "no notebook part")
        with self._lock:
            if key is not None and (entry_id, key) in self._answers:
                return 200, self._answers[(entry_id, key)]
            attachments = self._attachments.setdefault(entry_id, [])
            version = len(attachments) + 1
            folder = self.root / entry_id / str(version)
            folder.mkdir(parents=True, mode=0o700)
            stored = tuple(name for name in PARTS if name in parts)
            for name in stored:
                (folder / PARTS[name]).write_bytes(parts[name][1])
            filenames = {
                name: Path(parts[name][0] or PARTS[name]).name or PARTS[name] for name in stored
            }
            attachments.append(
                Attachment(
                    version,
                    time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                    stored,
                    filenames,
                )
            )
            answer = {"version": version, "url": entry_url}
            if key is not None:
                self._answers[(entry_id, key)] = answer
            return 201, answer

    def part(self, entry_id: str, version: int, name: str) -> tuple[str, bytes] | None:
        """``(filename, content)`` of one stored part, or None."""
        for attachment in self.list(entry_id):
            if attachment.version == version and name in attachment.parts:
                path = self.root / entry_id / str(version) / PARTS[name]
                return attachment.filenames[name], path.read_bytes()
        return None


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
pre { background: #1d2733; color: #e8edf2; padding: 0.8rem; border-radius: 4px; overflow-x: auto;
      white-space: pre-wrap; overflow-wrap: anywhere; }
.attachments { margin: 0.6rem 0 0 0; padding: 0.5rem 0.8rem; background: #eef3f7; border-radius: 4px;
               font-size: 0.9rem; }
.attachments ul { margin: 0.2rem 0 0 0; padding-left: 1.2rem; }
footer { color: #5a6b7b; font-size: 0.85rem; }
"""


def wrappable(text: str) -> str:
    """``text`` escaped, with a line-break opportunity (``<wbr>``) after each ``/``
    (not inside ``//``), ``?`` and ``&``: long commands wrap where a reader expects."""
    return "<wbr>".join(html.escape(piece) for piece in re.split(r"(?<=[/?&])(?!/)", text))


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
            "</form></div>" + self.attachments_html(entry) + "</section>"
        )

    def attachments_html(self, entry: Entry) -> str:
        """What "Save to ELN" sent back to this entry, newest first."""
        store: AttachmentStore | None = self.settings.get("attachments")
        if store is None:
            return ""
        e = html.escape
        attachments = store.list(entry.id)
        if not attachments:
            return (
                "<div class='attachments' data-versions='0'>No results from Jupyter yet: open "
                "the entry and click <em>Save to ELN</em> in the notebook's toolbar.</div>"
            )
        items = []
        for a in reversed(attachments):
            base = f"{self.eln.eln_url}entries/{e(entry.id)}/attachments/{a.version}/"
            links = []
            if "html" in a.parts:
                links.append(f"<a class='view' href='{base}html'>view</a>")
            links.append(
                f"<a class='download' href='{base}notebook'>download {e(a.filenames['notebook'])}</a>"
            )
            items.append(
                f"<li class='attachment' data-version='{a.version}'><strong>version {a.version}</strong>"
                f" · {e(a.received_at)} · " + " · ".join(links) + "</li>"
            )
        return (
            f"<div class='attachments' data-versions='{len(attachments)}'>Results from Jupyter "
            "(<em>Save to ELN</em>):<ul>" + "".join(items) + "</ul></div>"
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
                f"{e(answer.split()[0])}'>$ {wrappable(command)}\n→ {e(answer)}</pre>"
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


class ElnAttachmentsHandler(ElnHandler):
    """Where "Save to ELN" uploads: ``POST api/jupyter/entries/<id>/attachments``."""

    def check_xsrf_cookie(self) -> None:
        # a server-to-server API with a bearer grant, not a form: no XSRF cookie
        return

    def post(self, entry_id: str) -> None:
        store: AttachmentStore | None = self.settings["attachments"]
        self.set_header("Content-Type", "application/json")
        if store is None or entry_id not in self.entries:
            self.set_status(404)
            return self.finish({"error": "no such entry"})
        if not store.grant_ok(self.request.headers.get("Authorization", "")):
            self.set_status(401)
            return self.finish({"error": "a valid bearer grant is required"})
        try:
            status, answer = store.add(
                entry_id,
                self.request.headers.get("Content-Type", ""),
                self.request.body,
                self.request.headers.get("Idempotency-Key"),
                self.eln.entity(self.entries[entry_id])["url"],
            )
        except AttachmentError as error:
            self.set_status(error.status)
            return self.finish({"error": str(error)})
        self.set_status(status)
        return self.finish(answer)


class ElnAttachmentPartHandler(ElnHandler):
    """One stored part: the HTML export to view, the notebook to download."""

    def get(self, entry_id: str, version: str, name: str) -> None:
        store: AttachmentStore | None = self.settings["attachments"]
        found = store.part(entry_id, int(version), name) if store is not None else None
        if entry_id not in self.entries or found is None:
            raise web.HTTPError(404)
        filename, content = found
        if name == "html":
            self.set_header("Content-Type", "text/html; charset=utf-8")
            # the export is the notebook's: show it, never let it act as the ELN
            self.set_header("Content-Security-Policy", "sandbox")
        else:
            self.set_header("Content-Type", "application/x-ipynb+json")
            safe = re.sub(r"[^A-Za-z0-9._ -]", "_", filename)
            self.set_header("Content-Disposition", f'attachment; filename="{safe}"')
        self.finish(content)


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


def make_eln_app(context: ElnContext, attachments_dir: Path | None = None) -> web.Application:
    """The ELN; with ``attachments_dir`` (and ``context.return_grant``) it receives saves."""
    entries = {entry.id: entry for entry in demo_entries(context.eln_url)}
    store = (
        AttachmentStore(attachments_dir, context.return_grant)
        if attachments_dir is not None and context.return_grant
        else None
    )
    return web.Application(
        [
            (r"/", ElnIndexHandler),
            (r"/entries/([A-Za-z0-9_-]+)", ElnEntryHandler),
            (r"/api/jupyter/entries/([A-Za-z0-9_-]+)/attachments", ElnAttachmentsHandler),
            (
                r"/entries/([A-Za-z0-9_-]+)/attachments/([0-9]{1,6})/(html|notebook)",
                ElnAttachmentPartHandler,
            ),
            (r"/entries/([A-Za-z0-9_-]+)/open", ElnApiOpenHandler),
            (r"/entries/([A-Za-z0-9_-]+)/embedded", ElnEmbeddedHandler),
            (r"/files/([A-Za-z0-9_.-]+)", ElnFileHandler),
            (r"/favicon.ico", NoIconHandler),
        ],
        log_function=quiet_log,
        eln=context,
        entries=entries,
        attachments=store,
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
