"""A real HTTP file server on 127.0.0.1 for staging tests and the benchmark.

A small tornado app on its own event loop in a thread (or, with
``python -m tests.support.fileserver DIR``, in its own process). Each served file has a
:class:`Behaviour` that makes it misbehave the way real servers do: no Range
support, a connection cut half-way, wrong bytes, slow, stalled, 500 before 200,
redirects. Every request it sees is recorded with its headers, so tests can
assert what was (or was not) fetched.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tornado import httpserver, netutil, web
from tornado.iostream import StreamClosedError

_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class Behaviour:
    """How one file is served. Counters (``fail_first``, ``cuts``, ``stalls``) count down."""

    content: bytes | Path
    ranges: bool = True  # honour Range (else answer 200 with the whole file)
    cut_after: int | None = None  # close the connection after this many body bytes…
    cuts: int | None = 1  # …this many times (None: every time)
    corrupt: bool = False  # flip one byte in the middle (same length)
    delay: float = 0.0  # seconds of sleep between chunks
    stall: float = 0.0  # seconds of sleep before the body…
    stalls: int = 1  # …this many times
    fail_first: int = 0  # answer 500 this many times first
    status: int | None = None  # always answer this status instead (e.g. 404)
    redirect: str | None = None  # answer 302 to this URL
    content_length: bool = True  # send Content-Length (else a chunked body of unknown length)
    etag: str | None = None  # ETag to send (default: derived from the content)
    chunk: int = 64 * 1024

    @property
    def length(self) -> int:
        return self.content.stat().st_size if isinstance(self.content, Path) else len(self.content)

    def read(self, start: int, size: int) -> bytes:
        if isinstance(self.content, Path):
            with self.content.open("rb") as f:
                f.seek(start)
                data = f.read(size)
        else:
            data = self.content[start : start + size]
        if self.corrupt:
            middle = self.length // 2
            if start <= middle < start + len(data):
                i = middle - start
                data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
        return data


@dataclass
class Seen:
    """One request the server received."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    status: int = 0
    body_bytes: int = 0  # bytes of body actually sent
    at: float = field(default_factory=time.monotonic)  # when it arrived

    @property
    def range(self) -> str | None:
        return self.headers.get("Range")


class _FileHandler(web.RequestHandler):
    def initialize(self, server: FileServer) -> None:
        self.fs = server

    def compute_etag(self) -> None:  # we send our own, or none
        return None

    async def get(self, name: str) -> None:
        fs = self.fs
        fs.in_flight += 1
        fs.most_in_flight = max(fs.most_in_flight, fs.in_flight)
        try:
            await self._serve(name)
        finally:
            fs.in_flight -= 1

    async def _serve(self, name: str) -> None:
        seen = Seen("GET", self.request.path, self.request.query, dict(self.request.headers))
        self.fs.requests.append(seen)
        spec = self.fs.files.get(name)
        if spec is None:
            seen.status = 404
            raise web.HTTPError(404)
        if spec.status is not None:
            seen.status = spec.status
            raise web.HTTPError(spec.status)
        if spec.fail_first > 0:
            spec.fail_first -= 1
            seen.status = 500
            raise web.HTTPError(500)
        if spec.redirect is not None:
            seen.status = 302
            self.redirect(spec.redirect)
            return
        total = spec.length
        etag = (
            spec.etag or f'"{hashlib.sha256(str(total).encode() + name.encode()).hexdigest()[:16]}"'
        )
        start = 0
        status = 200
        requested = self.request.headers.get("Range")
        if_range = self.request.headers.get("If-Range")
        if spec.ranges:
            self.set_header("Accept-Ranges", "bytes")
            self.set_header("ETag", etag)
        if requested and spec.ranges and (if_range is None or if_range == etag):
            m = _RANGE_RE.match(requested.strip())
            if m:
                start = int(m.group(1))
                if start >= total:
                    seen.status = 416
                    self.set_status(416)
                    self.set_header("Content-Range", f"bytes */{total}")
                    self.finish()
                    return
                status = 206
                self.set_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        self.set_status(status)
        seen.status = status
        self.set_header("Content-Type", "application/octet-stream")
        if spec.content_length:
            self.set_header("Content-Length", str(total - start))
        if spec.stall and spec.stalls > 0:
            spec.stalls -= 1
            await asyncio.sleep(spec.stall)
        cut = (
            spec.cut_after
            if spec.cut_after is not None and (spec.cuts is None or spec.cuts > 0)
            else None
        )
        offset = start
        while offset < total:
            size = min(spec.chunk, total - offset)
            if cut is not None:
                size = min(size, max(cut - seen.body_bytes, 0))
            if size <= 0:
                break
            data = spec.read(offset, size)
            self.write(data)
            try:
                await self.flush()
            except StreamClosedError:
                return  # the client went away (a test killed it): nothing to answer
            offset += len(data)
            seen.body_bytes += len(data)
            if spec.delay:
                await asyncio.sleep(spec.delay)
        if cut is not None and offset < total:
            if spec.cuts is not None:
                spec.cuts -= 1
            self.detach().close()  # the connection drops mid-body
            return
        self.finish()


class FileServer:
    """``FileServer()`` → ``add(name, content, **behaviour)`` → ``url(name)``; records ``requests``."""

    def __init__(self) -> None:
        self.files: dict[str, Behaviour] = {}
        self.requests: list[Seen] = []
        #: requests being answered now, and the most at any one time
        self.in_flight = 0
        self.most_in_flight = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: httpserver.HTTPServer | None = None

    def add(self, name: str, content: bytes | Path, **behaviour: Any) -> str:
        self.files[name] = Behaviour(content, **behaviour)
        return self.url(name)

    def url(self, name: str, query: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/files/{name}" + (f"?{query}" if query else "")

    @property
    def prefix(self) -> str:
        return f"http://127.0.0.1:{self.port}/files/"

    def seen(self, name: str) -> list[Seen]:
        return [r for r in self.requests if r.path == f"/files/{name}"]

    def app(self) -> web.Application:
        # no access log: requests are recorded in ``self.requests``, and a signed
        # query in the test server's own log would blur the "never logged" tests
        return web.Application(
            [(r"/files/([^/]+)", _FileHandler, {"server": self})], log_function=lambda handler: None
        )

    def start(self) -> FileServer:
        ready = threading.Event()
        sockets = netutil.bind_sockets(0, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            self._server = httpserver.HTTPServer(self.app())
            self._server.add_sockets(sockets)
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="test-fileserver", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            assert self._server is not None
            self._server.stop()
            await self._server.close_all_connections()

        fut = asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        try:
            fut.result(5)
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(5)


def main() -> None:
    """Serve every file of a directory (benchmark use): ``python -m tests.support.fileserver DIR``."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--chunk", type=int, default=1 << 20)
    args = parser.parse_args()
    server = FileServer()
    for path in sorted(args.directory.iterdir()):
        if path.is_file():
            server.add(path.name, path, chunk=args.chunk)
    server.start()
    print(server.prefix, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
