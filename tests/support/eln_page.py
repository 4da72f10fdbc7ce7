"""A stand-in for an ELN's page that shows JupyterLab in an iframe, for the
browser tests of embedding: ``GET /entry?src=<url>`` answers a page framing
``src`` that records every ``postMessage`` it receives (``window.received``,
and as text in ``#messages``). Serves on 127.0.0.1; the tests reach it as
``http://localhost:<port>`` so that it is another site than the Jupyter server
on ``127.0.0.1``."""

from __future__ import annotations

import html
import http.server
import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>ELN entry S-42</title>
<style>body{{margin:0;font:14px system-ui}} header{{padding:8px 12px;background:#234;color:#fff}}
iframe{{width:100%;height:640px;border:0}} #messages{{font:11px monospace;padding:4px 12px}}</style>
</head><body>
<header>ELN · Sample S-42 · Buffer screen 3</header>
<iframe id="jupyter" src="{src}" allow="clipboard-read; clipboard-write"></iframe>
<pre id="messages"></pre>
<script>
window.received = [];
window.addEventListener("message", function (event) {{
  window.received.push({{origin: event.origin, data: event.data}});
  document.getElementById("messages").textContent = JSON.stringify(window.received);
}});
</script>
</body></html>
"""


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != "/entry":
            self.send_error(404)
            return
        src = parse_qs(parts.query).get("src", ["about:blank"])[0]
        body = PAGE.format(src=html.escape(src, quote=True)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class ElnPage:
    """The page server; ``origin`` is how the browser must address it."""

    def __init__(self) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.port = self.server.server_address[1]
        self.origin = f"http://localhost:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> ElnPage:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def entry_url(self, src: str) -> str:
        from urllib.parse import quote

        return f"{self.origin}/entry?src={quote(src, safe='')}"
