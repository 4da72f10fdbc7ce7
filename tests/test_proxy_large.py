"""Large bodies through the proxy stream in constant memory.

Given the real backend, when 1 GiB is downloaded and 256 MiB uploaded through
``lims/proxy/<port>/`` (the data is generated, never written to disk), then
the bytes arrive intact and the server process's RSS grows by < 64 MiB.
The client runs in a thread of the same process and reads in 256 KiB pieces,
so the measured growth includes it and is an upper bound for the server.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import threading
import time
from urllib.parse import urlsplit

import psutil
import pytest

from .test_proxy import (  # noqa: F401
    backend_port,
    bridge_config,
    closed_port,
    lenient,
    server,
    token,
)

GIB = 1024**3
MIB = 1024**2
PIECE = 256 * 1024
RSS_LIMIT = 64 * MIB

pytestmark = pytest.mark.slow


class PeakRSS:
    """Samples this process's RSS every 20 ms in a thread."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def growth(self) -> int:
        return self.peak - self.base


def _download(url: str, token: str, timeout: float = 120) -> tuple[int, int, str]:
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    conn.request("GET", f"{u.path}?{u.query}", headers={"X-Proxy-Token": token})
    resp = conn.getresponse()
    buf = bytearray(PIECE)
    view = memoryview(buf)
    total = 0
    digest = hashlib.sha256()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = resp.readinto(view)
        if not n:
            break
        total += n
        if total <= 4 * PIECE:
            digest.update(view[:n])
    conn.close()
    return resp.status, total, digest.hexdigest()


def _upload(url: str, token: str, size: int, timeout: float = 120) -> tuple[int, dict]:
    block = bytes(range(256)) * (PIECE // 256)

    def pieces():
        sent = 0
        while sent < size:
            k = min(PIECE, size - sent)
            yield block[:k]
            sent += k

    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    conn.request(
        "POST",
        u.path,
        body=pieces(),
        headers={"X-Proxy-Token": token, "Content-Length": str(size)},
    )
    resp = conn.getresponse()
    body = json.loads(resp.read())
    conn.close()
    return resp.status, body


@pytest.mark.parametrize("kind", ["bytes", "chunked"])
async def test_1gib_download_streams(server, token, backend_port, kind):
    url = f"{server}lims/proxy/{backend_port}/{kind}?n={GIB}"
    # warm up: pool, buffers and code paths allocated before the baseline
    await asyncio.to_thread(
        _download, f"{server}lims/proxy/{backend_port}/{kind}?n={8 * MIB}", token
    )
    with PeakRSS() as rss:
        status, total, _ = await asyncio.to_thread(_download, url, token)
    assert status == 200
    assert total == GIB
    assert rss.growth < RSS_LIMIT, f"RSS grew {rss.growth / MIB:.1f} MiB"


async def test_256mib_upload_streams(server, token, backend_port):
    size = 256 * MIB
    url = f"{server}lims/proxy/{backend_port}/upload"
    await asyncio.to_thread(_upload, url, token, 8 * MIB)
    with PeakRSS() as rss:
        status, body = await asyncio.to_thread(_upload, url, token, size)
    assert status == 200
    assert body["received"] == size
    block = bytes(range(256)) * (PIECE // 256)
    expected = hashlib.sha256()
    for _ in range(size // PIECE):
        expected.update(block)
    assert body["sha256"] == expected.hexdigest()
    assert rss.growth < RSS_LIMIT, f"RSS grew {rss.growth / MIB:.1f} MiB"
