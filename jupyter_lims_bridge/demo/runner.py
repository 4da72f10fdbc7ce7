"""Start, watch and stop the demo's processes and servers.

Why the demo ELN's links carry JupyterLab's login token: the demo shows the
bridge's trust model - the ELN signs, Jupyter verifies with a public key - and
a click on a link in the ELN must land in the notebook at once. In production
JupyterHub logs the user in (LimsAuthenticator, with the link's own signed
token); the demo has no hub, so its ELN adds JupyterLab's token to its links
(``&token=``), which logs the browser in on the first click. JupyterLab keeps a
real login so that what a proxy token is for can be seen: a client without one
is refused by ``lims/proxy/<port>/`` while the signed-in browser passes. What
that exposes is limited: the servers listen on 127.0.0.1 only, the ELN page
(which shows the token) is served only there, the root is a throw-away
directory, everything stops with the demo, and the banner says that anyone on
this machine who reads the ELN page can use JupyterLab meanwhile. Never let a
real ELN carry a Jupyter token.

The ELN's tokens carry a ``return`` claim (its own attachments endpoint, a
grant made afresh for each run) and JupyterLab allows uploads there
(``LIMS_BRIDGE_RETURN_URL_PREFIXES``): "Save to ELN" lands back in the demo ELN,
which keeps the uploads in the temporary directory.

JupyterLab also allows the demo ELN to frame it (``embed_origins``), reached as
``localhost`` from the ELN on ``127.0.0.1``: another site, as a real ELN is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import webbrowser
from pathlib import Path

from tornado import httpclient, httpserver, netutil

from .. import signing
from . import DEFAULT_ELN_PORT, DEFAULT_SERVICE_PORT
from .apps import ElnContext, make_eln_app, make_instrument_app

HERE = Path(__file__).parent
HOST = "127.0.0.1"
STOP_TIMEOUT = 10.0
LAB_SETTINGS = {
    # no news or update toast over the notebook the demo opens
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def bind(port: int | None, default: int) -> list[socket.socket]:
    """Sockets on ``port``; ``None`` tries ``default`` then any free port."""
    if port is None:
        try:
            return netutil.bind_sockets(default, HOST)
        except OSError:
            port = 0
    return netutil.bind_sockets(port, HOST)


def make_files(root: Path) -> dict[str, Path]:
    """The demo's directories: keys, a data store, the server root, state, settings."""
    paths = {
        name: root / name
        for name in (
            "keys",
            "archive",
            "notebooks",
            "state",
            "jupyter",
            "lab-settings",
            "eln-attachments",
        )
    }
    for path in paths.values():
        path.mkdir(mode=0o700)
    private_pem, public_pem = signing.generate_key_pair()
    fd = os.open(paths["keys"] / "eln-private.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    (paths["keys"] / "eln-public.pem").write_bytes(public_pem)

    raw = paths["archive"] / "S-1" / "raw"
    raw.mkdir(parents=True)
    for run in (1, 2):
        rows = "".join(
            f"{row}{col},{0.1 * run + 0.01 * col + 0.05 * 'ABCDEFGH'.index(row):.3f}\n"
            for row in "ABCDEFGH"
            for col in range(1, 13)
        )
        (raw / f"run{run}.csv").write_text("well,od600\n" + rows)
    (raw / "README.txt").write_text(
        "Plate-reader runs of sample S-1 (buffer screen 1), OD600, 96 wells.\n"
    )
    (paths["archive"] / "S-2").mkdir()
    (paths["archive"] / "S-2" / "notes.txt").write_text("Protein prep 7: 2.1 mg/ml.\n")

    for rel, value in LAB_SETTINGS.items():
        path = paths["lab-settings"] / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    return paths


def lab_command(port: int, root_dir: Path, login: str) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--ServerApp.ip={HOST}",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root_dir}",
        # a real login (a token): see the module docstring
        f"--IdentityProvider.token={login}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--ServerApp.allow_root=True")
    return command


def lab_environment(
    paths: dict[str, Path], *, owner: str, eln_url: str, service_port: int, return_prefix: str
) -> dict[str, str]:
    """The bridge's settings, as a spawner would pass them (environment only)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LIMS_BRIDGE_", "JUPYTERHUB_", "JUPYTER_", "JUPYTERLAB_"))
    }
    env.update(
        {
            # the bridge, configured as a spawner would: environment only
            "LIMS_BRIDGE_OWNER": owner,
            "LIMS_BRIDGE_PUBLIC_KEYS": json.dumps([str(paths["keys"] / "eln-public.pem")]),
            "LIMS_BRIDGE_ISSUERS": json.dumps([eln_url.rstrip("/")]),
            "LIMS_BRIDGE_DATA_MOUNTS": json.dumps({"archive": str(paths["archive"])}),
            "LIMS_BRIDGE_DATA_URL_PREFIXES": json.dumps([eln_url + "files/"]),
            "LIMS_BRIDGE_ALLOWED_PORTS": str(service_port),
            "LIMS_BRIDGE_TEMPLATES_DIR": str(HERE / "templates"),
            "LIMS_BRIDGE_STATE_DIR": str(paths["state"]),
            # the demo ELN may show JupyterLab inside its pages
            "LIMS_BRIDGE_EMBED_ORIGINS": eln_url.rstrip("/"),
            # "Save to ELN" may upload to the demo ELN's attachments endpoints
            "LIMS_BRIDGE_RETURN_URL_PREFIXES": json.dumps([return_prefix]),
            # keep the demo out of the user's own Jupyter config, data and settings
            "JUPYTER_CONFIG_DIR": str(paths["jupyter"] / "config"),
            "JUPYTER_DATA_DIR": str(paths["jupyter"] / "data"),
            "JUPYTER_RUNTIME_DIR": str(paths["jupyter"] / "runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(paths["lab-settings"]),
            "JUPYTERLAB_WORKSPACES_DIR": str(paths["jupyter"] / "workspaces"),
        }
    )
    return env


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = Path(tempfile.mkdtemp(prefix="lims-bridge-demo-"))
        self.lab: subprocess.Popen[bytes] | None = None
        self.servers: list[httpserver.HTTPServer] = []
        self.stop_requested = asyncio.Event()

    # -- start ------------------------------------------------------------------

    async def start(self) -> str:
        args = self.args
        paths = make_files(self.root)
        owner = getpass.getuser()
        eln_sockets = bind(args.port, DEFAULT_ELN_PORT)
        service_sockets = bind(args.service_port, DEFAULT_SERVICE_PORT)
        eln_port = eln_sockets[0].getsockname()[1]
        service_port = service_sockets[0].getsockname()[1]
        lab_port = args.lab_port or free_port()
        eln_url = f"http://{HOST}:{eln_port}/"
        self.lab_url = f"http://{HOST}:{lab_port}/"
        self.instrument_url = f"http://{HOST}:{service_port}"
        self.lab_login = secrets.token_urlsafe(24)

        context = self.context = ElnContext(
            private_key=signing.load_private_key(paths["keys"] / "eln-private.pem"),
            eln_url=eln_url,
            lab_url=self.lab_url,
            owner=owner,
            instrument_url=self.instrument_url,
            proxy_port=service_port,
            lab_login=self.lab_login,
            # another site than the ELN on 127.0.0.1 (same server)
            embed_lab_url=f"http://localhost:{lab_port}/",
            # the bearer grant of "Save to ELN", in the tokens' return claim
            return_grant=secrets.token_urlsafe(24),
        )
        for app, sockets in (
            (make_instrument_app(), service_sockets),
            (make_eln_app(context, paths["eln-attachments"]), eln_sockets),
        ):
            server = httpserver.HTTPServer(app)
            server.add_sockets(sockets)
            self.servers.append(server)

        self.lab_log = self.root / "jupyterlab.log"
        with open(self.lab_log, "wb") as log:
            self.lab = subprocess.Popen(
                lab_command(lab_port, paths["notebooks"], self.lab_login),
                cwd=paths["notebooks"],
                env=lab_environment(
                    paths,
                    owner=owner,
                    eln_url=eln_url,
                    service_port=service_port,
                    return_prefix=context.return_prefix,
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # its own session: Ctrl-C in the terminal reaches only us, and we
                # stop JupyterLab (and its kernels) in order
                start_new_session=True,
            )
        await self.wait_for_lab()
        context.proxy_token = await self.make_proxy_token(service_port)
        return eln_url

    async def make_proxy_token(self, port: int) -> str:
        """What the scientist would do in the LIMS panel: a proxy token for the
        instrument's port, for clients that are not their browser."""
        response = await httpclient.AsyncHTTPClient().fetch(
            self.lab_url + "lims/api/tokens",
            method="POST",
            headers={"Authorization": f"token {self.lab_login}"},
            body=json.dumps({"name": "instrument PC (demo)", "ports": [port]}),
            raise_error=False,
            request_timeout=10,
        )
        if response.code != 201:
            raise DemoError(f"JupyterLab refused to make a proxy token ({response.code})")
        return json.loads(response.body)["token"]

    async def wait_for_lab(self) -> None:
        client = httpclient.AsyncHTTPClient()
        deadline = time.monotonic() + self.args.startup_timeout
        while True:
            assert self.lab is not None
            if self.lab.poll() is not None:
                raise DemoError(f"JupyterLab exited with status {self.lab.returncode}")
            if self.stop_requested.is_set():
                raise DemoError("stopped while JupyterLab was starting")
            try:
                response = await client.fetch(
                    self.lab_url + "lims/api/status",
                    headers={"Authorization": f"token {self.lab_login}"},
                    raise_error=False,
                    request_timeout=5,
                )
            except OSError:
                response = None
            if response is not None and response.code == 200:
                return
            if response is not None and response.code == 404:
                raise DemoError("JupyterLab started without the jupyter-lims-bridge extension")
            if time.monotonic() > deadline:
                raise DemoError(f"JupyterLab did not start in {self.args.startup_timeout:.0f} s")
            await asyncio.sleep(0.3)

    def banner(self, eln_url: str) -> str:
        proxy_port = self.instrument_url.rsplit(":", 1)[1]
        return f"""
jupyter-lims-bridge demo is running.

    Open this URL:  {eln_url}

  The demo ELN above lists a few entries; "Open in Jupyter" follows a link the
  ELN signed just now, and JupyterLab opens a notebook made for that entry.

  JupyterLab            {self.lab_url}lab?token={self.lab_login}
  JupyterLab embedded   {eln_url}entries/S-1/embedded  (JupyterLab as localhost: another site)
  instrument simulator  {self.instrument_url}/  (allowed port: {self.lab_url}lims/proxy/{proxy_port}/)
  files, keys and logs  {self.root}{"" if self.args.keep else "  (deleted on exit)"}

  Save to ELN: a notebook opened from an entry has a "Save to ELN" button; the
  upload lands back in the demo ELN, whose entry lists each version (reload it).

  The proxy: a client without a token is refused, your signed-in browser and a
  client with a proxy token pass (the ELN page shows both, tried live).

  WARNING: the demo ELN's links carry JupyterLab's login token so that they work
  in one click. Both listen on 127.0.0.1 only, but any user or program on this
  machine that reads the ELN page can use JupyterLab (and run code as you) while
  the demo runs. Never let an ELN carry a Jupyter token outside a demo: in
  production JupyterHub logs users in.

Press Ctrl-C to stop.
"""

    # -- run and stop ---------------------------------------------------------------

    async def wait(self) -> int:
        """Until a stop signal (0) or JupyterLab's unexpected exit (1)."""
        while not self.stop_requested.is_set():
            if self.lab is not None and self.lab.poll() is not None:
                print(
                    f"JupyterLab exited unexpectedly with status {self.lab.returncode}.",
                    file=sys.stderr,
                )
                return 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop_requested.wait(), 0.5)
        return 0

    def stop_lab(self) -> None:
        lab = self.lab
        if lab is None:
            return
        if lab.poll() is None:
            # SIGTERM: Jupyter shuts its kernels down and exits
            with contextlib.suppress(ProcessLookupError):
                lab.send_signal(signal.SIGTERM)
            try:
                lab.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        # anything left in its session (a kernel, a terminal) goes too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(lab.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            lab.wait(5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.lab_log.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, AttributeError):
            return ""

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        self.stop_lab()
        if self.args.keep:
            print(f"Kept {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)


class DemoError(Exception):
    pass


async def _main(args: argparse.Namespace) -> int:
    demo = Demo(args)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, demo.stop_requested.set)
    try:
        try:
            eln_url = await demo.start()
        except DemoError as e:
            print(f"jupyter lims-bridge demo: {e}", file=sys.stderr)
            tail = demo.log_tail()
            if tail:
                print("--- JupyterLab's log ---\n" + tail, file=sys.stderr)
            return 0 if demo.stop_requested.is_set() else 1
        print(demo.banner(eln_url), flush=True)
        if args.open_browser:
            webbrowser.open(eln_url)
        status = await demo.wait()
        if status:
            print("--- JupyterLab's log ---\n" + demo.log_tail(), file=sys.stderr)
        print("Stopping the demo…", flush=True)
        return status
    finally:
        demo.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run_demo(args: argparse.Namespace) -> int:
    return asyncio.run(_main(args))
