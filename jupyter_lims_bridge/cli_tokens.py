"""``jupyter lims-bridge tokens list|create|revoke``: proxy tokens from a terminal.

Works on the same token store file the server uses (``<state_dir>/proxy_tokens.json``);
a running server notices the change within a second. The state directory is
``--state-dir``, else ``LimsBridge.state_dir`` from the Jupyter config files,
else ``LIMS_BRIDGE_STATE_DIR``, else ``<jupyter data dir>/lims_bridge`` (the
server's order). A token scoped with ``--port`` must name ports in the
server's ``allowed_ports``, read the same way.

Must not: print a token anywhere but the answer to ``create``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from .errors import LimsError
from .proxy_tokens import FILE_NAME, ProxyTokenStore


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "tokens",
        help="list, create or revoke proxy tokens",
        description="Manage the proxy tokens that open lims/proxy/<port>/ to scripts and services.",
    )
    p.add_argument("--state-dir", help="the bridge's state directory (default: as the server)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    # the same options after the action too (`tokens create ci --json`); SUPPRESS
    # keeps an action from resetting what was given before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output")
    actions = p.add_subparsers(dest="tokens_action", metavar="ACTION")
    actions.add_parser("list", help="list tokens (never their secret)", parents=[common])
    c = actions.add_parser("create", help="create a token and print it once", parents=[common])
    c.add_argument("name", help="what the token is for, e.g. 'ci'")
    c.add_argument(
        "--port", type=int, action="append", dest="ports",
        help="limit the token to this port (repeatable; default: all allowed ports)",
    )
    c.add_argument("--expires-in", type=float, help="lifetime in seconds (default: no expiry)")
    r = actions.add_parser("revoke", help="revoke a token by id", parents=[common])
    r.add_argument("id", help="the token's id (from 'list')")
    p.set_defaults(run=run)
    return p


def state_dir(explicit: str | None = None) -> Path:
    """Where the server keeps its state, found the way the server finds it."""
    if explicit:
        return Path(explicit).expanduser()
    # as the server: its config files, then the LIMS_BRIDGE_* variable, then the default
    configured = _configured("state_dir")
    if isinstance(configured, str) and configured:
        return Path(configured).expanduser()
    env = os.environ.get("LIMS_BRIDGE_STATE_DIR")
    if env:
        return Path(env).expanduser()
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "lims_bridge"


def allowed_ports() -> frozenset[int]:
    """The server's ``allowed_ports``, found the way the server finds them, so a
    token is not scoped to a port the proxy would refuse anyway."""
    from .app import LimsBridge, _from_environment, parse_ports

    spec = _configured("allowed_ports")
    env = os.environ.get("LIMS_BRIDGE_ALLOWED_PORTS")
    if spec is None and env:
        spec = _from_environment(LimsBridge.class_traits()["allowed_ports"], env)
    try:
        return parse_ports(list(spec) if isinstance(spec, (list, tuple)) else [])
    except Exception as e:  # noqa: BLE001 - a bad value is the server's to report
        raise LimsError("bad_request", f"allowed_ports is not valid: {e}") from None


def _configured(name: str) -> object:
    """``LimsBridge.<name>`` from the Jupyter config files, as the server reads them."""
    from jupyter_core.paths import jupyter_config_path
    from traitlets.config.loader import ConfigFileNotFound, JSONFileConfigLoader, PyFileConfigLoader

    found = None
    # later (lower-priority) directories first, so the first path wins as in Jupyter
    for directory in reversed(jupyter_config_path()):
        for loader_class, file_name in (
            (JSONFileConfigLoader, "jupyter_server_config.json"),
            (PyFileConfigLoader, "jupyter_server_config.py"),
        ):
            try:
                config = loader_class(file_name, path=directory).load_config()
            except ConfigFileNotFound:
                continue
            except Exception:  # noqa: BLE001 - a broken config file is the server's to report
                continue
            value = config.get("LimsBridge", {}).get(name)
            if value is not None:
                found = value
    return found


def run(args: argparse.Namespace) -> int:
    action = getattr(args, "tokens_action", None) or "list"
    store = ProxyTokenStore(state_dir(getattr(args, "state_dir", None)) / FILE_NAME)
    as_json = getattr(args, "json", False)
    try:
        if action == "list":
            tokens = store.list()
            if as_json:
                print(json.dumps({"tokens": tokens}, indent=2))
            elif not tokens:
                print("no proxy tokens")
            else:
                for t in tokens:
                    ports = ",".join(map(str, t["ports"])) if t["ports"] else "all allowed"
                    print(
                        f"{t['id']}  {t['name']!r}  ports: {ports}  "
                        f"expires: {t['expiresAt'] or 'never'}  last used: {t['lastUsedAt'] or 'never'}"
                    )
        elif action == "create":
            created = store.create(args.name, args.ports, args.expires_in,
                                   allowed_ports=allowed_ports() if args.ports else None)
            if as_json:
                print(json.dumps(created, indent=2))
            else:
                print(f"id:    {created['id']}")
                print(f"token: {created['token']}")
                print("This is the only time the token is shown. Send it as the X-Proxy-Token header.")
        elif action == "revoke":
            store.revoke(args.id)
            print(f"revoked {args.id}")
        else:
            print(f"unknown action {action!r}")
            return 2
    except LimsError as e:
        print(f"jupyter lims-bridge tokens: {e.reason}: {e.message}")
        return 1
    return 0
