"""Browser tests: a real ``jupyter lab`` with the bridge, a real backend, Debian Chromium.

Run them in their own pytest invocation (``pytest tests/ui``): the sync
Playwright API must not share a process with pytest-jupyter's event loop.

The server is a subprocess on 127.0.0.1 with a random port, a temporary root
dir, a known token, a JupyterHub-like base URL (``/user/alice/``) and the
bridge configured through ``LIMS_BRIDGE_*`` variables only, as a spawner would.
It loads the labextension built in this checkout (``jupyter_lims_bridge/labextension``,
made by ``make install``), not whatever copy an installed wheel left in the
environment. A small threaded HTTP server plays the user's service on the
one allowed port.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from jupyter_lims_bridge import signing
from tests.support.browser import CHROMIUM_ARGS
from tests.support.lims_standin import LimsStandIn

ROOT = Path(__file__).resolve().parents[2]
BUILT = ROOT / "jupyter_lims_bridge" / "labextension"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("LIMS_BRIDGE_CHROMIUM", "/usr/bin/chromium")
OWNER = "alice"
BASE_PATH = f"/user/{OWNER}/"
PANEL_ID = "jp-lims-bridge-panel"
BACKEND_BODY = b"hello from the instrument simulator\n"


@pytest.fixture(autouse=True)
def jp_asyncio_loop() -> Iterator[None]:
    """No event loop here: pytest-jupyter's (autouse, from tests/conftest.py) would
    be running while sync Playwright starts its own, and closing it then fails."""
    yield


@pytest.fixture(autouse=True)
def jp_server_cleanup() -> Iterator[None]:
    """No in-process Jupyter server to clean up: the browser tests use a subprocess."""
    yield


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Backend(http.server.BaseHTTPRequestHandler):
    """The user's service: answers every GET with a fixed body."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BACKEND_BODY)))
        self.end_headers()
        self.wfile.write(BACKEND_BODY)

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Lab:
    url: str  # the server's base URL, ending in "/"
    token: str
    backend_port: int
    private_key: Any
    root_dir: Path

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Call the server as its owner (Jupyter token), e.g. to set up state."""
        headers = {"Authorization": f"token {self.token}", **kwargs.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=10, **kwargs)

    def proxy_url(self, port: int | None = None) -> str:
        return f"{self.url}lims/proxy/{port or self.backend_port}/"


@pytest.fixture(scope="session")
def backend() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def lims_standin() -> Iterator[LimsStandIn]:
    """The LIMS that receives Save to ELN uploads (tests/support/lims_standin.py)."""
    server = LimsStandIn().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def lab(tmp_path_factory, backend, lims_standin) -> Iterator[Lab]:
    settings = {"LIMS_BRIDGE_RETURN_URL_PREFIXES": lims_standin.prefix}
    with running_lab(tmp_path_factory.mktemp("lab"), backend, settings) as server:
        yield server


@contextlib.contextmanager
def running_lab(
    tmp: Path,
    backend: int,
    bridge_env: dict[str, str] | None = None,
    server_config: dict[str, Any] | None = None,
) -> Iterator[Lab]:
    """``jupyter lab`` with the bridge in ``tmp``; ``bridge_env`` adds ``LIMS_BRIDGE_*`` settings,
    ``server_config`` other configuration (e.g. ``{"ServerProxy": {"servers": …}}``) as
    ``jupyter_server_config.json`` in the server's config directory."""
    if not (BUILT / "package.json").exists():
        pytest.fail(f"the labextension is not built ({BUILT}): run `make install`")
    if server_config:
        (tmp / "config").mkdir()
        (tmp / "config" / "jupyter_server_config.json").write_text(json.dumps(server_config))
    root_dir = tmp / "root"
    root_dir.mkdir()
    # the built extension under its package name, ahead of any installed copy
    extensions = tmp / "labextensions"
    extensions.mkdir()
    (extensions / "jupyter-lims-bridge").symlink_to(BUILT, target_is_directory=True)
    app_settings = tmp / "app-settings"
    app_settings.mkdir()
    (app_settings / "overrides.json").write_text(
        json.dumps(
            {
                "@jupyterlab/apputils-extension:notification": {
                    "fetchNews": "false",
                    "checkForUpdates": False,
                }
            }
        )
    )
    private_pem, public_pem = signing.generate_key_pair()
    port = _free_port()
    token = secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),
        "JUPYTER_DATA_DIR": str(tmp / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp / "user-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"),
        "LIMS_BRIDGE_OWNER": OWNER,
        "LIMS_BRIDGE_PUBLIC_KEYS": json.dumps([public_pem.decode()]),
        "LIMS_BRIDGE_ALLOWED_PORTS": str(backend),
        "LIMS_BRIDGE_DATA_URL_PREFIXES": f"http://127.0.0.1:{backend}/files/",
        "LIMS_BRIDGE_WAIT_FOR_DATA": "false",
        "LIMS_BRIDGE_STATE_DIR": str(tmp / "state"),
        **(bridge_env or {}),
    }
    env.pop("JUPYTERHUB_USER", None)
    log = open(tmp / "jupyter.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.base_url={BASE_PATH}",
            f"--IdentityProvider.token={token}",
            "--ServerApp.allow_root=True",
            f"--ServerApp.root_dir={root_dir}",
            '--ServerApp.jpserver_extensions={"jupyter_lims_bridge": True}',
            f"--LabApp.extra_labextensions_path={extensions}",
            f"--LabApp.app_settings_dir={app_settings}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}{BASE_PATH}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    "jupyter lab exited:\n" + (tmp / "jupyter.log").read_text()[-3000:]
                )
            try:
                if requests.get(url + "api/status", params={"token": token}, timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    "jupyter lab did not start:\n" + (tmp / "jupyter.log").read_text()[-3000:]
                )
            time.sleep(0.3)
        yield Lab(url, token, backend, signing.load_private_key(private_pem), root_dir)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (make chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, lab) -> Iterator[Any]:
    """A fresh browser context logged in to the server (cookie), 1280x800."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(20_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    page.on(
        "console",
        lambda message: errors.append(message.text) if message.type == "error" else None,
    )
    # ?token= logs in (sets the cookie); ?reset starts from the default layout
    page.goto(f"{lab.url}lab?token={lab.token}&reset")
    yield page
    context.close()
    # the extension itself logs nothing as an error (tests that make the server
    # fail on purpose see the browser report those failed requests, not our code)
    ours = [e for e in errors if "lims" in e.lower() and "Failed to load resource" not in e]
    assert not ours, ours


@pytest.fixture
def reset_proxy_mode(lab) -> Iterator[None]:
    """Put the proxy mode back to ``token`` after a test that changes it."""
    yield
    lab.api("PUT", "lims/api/proxy", data=json.dumps({"mode": "token"}))


def require_route(lab: Lab, path: str, what: str) -> None:
    """Skip when a route of another capability is not on this server yet."""
    response = lab.api("GET", path)
    if response.status_code == 404:
        pytest.skip(f"{what} ({path}) is not implemented on this server yet")


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path
