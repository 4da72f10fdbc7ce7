"""A ``jupyter server`` subprocess with the bridge, configured through
``LIMS_BRIDGE_*`` variables as a spawner would: for tests that need a real
process (a browser in front of it, or a SIGKILL)."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests


# A module that talks to subprocesses only imports these two by name: they
# switch off pytest-jupyter's event loop and server cleanup for it (sync
# Playwright, for one, runs its own loop).
@pytest.fixture(autouse=True)
def jp_asyncio_loop() -> Iterator[None]:
    yield


@pytest.fixture(autouse=True)
def jp_server_cleanup() -> Iterator[None]:
    yield


@dataclass
class JupyterProcess:
    process: subprocess.Popen
    url: str  # http://127.0.0.1:<port><base_url>
    login: str  # the server's Jupyter token
    root: Path

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"token {self.login}", **kwargs.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=10, **kwargs)


@contextmanager
def jupyter_process(
    tmp_path: Path,
    *,
    owner: str,
    public_key: str,
    data_url_prefixes: list[str],
    base_url: str = "/",
    env: dict[str, str] | None = None,
) -> Iterator[JupyterProcess]:
    """Start the server (state and workspace under ``tmp_path``, reused by a
    second start in the same ``tmp_path``), wait until it answers, stop it after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    login = secrets.token_hex(16)
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    config = tmp_path / "config"
    config.mkdir(exist_ok=True)
    (config / "jupyter_server_config.py").write_text(
        "c.ServerApp.jpserver_extensions = {'jupyter_lims_bridge': True}\n"
    )
    full_env = {
        **os.environ,
        "LIMS_BRIDGE_OWNER": owner,
        "LIMS_BRIDGE_PUBLIC_KEYS": json.dumps([public_key]),
        "LIMS_BRIDGE_DATA_URL_PREFIXES": json.dumps(data_url_prefixes),
        "LIMS_BRIDGE_STATE_DIR": str(tmp_path / "state"),
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        **(env or {}),
    }
    log = tmp_path / "server.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter_server",
            "--no-browser",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--ServerApp.token={login}",
            "--ServerApp.allow_root=True",
            f"--ServerApp.base_url={base_url}",
            f"--ServerApp.root_dir={root}",
        ],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("a"),
    )
    server = JupyterProcess(process, f"http://127.0.0.1:{port}{base_url}", login, root)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                server.api("GET", "api/status")
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(log.read_text()[-2000:]) from None
                time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
