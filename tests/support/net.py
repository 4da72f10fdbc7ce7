"""Ports on 127.0.0.1 for the services tests start, and the proxy test backend's process."""

from __future__ import annotations

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
