"""A real backend service on 127.0.0.1 for the proxy tests and the benchmark.

Run as ``python tests/support/proxy_backend.py <port>``; it prints ``ready`` once
listening. Endpoints (all generate their data; nothing is read from disk):

- ``/echo...``       any method: JSON of method, path, query, headers, body length
- ``/upload``        streamed body: JSON of bytes received and their sha256
- ``/early``         POST answered 413 before the body is read
- ``/bytes?n=N``     N bytes with a Content-Length, written in 256 KiB pieces
- ``/chunked?n=N``   N bytes chunked (no Content-Length), one flush per piece
- ``/events?count=C&delay=S``  a text/event-stream, one flushed event each S seconds
- ``/die?n=N``       announces N bytes, sends half, then drops the connection
- ``/die-chunked``   chunked, a few pieces, then drops the connection
- ``/redirect?to=L`` 302 to L
- ``/drop-later``    answers, then silently closes the keep-alive connection
- ``/cookies``       sets a Jupyter-named and a normal cookie
- ``/small``         1 KiB (the benchmark's small GET)
- ``/peer``          the client's TCP port (shows connection reuse)
- ``/stats``         JSON: TCP connections accepted so far
- ``/ws``            websocket echo; picks subprotocol ``echo.v2`` when offered;
                     "close" closes with 4001, "ping-me" sends a ping first,
                     "big:N" answers with an N-byte message, "frag" with one
                     message in three fragments, "flood:N" with N 64 KiB
                     messages as fast as the proxy takes them
- ``/wsz``           the same echo with permessage-deflate accepted
- ``/ws-closes``     JSON: the close codes the websocket echo has received
- ``/ws-flooded``    JSON: the flood messages the proxy has taken so far
- ``/.../lims/proxy/absolute/...``  echo (what an app that knows its prefix serves)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys

from tornado import web, websocket
from tornado.httpserver import HTTPServer

PIECE = 256 * 1024
BLOCK = bytes(range(256)) * (PIECE // 256)
SMALL = b"x" * 1024


def _pieces(n: int):
    while n > 0:
        k = min(PIECE, n)
        yield BLOCK[:k] if k < PIECE else BLOCK
        n -= k


class Echo(web.RequestHandler):
    def _echo(self, *args) -> None:
        headers: dict[str, list[str]] = {}
        for name, value in self.request.headers.get_all():
            headers.setdefault(name.lower(), []).append(value)
        self.set_header("Content-Type", "application/json")
        self.set_header("X-Backend", "yes")
        self.set_header("Access-Control-Allow-Origin", "*")  # the proxy must strip it
        self.set_header("Keep-Alive", "timeout=5")  # hop-by-hop: the proxy must strip it
        self.finish(
            json.dumps(
                {
                    "method": self.request.method,
                    "path": self.request.path,
                    "query": self.request.query,
                    "headers": headers,
                    "bodyLength": len(self.request.body),
                    "body": self.request.body.decode("utf-8", "replace")[:1000],
                }
            )
        )

    get = post = put = patch = delete = options = _echo

    def head(self, *args) -> None:
        self.set_header("Content-Length", "1234")
        self.finish()


@web.stream_request_body
class Upload(web.RequestHandler):
    def prepare(self) -> None:
        self.request.connection.set_max_body_size(1 << 40)
        self.n = 0
        self.digest = hashlib.sha256()

    def data_received(self, chunk: bytes) -> None:
        self.n += len(chunk)
        self.digest.update(chunk)

    def post(self) -> None:
        self.finish({"received": self.n, "sha256": self.digest.hexdigest()})

    put = post


@web.stream_request_body
class Early(web.RequestHandler):
    """Answers in ``prepare``, before reading the body (tornado then closes the
    connection once the answer is out)."""

    def prepare(self) -> None:
        self.request.connection.set_max_body_size(1 << 40)
        self.set_status(413)
        self.finish({"early": True})

    def data_received(self, chunk: bytes) -> None:
        return

    def post(self) -> None:
        return


class Bytes(web.RequestHandler):
    async def get(self) -> None:
        n = int(self.get_argument("n"))
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Length", str(n))
        for piece in _pieces(n):
            self.write(piece)
            await self.flush()


class Chunked(web.RequestHandler):
    async def get(self) -> None:
        n = int(self.get_argument("n"))
        self.set_header("Content-Type", "application/octet-stream")
        for piece in _pieces(n):
            self.write(piece)
            await self.flush()


class Events(web.RequestHandler):
    async def get(self) -> None:
        count = int(self.get_argument("count", "5"))
        delay = float(self.get_argument("delay", "0.05"))
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        for i in range(count):
            self.write(f"data: {i}\n\n")
            await self.flush()
            await asyncio.sleep(delay)


class Die(web.RequestHandler):
    async def get(self) -> None:
        n = int(self.get_argument("n", str(4 * PIECE)))
        self.set_header("Content-Length", str(n))
        self.write(BLOCK[: min(PIECE, n // 2)])
        await self.flush()
        await asyncio.sleep(0.05)
        self.request.connection.stream.close()


class DieChunked(web.RequestHandler):
    async def get(self) -> None:
        for _ in range(3):
            self.write(BLOCK[:1000])
            await self.flush()
        await asyncio.sleep(0.05)
        self.request.connection.stream.close()


class DropLater(web.RequestHandler):
    """Answers normally, then closes the keep-alive connection without a word
    (as a backend with a short idle timeout does)."""

    def get(self) -> None:
        stream = self.request.connection.stream
        asyncio.get_running_loop().call_later(0.05, stream.close)
        self.finish("ok")


class Redirect(web.RequestHandler):
    def get(self) -> None:
        self.redirect(self.get_argument("to"), status=302)


class Cookies(web.RequestHandler):
    def get(self) -> None:
        self.add_header("Set-Cookie", "_xsrf=evil; Path=/")
        self.add_header("Set-Cookie", "jupyterhub-session-id=evil; Path=/")
        self.add_header("Set-Cookie", "app=1; Path=/")
        self.finish("ok")


class Small(web.RequestHandler):
    def get(self) -> None:
        self.finish(SMALL)


class Peer(web.RequestHandler):
    def get(self) -> None:
        self.finish(str(self.request.connection.stream.socket.getpeername()[1]))


CONNECTIONS = 0


class CountingServer(HTTPServer):
    def handle_stream(self, stream, address):
        global CONNECTIONS
        CONNECTIONS += 1
        return super().handle_stream(stream, address)


class Stats(web.RequestHandler):
    def get(self) -> None:
        self.finish({"connections": CONNECTIONS})


class Echo_WS(websocket.WebSocketHandler):
    def select_subprotocol(self, subprotocols):
        return "echo.v2" if "echo.v2" in subprotocols else None

    def check_origin(self, origin: str) -> bool:
        return True

    async def on_message(self, message) -> None:
        if message == "close":
            self.close(4001, "bye")
            return
        if message == "ping-me":
            self.ping(b"hello")
        if message == "headers":
            self.write_message(json.dumps(dict(self.request.headers.get_all())))
            return
        if isinstance(message, str) and message.startswith("big:"):
            await self.write_message(b"b" * int(message[4:]), binary=True)
            return
        if isinstance(message, str) and message.startswith("flood:"):
            global FLOODED
            for _ in range(int(message[6:])):
                await self.write_message(
                    b"f" * 65536, binary=True
                )  # waits while the proxy is behind
                FLOODED += 1
            return
        if message == "frag":
            # one text message as three frames (tornado has no API for fragments)
            protocol = self.ws_connection
            protocol._write_frame(False, 0x1, b"one ")
            protocol._write_frame(False, 0x0, b"two ")
            await protocol._write_frame(True, 0x0, b"three")
            return
        await self.write_message(message, binary=isinstance(message, bytes))

    def on_pong(self, data: bytes) -> None:
        self.write_message("pong:" + data.decode())

    def on_close(self) -> None:
        CLOSES.append(self.close_code)


CLOSES: list[int | None] = []
FLOODED = 0


class WsFlooded(web.RequestHandler):
    def get(self) -> None:
        self.finish({"messages": FLOODED})


class WsCloses(web.RequestHandler):
    def get(self) -> None:
        self.finish({"codes": CLOSES})


class CompressedEcho_WS(Echo_WS):
    def get_compression_options(self):
        return {}


def make_app() -> web.Application:
    return web.Application(
        [
            (r"/upload", Upload),
            (r"/early", Early),
            (r"/bytes", Bytes),
            (r"/chunked", Chunked),
            (r"/events", Events),
            (r"/die", Die),
            (r"/die-chunked", DieChunked),
            (r"/redirect", Redirect),
            (r"/drop-later", DropLater),
            (r"/cookies", Cookies),
            (r"/small", Small),
            (r"/peer", Peer),
            (r"/stats", Stats),
            (r"/ws", Echo_WS),
            (r"/wsz", CompressedEcho_WS),
            (r"/echo.*", Echo),
            (r"/ws-closes", WsCloses),
            (r"/ws-flooded", WsFlooded),
            (r"/.*/lims/proxy/absolute/.*", Echo),
        ],
        websocket_max_message_size=64 * 1024 * 1024,
    )


async def main(port: int) -> None:
    server = CountingServer(make_app(), max_body_size=1 << 40, idle_connection_timeout=3600)
    server.listen(port, address="127.0.0.1")
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
