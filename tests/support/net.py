"""Ports on 127.0.0.1 for the services tests start, the proxy test backend's
process, and one HTTP response read off a raw connection."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROXY_BACKEND = Path(__file__).with_name("proxy_backend.py")


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def proxy_backend(port: int) -> Iterator[subprocess.Popen]:
    """``proxy_backend.py`` listening on ``port`` until the block ends."""
    proc = subprocess.Popen(
        [sys.executable, str(PROXY_BACKEND), str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


async def read_response(reader) -> tuple[int, dict[str, str], bytes]:
    """One whole response (Content-Length or chunked) from ``reader``."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)).strip(), 16)
            body += await asyncio.wait_for(reader.readexactly(size + 2), 10)
            body = body[:-2]
            if size == 0:  # (no trailers: the CRLF read was the end)
                return status, headers, body
    length = int(headers.get("content-length", 0))
    return status, headers, await asyncio.wait_for(reader.readexactly(length), 10)
