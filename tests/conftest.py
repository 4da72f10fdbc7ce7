"""Shared fixtures: a real Jupyter server with the bridge enabled, keys, and a signer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jupyter_lims_bridge import signing

pytest_plugins = ["pytest_jupyter.jupyter_server"]

OWNER = "alice"


@pytest.fixture(scope="session")
def key_pair() -> tuple[Any, str]:
    """An Ed25519 private key and its public PEM text."""
    private_pem, public_pem = signing.generate_key_pair()
    return signing.load_private_key(private_pem), public_pem.decode()


@pytest.fixture
def private_key(key_pair):
    return key_pair[0]


@pytest.fixture
def bridge_config() -> dict[str, Any]:
    """Extra ``LimsBridge`` config for a test; tests update it before the server starts."""
    return {}


#: a data item naming a folder of the ``data_mount`` store
RAW = {"name": "raw", "mount": "archive", "path": "2026/S-42/raw"}


def body(response: Any) -> dict:
    """The JSON body of a ``jp_fetch`` response."""
    return json.loads(response.body)


@pytest.fixture
def workspace(jp_root_dir) -> Path:
    """The bridge's workspace folder under the server's root."""
    return jp_root_dir / "lims"


@pytest.fixture
def data_mount(tmp_path) -> Path:
    """A mounted data store with one folder and one file."""
    root = tmp_path / "mnt" / "archive"
    (root / "2026" / "S-42" / "raw").mkdir(parents=True)
    (root / "2026" / "S-42" / "raw" / "run1.csv").write_text("a,b\n1,2\n")
    (root / "plate.csv").write_text("well,value\nA1,0.5\n")
    return root


@pytest.fixture
def jp_server_config(key_pair, bridge_config, data_mount, tmp_path):
    config = {
        "owner": OWNER,
        "public_keys": [key_pair[1]],
        "data_mounts": {"archive": str(data_mount)},
        "state_dir": str(tmp_path / "state"),
        **bridge_config,
    }
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_lims_bridge": True},
            "allow_root": True,
        },
        "LimsBridge": config,
    }


@pytest.fixture
def bridge(jp_serverapp):
    """The running LimsBridge extension app."""
    return jp_serverapp.web_app.settings["lims_bridge"]


@pytest.fixture
def sign(private_key):
    """Sign an open token for the owner; keyword arguments override claims."""

    def _sign(key=None, headers: dict | None = None, **overrides: Any) -> str:
        claims = signing.make_claims(
            sub=overrides.pop("sub", OWNER),
            entity=overrides.pop(
                "entity",
                {
                    "type": "sample",
                    "id": "S-42",
                    "title": "Buffer screen 3",
                    "url": "https://eln.example.org/samples/S-42",
                },
            ),
        )
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        import jwt

        signer = key if key is not None else private_key
        return jwt.encode(claims, signer, algorithm=signing.algorithm_of(signer), headers=headers)

    return _sign


@pytest.fixture
def open_api(jp_fetch):
    """POST lims/api/open with only an X-Lims-Token header (no Jupyter credentials)."""

    async def _open(token: str | None, *, dry_run: bool = False, body: dict | None = None):
        headers = {"Authorization": ""}
        if token is not None:
            headers["X-Lims-Token"] = token
        params = {"dry_run": "1"} if dry_run else {}
        return await jp_fetch(
            "lims",
            "api",
            "open",
            method="POST",
            body=json.dumps(body or {}),
            headers=headers,
            params=params,
            raise_error=False,
        )

    return _open


@pytest.fixture
def file_server():
    """A LIMS file server on 127.0.0.1 (tests/support/fileserver.py) that records what it served."""
    from .support.fileserver import FileServer

    server = FileServer().start()
    yield server
    server.stop()


@pytest.fixture
def emitted(jp_serverapp):
    """``emitted(schema_id=None)``: the events the server emitted so far, as parsed JSON."""
    import io
    import logging

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    jp_serverapp.event_logger.register_handler(handler)

    def read(schema_id: str | None = None) -> list[dict]:
        handler.flush()
        lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
        return [e for e in lines if schema_id is None or e["__schema__"] == schema_id]

    yield read
    jp_serverapp.event_logger.remove_handler(handler)


@pytest.fixture
def captured_logs(jp_serverapp):
    """``captured_logs()``: everything logged so far by the server, tornado and the bridge."""
    import io
    import logging

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    loggers = [
        logging.getLogger(),
        jp_serverapp.log,
        jp_serverapp.web_app.settings["lims_bridge"].log,
        logging.getLogger("tornado.access"),
        logging.getLogger("tornado.application"),
        logging.getLogger("tornado.general"),
        logging.getLogger("jupyter_lims_bridge"),
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)

    def read() -> str:
        handler.flush()
        return stream.getvalue()

    yield read
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


def files_under(root: Path) -> dict[str, bytes | str]:
    """Every file and link under ``root`` with its content (a link: its target)."""
    snapshot: dict[str, bytes | str] = {}
    if not root.exists():
        return snapshot
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            snapshot[rel] = "-> " + str(path.readlink())
        elif path.is_file():
            snapshot[rel] = path.read_bytes()
    return snapshot


@pytest.fixture
def http_server(http_server, jp_serverapp):
    """pytest-jupyter's HTTP server with the proxy's front (proxy/front.py) in
    front of its connections, as the bridge puts it in front of Jupyter's own
    when the server starts: every test's connections pass it."""
    bridge = jp_serverapp.web_app.settings["lims_bridge"]
    bridge.install_proxy_front(http_server)
    yield http_server
    if bridge.proxy_front is not None:
        bridge.proxy_front.uninstall()


@pytest.fixture(params=["front", "fast", "handler"])
def proxy_path(request, jp_serverapp, http_server, monkeypatch):
    """Which of the proxy's paths a bodyless request with a proxy token takes:
    ``front`` (proxy/front.py: served before tornado's HTTP server reads the
    connection), ``fast`` (handlers/proxy_fast.py as a tornado route: the
    front hands every connection to tornado); or
    ``handler`` (both off: handlers/proxy.py has every request)."""
    bridge = jp_serverapp.web_app.settings["lims_bridge"]
    if request.param in ("front", "fast"):
        assert bridge.proxy_front is not None, "the front is not installed"
    if request.param == "fast":
        monkeypatch.setattr(bridge.proxy_front, "route", lambda request: None)
    if request.param == "handler":
        from jupyter_lims_bridge.handlers import proxy_fast

        monkeypatch.setattr(proxy_fast, "takes", lambda *args, **kwargs: False)
    return request.param
