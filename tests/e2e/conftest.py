"""A real JupyterHub + configurable-http-proxy on loopback, for end-to-end tests.

The session-scoped ``hub`` fixture starts ``jupyterhub`` (which starts
``configurable-http-proxy``) in a temporary directory with random ports, a
sqlite database, ``SharedPasswordAuthenticator`` and ``SimpleLocalProcessSpawner``
(each user's home under the temporary directory). Each user's single-user server
runs ``jupyterhub-singleuser`` from this venv with the bridge configured through
``LIMS_BRIDGE_*`` environment variables, as a spawner would do it in production.

API for tests (see :class:`Hub`)::

    hub.url                      # "http://127.0.0.1:<port>/", the proxy's public URL
    hub.user_url("alice")        # "http://127.0.0.1:<port>/user/alice/"
    hub.user_redirect_url        # "http://127.0.0.1:<port>/hub/user-redirect/"
    hub.home("alice")            # Path of alice's home (= her server's root dir)
    hub.private_key, hub.public_key   # the LIMS key pair (key object, PEM text)
    hub.deep_link("alice", entity=...)    # a signed /hub/user-redirect/lims/open?lims_token=…
    hub.token("alice", entity=...)        # just the signed open token
    s = hub.login("alice")       # requests.Session logged in through the hub's login form
    hub.spawn("alice")           # log in if needed, start the server, wait until ready
    s = hub.user_session("alice")     # spawned + OAuth done + X-XSRFToken set: for
                                      # alice's own APIs, e.g. POST user_url + "lims/api/tokens"
    hub.allowed_ports            # range(18050, 18061): LIMS_BRIDGE_ALLOWED_PORTS of every server
    hub.mount_dir                # the "archive" data mount (LIMS_BRIDGE_DATA_MOUNTS)
    hub.files_dir, hub.files_url # a LIMS file server: files put in files_dir are served
                                 # under files_url (LIMS_BRIDGE_DATA_URL_PREFIXES)
    hub.stop("alice")            # stop the server (e.g. to respawn with other env)
    hub.set_env({"LIMS_BRIDGE_PROXY_MODE": "open"}, user="alice")  # env of later spawns
    hub.api("GET", "users/alice")   # hub REST API with an admin service token
    hub.browser_login(page, "alice")  # log a Playwright page in through the form

``lims_hub`` is a second hub, configured by ``deploy/hub_config.py`` (the z2jh
``hub.extraConfig``): ``LimsAuthenticator`` and ``LimsSpawnHook`` asking
``lims_stand_in`` (a LIMS mounts API on 127.0.0.1; ``answers[name]``, ``requests``,
``down()``/``up()``). Its servers get no ``LIMS_BRIDGE_DATA_MOUNTS`` but the hook's.
``lims_page`` is ``page`` for it, and::

    session, response = lims_hub.lims_login(token)   # the launch page's POST, no browser
    lims_hub.server_env("alice")                      # the env her server process got

``hub`` starts only when a test asks for it; tests that need a browser ask for
``browser`` (one headless Debian Chromium per test module) and get pages from
``page`` (a fresh context per test; on failure its screenshot and console log
go to ``test-artifacts/``). ``hub.extension_errors()`` returns the bridge's
load errors from the servers' logs (``hub.spawn`` fails fast on them). When configurable-http-proxy or chromium
is missing the tests are skipped with the reason, except under ``make test``
(which installs both), where a missing tool is an error.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from jupyter_lims_bridge import signing
from tests.support.browser import CHROMIUM_ARGS
from tests.support.net import free_port

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ARTIFACTS = REPO / "test-artifacts"
#: Ports the single-user servers allow through ``lims/proxy/<port>/`` by default
#: (``hub.allowed_ports``): start a test backend on one of them.
ALLOWED_PORTS = range(18050, 18061)
START_TIMEOUT = 30.0
SPAWN_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


def _missing(tool: str, hint: str) -> None:
    """Skip, or fail when running under ``make`` (which installs every tool)."""
    message = f"{tool} not found ({hint}); run `make chp chromium` or `make test`"
    if os.environ.get("MAKELEVEL"):
        pytest.fail(message + " - under make it must be installed", pytrace=False)
    pytest.skip(message)


def find_chp() -> str | None:
    local = REPO / "build" / "tools" / "node_modules" / ".bin" / "configurable-http-proxy"
    if local.exists():
        return str(local)
    return shutil.which("configurable-http-proxy")


def find_chromium() -> str | None:
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return shutil.which("chromium")


DEPLOY_HUB_CONFIG = REPO / "deploy" / "hub_config.py"
ELN_URL = "https://eln.example.org/"


HUB_CONFIG = r'''
import json
from pathlib import Path

c = get_config()  # noqa
ROOT = Path({root!r})

c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.pid_file = str(ROOT / "proxy.pid")
c.JupyterHub.db_url = "sqlite:///" + str(ROOT / "jupyterhub.sqlite")
c.JupyterHub.cookie_secret_file = str(ROOT / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(ROOT / "jupyterhub.pid")
c.JupyterHub.cleanup_servers = True

c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = {password!r}
c.Authenticator.allow_all = True

c.JupyterHub.services = [{{"name": "e2e", "api_token": {api_token!r}}}]
c.JupyterHub.load_roles = [{{"name": "admin", "services": ["e2e"]}}]

c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = str(ROOT / "home" / "{{username}}")
c.Spawner.cmd = [{singleuser!r}]
c.Spawner.args = ["--ServerApp.allow_root=True"]
c.Spawner.start_timeout = {spawn_timeout}
c.Spawner.http_timeout = {spawn_timeout}
c.Spawner.default_url = "/lab"

# JupyterLab: no news/update toast over the page under test
LAB_SETTINGS = {{
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {{"fetchNews": "false", "checkForUpdates": False}},
}}


def pre_spawn_hook(spawner):
    """Environment of the single-user server: the file env.json, read at each spawn."""
    env_file = ROOT / "env.json"
    env = json.loads(env_file.read_text()) if env_file.exists() else {{}}
    spawner.environment.update(env.get("*", {{}}))
    spawner.environment.update(env.get(spawner.user.name, {{}}))
    settings = Path(spawner.home_dir) / ".jupyter" / "lab" / "user-settings"
    for rel, value in LAB_SETTINGS.items():
        path = settings / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text(json.dumps(value))


c.Spawner.pre_spawn_hook = pre_spawn_hook
'''


# Appended for a hub with a LIMS stand-in: the deployment's own hub configuration,
# loaded as z2jh loads hub.extraConfig (exec in this file's namespace, `c` in it).
# The harness keeps its own pre-spawn work (env.json, JupyterLab settings) and lets
# tests switch LimsSpawnHook.on_error through lims.json, then runs the deploy's hook.
LIMS_HUB_CONFIG = r"""

DEPLOY_CONFIG = {deploy_config!r}
exec(compile(Path(DEPLOY_CONFIG).read_text(), DEPLOY_CONFIG, "exec"))

from jupyter_lims_bridge.hub import LimsSpawnHook

_lims_hook = c.Spawner.pre_spawn_hook
assert isinstance(_lims_hook, LimsSpawnHook), "deploy/hub_config.py installed no LimsSpawnHook"


async def lims_pre_spawn_hook(spawner):
    pre_spawn_hook(spawner)
    control = ROOT / "lims.json"
    if control.exists():
        _lims_hook.on_error = json.loads(control.read_text()).get("on_error", "fail")
    return await _lims_hook(spawner)


c.Spawner.pre_spawn_hook = lims_pre_spawn_hook
"""


class LimsStandIn:
    """The LIMS's mounts API on 127.0.0.1: ``GET /api/jupyter/users/<name>/mounts``
    answers ``answers[name]`` (default: no mounts) to the hub's service token, and
    records who asked. ``down()`` closes its port (connection refused), ``up()``
    opens it again on the same port."""

    service_token = "e2e-lims-service-token"

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}
        self.requests: list[dict[str, Any]] = []
        self.port = free_port()
        self.mounts_url = f"http://127.0.0.1:{self.port}/api/jupyter/users/{{username}}/mounts"
        self._server: ThreadingHTTPServer | None = None

    def _handler(self) -> type:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                auth = self.headers.get("Authorization")
                _prefix, _, rest = self.path.partition("/api/jupyter/users/")
                name = urllib.parse.unquote(rest.rsplit("/mounts", 1)[0])
                stand_in.requests.append(
                    {
                        "path": self.path,
                        "user": name,
                        "authorized": auth == f"Bearer {stand_in.service_token}",
                    }
                )
                if auth != f"Bearer {stand_in.service_token}":
                    status, body = 401, {"error": "unauthorized"}
                else:
                    status, body = 200, stand_in.answers.get(name, {"mounts": []})
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def up(self) -> None:
        if self._server is None:
            self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
            self._server.daemon_threads = True
            threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _QuietFileServer(ThreadingHTTPServer):
    """Serves ``directory`` on a free loopback port, without access log lines."""

    daemon_threads = True

    def __init__(self, directory: Path) -> None:
        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(directory), **kwargs)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


class Hub:
    """A running JupyterHub; see the module docstring for the API."""

    password = "e2e-shared-password"

    def __init__(self, root: Path, chp: str, lims: LimsStandIn | None = None) -> None:
        self.root = root
        self.chp = chp
        #: with a LIMS stand-in the hub runs deploy/hub_config.py (LimsAuthenticator +
        #: LimsSpawnHook asking the stand-in); without one, the shared password
        self.lims = lims
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.user_redirect_url = self.url + "hub/user-redirect/"
        self.api_url = self.url + "hub/api/"
        self.api_token = secrets.token_hex(32)
        private_pem, public_pem = signing.generate_key_pair()
        self.private_key = signing.load_private_key(private_pem)
        self.public_key = public_pem.decode()
        self.mount_dir = root / "mnt" / "archive"
        self.allowed_ports = ALLOWED_PORTS
        # a LIMS file server for data items with a "url" (LIMS_BRIDGE_DATA_URL_PREFIXES)
        self.files_dir = root / "lims-files"
        self.files_dir.mkdir()
        self._files = _QuietFileServer(self.files_dir)
        self.files_url = f"http://127.0.0.1:{self._files.server_port}/"
        self._sessions: dict[str, requests.Session] = {}
        self._env: dict[str, dict[str, str]] = {
            "*": {
                "LIMS_BRIDGE_PUBLIC_KEYS": json.dumps([self.public_key]),
                "LIMS_BRIDGE_ALLOWED_PORTS": f"{ALLOWED_PORTS[0]}-{ALLOWED_PORTS[-1]}",
                "LIMS_BRIDGE_DATA_MOUNTS": json.dumps({"archive": str(self.mount_dir)}),
                "LIMS_BRIDGE_DATA_URL_PREFIXES": json.dumps([self.files_url]),
            }
        }
        if lims is not None:
            # the LIMS (through LimsSpawnHook) decides the mounts of these servers
            del self._env["*"]["LIMS_BRIDGE_DATA_MOUNTS"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / "jupyterhub.log"

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        threading.Thread(target=self._files.serve_forever, daemon=True).start()
        (self.mount_dir / "2026" / "S-42" / "raw").mkdir(parents=True)
        (self.mount_dir / "2026" / "S-42" / "raw" / "run1.csv").write_text("a,b\n1,2\n")
        self._write_env()
        config = self.root / "jupyterhub_config.py"
        text = HUB_CONFIG.format(
            root=str(self.root),
            port=self.port,
            hub_port=free_port(),
            proxy_api_port=free_port(),
            chp=self.chp,
            password=self.password,
            api_token=self.api_token,
            singleuser=str(VENV_BIN / "jupyterhub-singleuser"),
            spawn_timeout=int(SPAWN_TIMEOUT),
        )
        if self.lims is not None:
            text += LIMS_HUB_CONFIG.format(deploy_config=str(DEPLOY_HUB_CONFIG))
        config.write_text(text)
        env = dict(os.environ)
        env["PATH"] = (
            f"{VENV_BIN}{os.pathsep}{Path(self.chp).parent}{os.pathsep}{env.get('PATH', '')}"
        )
        # the hub's own configuration must not leak in from the developer's machine
        for name in list(env):
            if name.startswith(("JUPYTERHUB_", "LIMS_BRIDGE_", "LIMS_HUB_", "JUPYTER_")):
                del env[name]
        if self.lims is not None:
            # what hub.extraEnv gives the hub in deploy/values.yaml
            env.update(
                {
                    "LIMS_BRIDGE_PUBLIC_KEYS": self.public_key,
                    "LIMS_HUB_ELN_URL": ELN_URL,
                    "LIMS_HUB_MOUNTS_URL": self.lims.mounts_url,
                    "LIMS_HUB_SERVICE_TOKEN": self.lims.service_token,
                    "LIMS_HUB_MOUNTS_ON_ERROR": "fail",
                }
            )
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "jupyterhub"), "-f", str(config)],
                cwd=self.root,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"jupyterhub exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                if requests.get(self.api_url, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"jupyterhub did not answer in {START_TIMEOUT} s:\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def _server_pids(self) -> list[int]:
        """Pids of the proxy and the single-user servers (from its pid file and the
        hub's database): each runs in its own session, so killing the hub's
        process group misses them."""
        pids = []
        with contextlib.suppress(OSError, ValueError):
            pids.append(int((self.root / "proxy.pid").read_text().strip()))
        try:
            with contextlib.closing(sqlite3.connect(self.root / "jupyterhub.sqlite")) as db:
                rows = db.execute("SELECT state FROM spawners").fetchall()
        except sqlite3.Error:
            rows = []
        for (state,) in rows:
            with contextlib.suppress(TypeError, ValueError):
                pid = json.loads(state or "{}").get("pid")
                if isinstance(pid, int) and pid > 0:
                    pids.append(pid)
        return pids

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()
        self._files.shutdown()
        if self.proc is None:
            return
        server_pids = self._server_pids()
        if self.proc.poll() is None:
            # SIGTERM: the hub stops the single-user servers and the proxy itself
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        # whatever of the session is left (a proxy, a server, a kernel) goes too
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        # what the hub could not stop (a server's kernels are in its session)
        for pid in server_pids:
            if self._is_ours(pid):
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)

    def _is_ours(self, pid: int) -> bool:
        """Whether ``pid`` is still this hub's proxy or one of its servers (not a reused pid)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            return False
        if any(arg.endswith(b"configurable-http-proxy") for arg in cmdline):
            return str(self.port).encode() in cmdline
        return any(arg.endswith(b"jupyterhub-singleuser") for arg in cmdline) and cwd.startswith(
            str(self.root)
        )

    def extension_errors(self) -> str:
        """The bridge's load errors in the single-user servers' logs (they go to the hub's log)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        blocks = text.split("\n[")
        return "\n[".join(
            b for b in blocks if "jupyter_lims_bridge" in b and ("error" in b or "Traceback" in b)
        )

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- configuration of the single-user servers -------------------------------

    def set_env(self, env: dict[str, str | None], user: str = "*") -> None:
        """Set (or, with ``None``, remove) environment variables of later spawns,
        for every user (``"*"``) or one user. Running servers keep their
        environment: ``hub.stop(name)`` then ``hub.spawn(name)`` to apply."""
        target = self._env.setdefault(user, {})
        for name, value in env.items():
            if value is None:
                target.pop(name, None)
            else:
                target[name] = value
        self._write_env()

    def _write_env(self) -> None:
        (self.root / "env.json").write_text(json.dumps(self._env))

    # -- URLs, paths and signing --------------------------------------------------

    def user_url(self, name: str) -> str:
        return f"{self.url}user/{name}/"

    def home(self, name: str) -> Path:
        return self.root / "home" / name

    def token(self, sub: str, **claims: Any) -> str:
        """An open token for ``sub`` signed with the hub's LIMS key
        (``signing.make_claims`` arguments; ``entity`` has a default)."""
        claims.setdefault(
            "entity",
            {
                "type": "sample",
                "id": "S-1",
                "title": "Sample 1",
                "url": "https://eln.example.org/samples/S-1",
            },
        )
        return signing.make_token(self.private_key, sub=sub, **claims)

    def deep_link(self, sub: str, **claims: Any) -> str:
        """``/hub/user-redirect/lims/open?lims_token=…`` for a token made for ``sub``."""
        return signing.deep_link(self.user_redirect_url, self.token(sub, **claims))

    # -- REST API and users ------------------------------------------------------

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A hub REST API call (``path`` relative to ``/hub/api/``) as an admin service."""
        headers = {"Authorization": f"token {self.api_token}", **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 10)
        return requests.request(method, self.api_url + path.lstrip("/"), headers=headers, **kwargs)

    def login(self, name: str) -> requests.Session:
        """A new ``requests.Session`` logged in as ``name`` through the login form."""
        session = requests.Session()
        r = session.get(self.url + "hub/login", timeout=10)
        r.raise_for_status()
        xsrf = session.cookies.get("_xsrf", path="/hub/")
        r = session.post(
            self.url + "hub/login",
            data={"username": name, "password": self.password, "_xsrf": xsrf},
            allow_redirects=False,
            timeout=10,
        )
        if r.status_code != 302:
            raise AssertionError(f"login of {name} answered {r.status_code}: {r.text[:500]}")
        self._sessions[f"{name}-{id(session)}"] = session
        return session

    def lims_login(
        self, token: str, next_url: str | None = None
    ) -> tuple[requests.Session, requests.Response]:
        """What the launch page does, without a browser (``lims_hub`` only): load
        ``/hub/login?next=…`` (its ``_xsrf`` cookie), then POST the token to
        ``/hub/lims/login``. Returns the session and the POST's response."""
        session = requests.Session()
        next_url = next_url or "/hub/user-redirect/lims/open?" + urllib.parse.urlencode(
            {"lims_token": token}
        )
        r = session.get(self.url + "hub/login", params={"next": next_url}, timeout=10)
        xsrf = session.cookies.get("_xsrf", path="/hub/")
        r = session.post(
            self.url + "hub/lims/login",
            data={"lims_token": token, "next": next_url, "_xsrf": xsrf},
            headers={"Accept": "application/json"},
            allow_redirects=False,
            timeout=30,
        )
        self._sessions[f"lims-{id(session)}"] = session
        return session, r

    def server_env(self, name: str) -> dict[str, str]:
        """The environment ``name``'s running single-user server was started with."""
        with contextlib.closing(sqlite3.connect(self.root / "jupyterhub.sqlite")) as db:
            rows = db.execute(
                "SELECT spawners.state FROM spawners JOIN users ON spawners.user_id = users.id "
                "WHERE users.name = ?",
                (name,),
            ).fetchall()
        for (state,) in rows:
            pid = json.loads(state or "{}").get("pid")
            if isinstance(pid, int) and pid > 0:
                raw = Path(f"/proc/{pid}/environ").read_bytes()
                return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
        raise AssertionError(f"no running server process for {name}")

    def server_ready(self, name: str) -> bool:
        r = self.api("GET", f"users/{name}")
        if r.status_code == 404:
            return False
        r.raise_for_status()
        server = r.json().get("servers", {}).get("")
        return bool(server and server.get("ready"))

    def spawn(self, name: str, session: requests.Session | None = None) -> requests.Session:
        """Start ``name``'s server (logging in if no session is given) and wait
        until it is ready. Returns the session, which can then reach
        ``user_url(name)`` (after one page visit completes the OAuth dance)."""
        session = session or self.login(name)
        if not self.server_ready(name):
            r = session.get(self.url + f"hub/spawn/{name}", allow_redirects=False, timeout=30)
            if r.status_code >= 400:
                raise AssertionError(f"spawn of {name} answered {r.status_code}: {r.text[:500]}")
            self.wait_ready(name)
        return session

    def user_session(self, name: str) -> requests.Session:
        """A session logged in as ``name`` that can call ``name``'s server APIs
        (e.g. ``lims/api/tokens``): the server is spawned, one page visit
        completes the hub's OAuth, and the ``X-XSRFToken`` header is set from
        the server's ``_xsrf`` cookie (path ``/user/<name>/``)."""
        session = self.spawn(name)
        r = session.get(self.user_url(name) + "lab", timeout=30)
        r.raise_for_status()
        xsrf = session.cookies.get("_xsrf", path=f"/user/{name}/")
        if xsrf is None:
            raise AssertionError(f"no _xsrf cookie for /user/{name}/ after visiting lab")
        session.headers["X-XSRFToken"] = xsrf
        return session

    def wait_ready(self, name: str, timeout: float = SPAWN_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self.server_ready(name):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{name}'s server not ready in {timeout} s:\n{self.log_tail()}"
                )
            time.sleep(0.3)
        errors = self.extension_errors()
        if errors:
            raise AssertionError(f"the bridge failed to load in a single-user server:\n{errors}")

    def stop(self, name: str, timeout: float = STOP_TIMEOUT) -> None:
        """Stop ``name``'s server and wait until it is gone."""
        r = self.api("DELETE", f"users/{name}/server")
        if r.status_code not in (202, 204, 400, 404):
            r.raise_for_status()
        deadline = time.monotonic() + timeout
        while True:
            r = self.api("GET", f"users/{name}")
            if r.status_code == 404 or not r.json().get("servers"):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}'s server did not stop in {timeout} s")
            time.sleep(0.2)

    # -- the browser -------------------------------------------------------------

    def browser_login(self, page: Any, name: str) -> None:
        """Log a Playwright page in as ``name`` through the hub's login form."""
        page.goto(self.url + "hub/login")
        page.fill("#username_input", name)
        page.fill("#password_input", self.password)
        page.click("#login_submit")
        # "commit": the hub goes on to spawn or to JupyterLab; the caller navigates on
        page.wait_for_url(lambda url: "/hub/login" not in url, timeout=15_000, wait_until="commit")


@pytest.fixture(scope="session")
def hub(tmp_path_factory) -> Iterator[Hub]:
    chp = find_chp()
    if chp is None:
        _missing("configurable-http-proxy", "build/tools/node_modules/.bin or PATH")
    root = tmp_path_factory.mktemp("hub")
    instance = Hub(root, chp)
    try:
        instance.start()
        yield instance
    finally:
        instance.close()


# Module scope: the hub and its servers are gone before other modules' hub starts
# (two hubs and their servers at once slowed the proxy tests into flakiness).
@pytest.fixture(scope="module")
def lims_stand_in() -> Iterator[LimsStandIn]:
    stand_in = LimsStandIn()
    stand_in.up()
    try:
        yield stand_in
    finally:
        stand_in.down()


@pytest.fixture(scope="module")
def lims_hub(tmp_path_factory, lims_stand_in) -> Iterator[Hub]:
    """A hub configured by deploy/hub_config.py: LimsAuthenticator logs browsers in
    with the deep link's token, LimsSpawnHook asks ``lims_stand_in`` for mounts."""
    chp = find_chp()
    if chp is None:
        _missing("configurable-http-proxy", "build/tools/node_modules/.bin or PATH")
    root = tmp_path_factory.mktemp("limshub")
    instance = Hub(root, chp, lims=lims_stand_in)
    try:
        instance.start()
        yield instance
    finally:
        instance.close()


@pytest.fixture
def jp_asyncio_loop() -> Iterator[None]:
    # pytest-jupyter's autouse loop fixture would grab (and close) the loop that
    # Playwright's sync API runs in its greenlet; no test here uses pytest-jupyter.
    yield None


@pytest.fixture
def jp_server_cleanup() -> Iterator[None]:
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


# Module scope, not session: while Playwright's sync API is active its event loop
# counts as running in this thread, which would break the pytest-jupyter tests
# that run after the e2e modules in the same pytest process.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = find_chromium()
    if executable is None:
        _missing("chromium", "/usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def page(browser, request, hub) -> Iterator[Any]:
    """A page in a fresh browser context (no cookies shared between tests).

    When the test fails, its screenshot and the browser console are saved in
    ``test-artifacts/<test name>.{png,log}``."""
    yield from _page(browser, request, hub)


@pytest.fixture
def lims_page(browser, request, lims_hub) -> Iterator[Any]:
    """``page`` for tests of ``lims_hub``."""
    yield from _page(browser, request, lims_hub)


def _page(browser: Any, request: Any, hub: Hub) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(30_000)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"console.{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    page.on(
        "response", lambda r: console.append(f"{r.status} {r.request.method} {_no_token(r.url)}")
    )
    try:
        yield page
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            ARTIFACTS.mkdir(exist_ok=True)
            stem = ARTIFACTS / request.node.name
            try:
                page.screenshot(path=str(stem.with_suffix(".png")))
            except Exception:  # the page may be gone; the log still helps
                pass
            lines = [*console, f"url: {_no_token(page.url)}", hub.extension_errors()]
            stem.with_suffix(".log").write_text("\n".join(lines))
        context.close()


def _no_token(url: str) -> str:
    return url.split("lims_token=")[0] + ("lims_token=…" if "lims_token=" in url else "")


@pytest.fixture
def artifacts() -> Path:
    """``test-artifacts/`` (git-ignored), for screenshots."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
