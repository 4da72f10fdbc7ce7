"""Save to ELN: the return grants kept from open tokens, the export and the upload.

Owns:

- the decision on an open token's ``return`` claim (:meth:`ElnReturns.check`, run
  with the other checks before an open writes anything): with ``return_url_prefixes``
  empty the feature is off and a ``return`` is ignored; with it set, a URL outside
  the prefixes refuses the open (``url_not_allowed``), as a data URL would;
- keeping the return server-side in ``eln_returns.json`` in the state directory
  (0600, locked atomic updates through :mod:`.statefile`), keyed by the notebook's
  path, with the record of that notebook's saves; a later open of the same
  notebook with a new ``return`` replaces the old one;
- a save (:meth:`ElnReturns.save`): the notebook read as saved, an HTML export
  (nbconvert, offline), a ``multipart/form-data`` body (``notebook``, ``html``,
  ``provenance``) streamed from temporary files to ``return.url`` with the grant as
  bearer credential and an ``Idempotency-Key``, the LIMS's answer, the ``save`` event.

Must not: put the grant anywhere but that state file and the ``Authorization``
header of the upload (not the notebook, a response, an event, a log line, an
error); run the export or the upload on the event loop (both run in a worker
thread); hold the bundle in memory (the parts are written to temporary files and
read in chunks while they are sent); follow a redirect (it would take the grant,
or drop it, somewhere the operator did not allow); echo the LIMS's answer body.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
import tempfile
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from jupyter_core.utils import ensure_async
from tornado import web

from . import events
from ._version import __version__
from .claims import ReturnSpec
from .errors import LimsError
from .paths import contained
from .statefile import read_json, update_private_json
from .urlrules import safe_url, url_allowed

log = logging.getLogger(__name__)

STATE_FILE = "eln_returns.json"
FORMATS = ("ipynb", "html")
DEFAULT_FORMATS = ["ipynb", "html"]
MAX_SAVES = 50  # saves remembered per notebook (the LIMS keeps the real history)
MAX_ANSWER_BYTES = 64 * 1024  # of the LIMS's JSON answer; the rest is not read
CHUNK = 1024 * 1024


def utc_iso(ts: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if ts is None else ts, timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class _File:
    """One part's content, on disk, with what the LIMS and the answer are told of it."""

    part: str  # the multipart field name
    name: str  # its file name
    content_type: str
    path: Path
    sha256: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "size": self.size}


def _copy_hashed(source: Path, target: Path) -> tuple[str, int]:
    """Copy ``source`` to ``target`` in chunks; the copy's sha256 and size."""
    digest, size = hashlib.sha256(), 0
    # O_NOFOLLOW: ``source`` was resolved and contained; a link put in its place
    # since then is refused (ELOOP), not followed out of the workspace
    fd = os.open(source, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as src, target.open("xb") as dst:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            dst.write(chunk)
    return digest.hexdigest(), size


def _hash_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def export_html(notebook: Path, target: Path) -> None:
    """``notebook`` as standalone HTML (nbconvert's ``HTMLExporter``, no network needed)."""
    import nbformat  # imported here: only a save pays for nbconvert's import
    from nbconvert import HTMLExporter

    with notebook.open(encoding="utf-8") as f:
        node = nbformat.read(f, as_version=4)
    html, _ = HTMLExporter().from_notebook_node(node)
    del node
    with target.open("xb") as f:
        # encoded a chunk at a time: never a second, encoded copy of the whole page
        for start in range(0, len(html), CHUNK):
            f.write(html[start : start + CHUNK].encode("utf-8"))


def _disposition_value(text: str) -> str:
    """A quoted-string for Content-Disposition, escaped as browsers do (WHATWG)."""
    return text.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class MultipartBody:
    """A ``multipart/form-data`` body read from files on disk, never whole in memory.

    It has a length (so requests sends ``Content-Length``, not chunks) and
    ``read(n)`` (so http.client sends it block by block); each part's file is
    opened only while it is being read.
    """

    def __init__(self, files: list[_File], boundary: str | None = None) -> None:
        self.boundary = boundary or "jlb-" + secrets.token_hex(16)
        self._segments: list[bytes | Path] = []
        for f in files:
            head = (
                f"--{self.boundary}\r\n"
                f'Content-Disposition: form-data; name="{f.part}"; '
                f'filename="{_disposition_value(f.name)}"\r\n'
                f"Content-Type: {f.content_type}\r\n\r\n"
            )
            self._segments += [head.encode(), f.path, b"\r\n"]
        self._segments.append(f"--{self.boundary}--\r\n".encode())
        self._length = sum(
            s.stat().st_size if isinstance(s, Path) else len(s) for s in self._segments
        )
        self._chunks: Iterator[bytes] = self._iterate()
        self._pending = b""

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return self._length

    def _iterate(self) -> Iterator[bytes]:
        for segment in self._segments:
            if isinstance(segment, bytes):
                yield segment
                continue
            with segment.open("rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def read(self, size: int = -1) -> bytes:
        # http.client asks for small blocks; a chunk of a part is at most CHUNK
        # bytes, so at most one chunk is ever held here beyond what was asked
        out = bytearray()
        while size < 0 or len(out) < size:
            if not self._pending:
                self._pending = next(self._chunks, b"")
                if not self._pending:
                    break
            take = len(self._pending) if size < 0 else size - len(out)
            out += self._pending[:take]
            self._pending = self._pending[take:]
        return bytes(out)


class ElnReturns:
    """The returns kept from open tokens, and saves of their notebooks to the ELN."""

    def __init__(
        self,
        *,
        state_dir: Path,
        prefixes: list[str],
        root_dir: Path,
        workspace_root: Path,
        workspace_api_dir: str,
        contents_manager: Any,
        owner: str,
        timeout: float = 60.0,
        event_logger: Any = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.path = Path(state_dir) / STATE_FILE
        self.prefixes = list(prefixes)
        self.root_dir = Path(root_dir).resolve()
        self.workspace_root = Path(workspace_root).resolve()
        self.workspace_api_dir = workspace_api_dir
        self.contents_manager = contents_manager
        self.owner = owner
        self.timeout = timeout
        self.event_logger = event_logger
        self.log = log or logging.getLogger(__name__)
        # one save of a notebook at a time: a double click waits, then finds it unchanged
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @property
    def enabled(self) -> bool:
        return bool(self.prefixes)

    # -- at open time ---------------------------------------------------------------

    def check(self, spec: ReturnSpec | None) -> ReturnSpec | None:
        """The ``return`` an open will keep: None when there is none or the feature is
        off; ``url_not_allowed`` when its URL lies outside ``return_url_prefixes``."""
        if spec is None or not self.enabled:
            return None
        if not url_allowed(spec.url, self.prefixes):
            raise LimsError(
                "url_not_allowed",
                "The token's return URL (where Save to ELN would send results) is not "
                "allowed on this server (return_url_prefixes).",
            )
        return spec

    def remember(self, api_path: str, spec: ReturnSpec, entity: dict[str, Any]) -> None:
        """Keep ``spec`` for the notebook at ``api_path`` (replacing an older return)."""
        key = self.resolve(api_path)[0]

        def change(data: dict[str, Any]) -> bool:
            entry = data.get(key) if isinstance(data.get(key), dict) else {}
            entry.update(
                {
                    "return": {"url": spec.url, "grant": spec.grant, "expires": spec.expires},
                    "entity": entity,
                    "storedAt": utc_iso(),
                }
            )
            entry.setdefault("saves", [])
            data[key] = entry
            return True

        update_private_json(self.path, change)

    # -- paths ------------------------------------------------------------------------

    def resolve(self, api_path: Any) -> tuple[str, Path]:
        """The notebook's key (its path relative to the server root, normalised) and
        its file, resolved (symlinks included) and inside the workspace."""
        if not isinstance(api_path, str) or not api_path.strip("/ "):
            raise LimsError("bad_request", "'path' must name a notebook.")
        relative = PurePosixPath(api_path.strip("/"))
        if ".." in relative.parts or "\\" in api_path or "\x00" in api_path:
            raise LimsError("path_not_allowed", "That path leaves the workspace.")
        os_path = contained(self.root_dir.joinpath(*relative.parts), self.workspace_root)
        if os_path == self.workspace_root:
            raise LimsError("path_not_allowed", "That path is not a notebook in the workspace.")
        if os_path.suffix != ".ipynb":
            raise LimsError("bad_request", "Only notebooks (.ipynb) can be saved to the ELN.")
        key = f"{self.workspace_api_dir}/{os_path.relative_to(self.workspace_root).as_posix()}"
        return key, os_path

    # -- what the panel and the toolbar see ---------------------------------------------

    def _entries(self) -> dict[str, Any]:
        return read_json(self.path, dict)

    def describe(self, api_path: Any) -> dict[str, Any]:
        """The body of ``GET lims/api/save?path=``: whether this notebook can be saved to
        the ELN and its saves, newest first. Never the grant or the return URL."""
        key, _ = self.resolve(api_path)
        entry = self._entries().get(key)
        entry = entry if isinstance(entry, dict) else {}
        ret = entry.get("return") if self.enabled else None
        has_return = isinstance(ret, dict) and url_allowed(str(ret.get("url")), self.prefixes)
        expires = ret.get("expires") if has_return else None
        saves = [_public_save(s) for s in entry.get("saves", []) if isinstance(s, dict)]
        return {
            "path": key,
            "hasReturn": has_return,
            "expiresAt": utc_iso(expires) if isinstance(expires, int) else None,
            "expired": bool(isinstance(expires, int) and expires < time.time()),
            "saves": saves[::-1],
        }

    def annotate(self, recent: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``recent`` (the status's recent opens), each with ``lastSave`` when it has one."""
        entries = self._entries()
        out = []
        for item in recent:
            entry = entries.get(item.get("path")) if isinstance(item, dict) else None
            saves = entry.get("saves") if isinstance(entry, dict) else None
            last = saves[-1] if isinstance(saves, list) and saves else None
            out.append({**item, "lastSave": _public_save(last) if isinstance(last, dict) else None})
        return out

    # -- the save -----------------------------------------------------------------------

    async def save(self, api_path: Any, formats: Any = None) -> dict[str, Any]:
        """Save the notebook at ``api_path`` to its ELN entry; the body of ``POST lims/api/save``."""
        key, os_path = self.resolve(api_path)
        wanted = _formats(formats)
        entity: dict[str, Any] = {}
        try:
            entry = self._entries().get(key)
            entry = entry if isinstance(entry, dict) else {}
            entity = entry.get("entity") if isinstance(entry.get("entity"), dict) else {}
            spec = self._usable_return(entry)
            await self._check_notebook(key)
            lock = self._locks.setdefault(key, asyncio.Lock())
            async with lock:
                result = await asyncio.to_thread(self._save, key, os_path, wanted, spec, entity)
        except LimsError as e:
            self._emit({"action": "failed", "reason": e.reason, "path": key}, entity)
            raise
        self._emit(
            {
                "action": result["status"],
                "path": key,
                "elnStatus": result["eln"].get("status"),
                "elnVersion": _str_or_none(result["eln"].get("version")),
                "bytes": sum(f["size"] for f in result["files"]),
            },
            entity,
        )
        return result

    def _usable_return(self, entry: dict[str, Any]) -> ReturnSpec:
        ret = entry.get("return")
        if not self.enabled or not isinstance(ret, dict):
            raise LimsError(
                "no_return",
                "This notebook was not opened from an ELN entry that accepts results "
                "(or Save to ELN is off on this server).",
            )
        url, grant, expires = ret.get("url"), ret.get("grant"), ret.get("expires")
        if not isinstance(url, str) or not isinstance(grant, str) or not grant:
            raise LimsError("no_return")
        if not url_allowed(url, self.prefixes):
            raise LimsError(
                "no_return", "This notebook's ELN entry is no longer allowed on this server."
            )
        if isinstance(expires, int) and expires < time.time():
            raise LimsError("return_expired")
        return ReturnSpec(
            url=url, grant=grant, expires=expires if isinstance(expires, int) else None
        )

    async def _check_notebook(self, key: str) -> None:
        """The notebook exists for the ContentsManager (hidden files, permissions…) as a notebook."""
        try:
            model = await ensure_async(self.contents_manager.get(key, content=False))
        except web.HTTPError as e:
            if e.status_code == 404:
                raise LimsError("not_found", "There is no such notebook.") from None
            raise LimsError("path_not_allowed", "That notebook cannot be read.") from None
        if model.get("type") != "notebook":
            raise LimsError("bad_request", "Only notebooks can be saved to the ELN.")

    def _save(
        self,
        key: str,
        os_path: Path,
        formats: list[str],
        spec: ReturnSpec,
        entity: dict[str, Any],
    ) -> dict[str, Any]:
        """Runs in a worker thread: copy, hash, export, upload, record."""
        with tempfile.TemporaryDirectory(prefix="lims-save-") as tmp:
            work = Path(tmp)
            name = os_path.name
            copy = work / "notebook.ipynb"
            try:
                # one copy, read once: the notebook part and the HTML come from the same bytes
                sha, size = _copy_hashed(os_path, copy)
            except FileNotFoundError:
                raise LimsError("not_found", "There is no such notebook.") from None
            except OSError:
                raise LimsError("path_not_allowed", "That notebook cannot be read.") from None
            notebook = _File("notebook", name, "application/x-ipynb+json", copy, sha, size)
            bundle_key = idempotency_key(spec.url, key, formats, sha)
            last = self._last_save(key)
            if last is not None and last.get("key") == bundle_key:
                return {
                    "status": "unchanged",
                    "files": last.get("files", []),
                    "eln": last.get("eln", {}),
                    "savedAt": last.get("savedAt"),
                }
            files = [notebook]
            if "html" in formats:
                html = work / "notebook.html"
                try:
                    export_html(copy, html)
                except Exception as e:
                    # a notebook nbconvert cannot read: say so, without its content
                    self.log.warning(
                        "lims-bridge: HTML export of %s failed: %s", key, type(e).__name__
                    )
                    raise LimsError(
                        "bad_request", "The notebook could not be exported to HTML."
                    ) from None
                files.append(
                    _File(
                        "html",
                        f"{os_path.stem}.html",
                        "text/html; charset=utf-8",
                        html,
                        *_hash_file(html),
                    )
                )
            saved_at = utc_iso()
            provenance = {
                "entity": entity or None,
                "path": key,
                "owner": self.owner,
                "savedAt": saved_at,
                "bridgeVersion": __version__,
                "idempotencyKey": bundle_key,
                "files": [{"part": f.part, **f.to_json()} for f in files],
            }
            prov = work / "provenance.json"
            prov.write_text(json.dumps(provenance, indent=1))
            body = MultipartBody(
                [
                    *files,
                    _File(
                        "provenance", "provenance.json", "application/json", prov, *_hash_file(prov)
                    ),
                ]
            )
            eln = self._upload(spec, body, bundle_key)
        record = {
            "savedAt": saved_at,
            "key": bundle_key,
            "formats": formats,
            "files": [f.to_json() for f in files],
            "eln": eln,
        }
        self._record(key, record)
        self.log.info(
            "lims-bridge: saved %s to the ELN at %s (HTTP %s, %d bytes)",
            key,
            safe_url(spec.url),
            eln.get("status"),
            len(body),
        )
        return {"status": "saved", "files": record["files"], "eln": eln, "savedAt": saved_at}

    def _upload(self, spec: ReturnSpec, body: MultipartBody, bundle_key: str) -> dict[str, Any]:
        headers = {
            "Authorization": f"Bearer {spec.grant}",
            "Idempotency-Key": bundle_key,
            "Content-Type": body.content_type,
            "Accept": "application/json",
            "User-Agent": f"jupyter-lims-bridge/{__version__}",
        }
        import requests  # loaded by the first save, not with the extension

        try:
            response = requests.post(
                spec.url,
                data=body,
                headers=headers,
                timeout=(self.timeout, self.timeout),
                allow_redirects=False,
                stream=True,
            )
        except requests.RequestException as e:
            # the exception's text may quote the URL: only its type is logged
            self.log.warning(
                "lims-bridge: upload to %s failed: %s", safe_url(spec.url), type(e).__name__
            )
            timed_out = isinstance(e, requests.Timeout)
            raise LimsError(
                "eln_unreachable",
                "The ELN did not answer in time." if timed_out else "The ELN cannot be reached.",
            ) from None
        try:
            status = response.status_code
            if not 200 <= status < 300:
                raise LimsError("eln_refused", _refusal_message(status))
            try:
                raw = response.raw.read(MAX_ANSWER_BYTES, decode_content=True)
            except Exception:
                raw = b""
        finally:
            response.close()
        answer: Any = None
        if raw:
            try:
                answer = json.loads(raw)
            except ValueError:
                answer = None
        answer = answer if isinstance(answer, dict) else {}
        version = answer.get("version")
        url = answer.get("url")
        return {
            "status": status,
            "version": version
            if isinstance(version, (str, int)) and not isinstance(version, bool)
            else None,
            "url": url
            if isinstance(url, str) and url.lower().startswith(("https://", "http://"))
            else None,
        }

    def _last_save(self, key: str) -> dict[str, Any] | None:
        entry = self._entries().get(key)
        saves = entry.get("saves") if isinstance(entry, dict) else None
        return (
            saves[-1] if isinstance(saves, list) and saves and isinstance(saves[-1], dict) else None
        )

    def _record(self, key: str, record: dict[str, Any]) -> None:
        def change(data: dict[str, Any]) -> bool:
            entry = data.get(key)
            if not isinstance(entry, dict):
                return False  # forgotten meanwhile: nothing to attach the save to
            saves = [s for s in entry.get("saves", []) if isinstance(s, dict)]
            saves.append(record)
            entry["saves"] = saves[-MAX_SAVES:]
            return True

        update_private_json(self.path, change)

    def _emit(self, data: dict[str, Any], entity: dict[str, Any]) -> None:
        events.emit(
            self.event_logger,
            events.SAVE,
            {
                **data,
                "entityType": _str_or_none(entity.get("type")),
                "entityId": _str_or_none(entity.get("id")),
            },
        )


def idempotency_key(url: str, key: str, formats: list[str], notebook_sha256: str) -> str:
    """The sha256 of the bundle, as a description that is the same for the same content:
    the entry's return URL, the notebook's path, the formats and the notebook's sha256
    (the HTML and the provenance are functions of these, save the time of the save)."""
    canonical = json.dumps(
        {"url": url, "path": key, "formats": sorted(formats), "notebook": notebook_sha256},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _formats(raw: Any) -> list[str]:
    if raw is None:
        return list(DEFAULT_FORMATS)
    if (
        not isinstance(raw, list)
        or not raw
        or not all(isinstance(f, str) and f in FORMATS for f in raw)
    ):
        raise LimsError("bad_request", "'formats' must be a list of 'ipynb' and 'html'.")
    if "ipynb" not in raw:
        raise LimsError(
            "bad_request", "'formats' must include 'ipynb': the notebook is always sent."
        )
    return [f for f in FORMATS if f in raw]


def _refusal_message(status: int) -> str:
    message = f"The ELN refused the upload (HTTP {status})."
    if status in (401, 403):
        message += (
            " Its permission to receive results may have ended: open the entry from the ELN again."
        )
    elif 300 <= status < 400:
        message += " It answered with a redirect, which is not followed."
    return message


def _public_save(save: dict[str, Any]) -> dict[str, Any]:
    return {
        "savedAt": save.get("savedAt"),
        "files": save.get("files", []),
        "eln": save.get("eln", {}),
    }


def _str_or_none(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return value if isinstance(value, str) else None
