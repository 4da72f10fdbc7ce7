"""A LIMS webhook endpoint on 127.0.0.1 for the tests: verifies, records, fails on demand.

Signatures are checked with the ``standardwebhooks`` package (the reference
implementation of the spec), not with the bridge's own code. The receiver can
be stopped and started again on the same port (the LIMS is down for a while),
can answer a given status a number of times before accepting, and can hang.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    verified: bool
    status: int  # what the receiver answered

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    secret: str
    port: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)  # statuses to answer before accepting
    hangs: list[float] = field(
        default_factory=list
    )  # seconds to wait before answering, per request
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/jupyter"

    def start(self) -> WebhookReceiver:
        receiver = self
        verifier = Webhook(self.secret)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    verifier.verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    verified = False
                if receiver.hangs:
                    time.sleep(receiver.hangs.pop(0))  # a LIMS that does not answer in time
                status = (
                    receiver.failures.pop(0) if receiver.failures else (204 if verified else 401)
                )
                receiver.deliveries.append(Delivery(headers, body, verified, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def accepted(self) -> list[Delivery]:
        """Verified deliveries the receiver answered with 2xx, one per ``webhook-id``."""
        seen: dict[str, Delivery] = {}
        for d in list(self.deliveries):
            if d.verified and 200 <= d.status < 300:
                seen.setdefault(d.id, d)
        return list(seen.values())

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Delivery]:
        """Block until ``count`` distinct events were accepted (for subprocess tests)."""
        deadline = time.monotonic() + timeout
        while len(self.accepted()) < count:
            assert time.monotonic() < deadline, f"only {len(self.accepted())} of {count} arrived"
            time.sleep(0.05)
        return self.accepted()
