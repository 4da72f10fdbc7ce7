"""A LIMS on 127.0.0.1 that receives "Save to ELN" uploads: checks, stores, fails on demand.

A real HTTP server in a thread. For each ``POST`` to its attachments URL it
checks the bearer grant (401 otherwise), parses the ``multipart/form-data``
body with the standard library's email parser (not the bridge's code) and
stores the parts as one attachment with a new version, answering
``{"version", "url"}``. An ``Idempotency-Key`` it has seen before gets the first
answer again and stores nothing new. ``behaviours`` fails the next requests
on demand, one entry each: an int (refuse with that status, and a body that
must never reach the user), ``"hang"`` (read the request, answer nothing for
``hang_seconds``), ``"drop"`` (read and store the request, then close the
connection without an answer: the answer is lost). With ``keep_bodies=False``
the body is only hashed and counted (for large uploads).
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: what a refusal's body says: a test checks that the user never sees it
REFUSAL_BODY = "internal detail from the LIMS: stack trace, table names"


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str
    content: bytes


@dataclass
class Attachment:
    version: int
    idempotency_key: str | None
    parts: dict[str, Part]

    def json(self, name: str) -> Any:
        return json.loads(self.parts[name].content)


@dataclass
class Received:
    """One request as it arrived (never the grant itself: only whether it matched)."""

    grant_ok: bool
    idempotency_key: str | None
    content_type: str
    content_length: int | None
    transfer_encoding: str | None
    size: int
    sha256: str
    answered: int | str  # a status, "hang" or "drop"


def parse_multipart(content_type: str, body: bytes) -> dict[str, Part]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    parts: dict[str, Part] = {}
    for part in message.iter_parts():
        disposition = part.get("Content-Disposition", "")
        params = dict(part["Content-Disposition"].params) if disposition else {}
        parts[params["name"]] = Part(
            name=params["name"],
            filename=params.get("filename"),
            content_type=part.get_content_type(),
            content=part.get_payload(decode=True) or b"",
        )
    return parts


@dataclass
class LimsStandIn:
    grants: set[str] = field(default_factory=lambda: {"grant-S42-first"})
    path: str = "/api/jupyter/entries/S-42/attachments"
    hang_seconds: float = 5.0
    keep_bodies: bool = True
    behaviours: list[int | str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.origin + self.path

    @property
    def prefix(self) -> str:
        return self.origin + "/api/jupyter/"

    def return_claim(self, grant: str | None = None, expires: int | None = None) -> dict[str, Any]:
        claim: dict[str, Any] = {"url": self.url, "grant": grant or next(iter(self.grants))}
        if expires is not None:
            claim["expires"] = expires
        return claim

    def start(self) -> LimsStandIn:
        lims = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                lims._handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- one request ------------------------------------------------------------------

    def _read_body(self, request: BaseHTTPRequestHandler) -> tuple[bytes, int, str]:
        length = request.headers.get("Content-Length")
        digest, size, chunks = hashlib.sha256(), 0, []
        remaining = int(length) if length is not None else 0
        while remaining > 0:
            chunk = request.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                break
            remaining -= len(chunk)
            size += len(chunk)
            digest.update(chunk)
            if self.keep_bodies:
                chunks.append(chunk)
        return b"".join(chunks), size, digest.hexdigest()

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        headers = request.headers
        authorization = headers.get("Authorization", "")
        grant_ok = authorization.startswith("Bearer ") and authorization[7:] in self.grants
        key = headers.get("Idempotency-Key")
        body, size, sha = self._read_body(request)
        with self._lock:
            behaviour = self.behaviours.pop(0) if self.behaviours else None
        record = Received(
            grant_ok=grant_ok,
            idempotency_key=key,
            content_type=headers.get("Content-Type", ""),
            content_length=int(headers["Content-Length"]) if "Content-Length" in headers else None,
            transfer_encoding=headers.get("Transfer-Encoding"),
            size=size,
            sha256=sha,
            answered=behaviour if behaviour is not None else 0,
        )
        self.received.append(record)
        if request.path != self.path:
            record.answered = 404
            return self._answer(request, 404, {"error": "no such entry"})
        if isinstance(behaviour, int):
            return self._answer(request, behaviour, {"error": REFUSAL_BODY})
        if behaviour == "hang":
            self._stop.wait(self.hang_seconds)
            request.close_connection = True
            return None
        if not grant_ok:
            record.answered = 401
            return self._answer(request, 401, {"error": REFUSAL_BODY})
        with self._lock:
            answer = self.answers.get(key) if key else None
            if answer is None:
                parts = parse_multipart(record.content_type, body) if self.keep_bodies else {}
                version = len(self.attachments) + 1
                self.attachments.append(Attachment(version, key, parts))
                answer = {
                    "version": version,
                    "url": f"{self.origin}/entries/S-42/attachments/{version}",
                }
                if key:
                    self.answers[key] = answer
        if behaviour == "drop":
            # stored, but the answer is lost: the connection closes without one
            request.close_connection = True
            try:
                request.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return None
        record.answered = 201
        return self._answer(request, 201, answer)

    @staticmethod
    def _answer(request: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)
