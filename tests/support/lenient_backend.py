"""A lenient HTTP/1.1 backend, as many real services are: Python's ``http.server``.

Started in a thread of the test process (``LenientBackend().start()``), on
127.0.0.1 only. It keeps connections alive (``protocol_version = "HTTP/1.1"``)
but never reads a request body it does not need, so body bytes it left unread
are parsed as the next request on that connection: the backend a proxy must
not pool carelessly in front of (issue #9, item 1). Every request line it
parses is recorded in ``requests`` (method, path, headers).

- ``GET|DELETE|OPTIONS /<anything>``: JSON ``{"method", "path"}``, body unread
- ``HEAD /<anything>``: the GET's head, no body
- ``HEAD /head-with-body``: the head *and* a body (a broken but real backend)
- ``POST|PUT /<anything>``: answers at once, before reading the body
- ``GET /double``: its answer twice, in one write
- ``GET /double-chunked``: a chunked answer twice, in one write
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return

    def _answer(self, *, body: bool = True) -> None:
        self.server.requests.append(  # type: ignore[attr-defined]
            (self.command, self.path, dict(self.headers.items()))
        )
        payload = json.dumps({"method": self.command, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def do_GET(self) -> None:
        if self.path.startswith("/double-chunked"):
            self.server.requests.append((self.command, self.path, {}))  # type: ignore[attr-defined]
            answer = (
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n0\r\n\r\n"
            )
            self.wfile.write(answer + answer.replace(b"first", b"extra"))
            return
        if self.path.startswith("/double"):
            # the answer twice in one write: the second copy is already in the
            # proxy's read buffer when it has read the first
            self.server.requests.append((self.command, self.path, {}))  # type: ignore[attr-defined]
            payload = json.dumps({"method": "GET", "path": self.path}).encode()
            head = (
                f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n"
            ).encode()
            self.wfile.write((head + payload) * 2)
            return
        self._answer()

    do_DELETE = do_OPTIONS = do_POST = do_PUT = do_PATCH = do_GET

    def do_HEAD(self) -> None:
        self._answer(body=self.path.startswith("/head-with-body"))


class LenientBackend:
    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.requests = []  # type: ignore[attr-defined]
        self.port: int = self.server.server_address[1]

    @property
    def requests(self) -> list[tuple[str, str, dict[str, str]]]:
        return self.server.requests  # type: ignore[attr-defined]

    def start(self) -> LenientBackend:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
