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
from pathlib import Path
from typing import Any

from traitlets import TraitError

from .app import LimsBridge, configured_bridge, parse_ports
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
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    actions = p.add_subparsers(dest="tokens_action", metavar="ACTION")
    actions.add_parser("list", help="list tokens (never their secret)", parents=[common])
    c = actions.add_parser("create", help="create a token and print it once", parents=[common])
    c.add_argument("name", help="what the token is for, e.g. 'ci'")
    c.add_argument(
        "--port",
        type=int,
        action="append",
        dest="ports",
        help="limit the token to this port (repeatable; default: all allowed ports)",
    )
    c.add_argument(
        "--service",
        action="append",
        dest="services",
        help="limit the token to this named service (repeatable; see allowed_services)",
    )
    c.add_argument("--expires-in", type=float, help="lifetime in seconds (default: no expiry)")
    r = actions.add_parser("revoke", help="revoke a token by id", parents=[common])
    r.add_argument("id", help="the token's id (from 'list')")
    p.set_defaults(run=run)
    return p


def state_dir(explicit: str | None = None, bridge: LimsBridge | None = None) -> Path:
    """Where the server keeps its state, found the way the server finds it."""
    if explicit:
        return Path(explicit).expanduser()
    return Path((bridge or _configured()).state_dir).expanduser()


def allowed_ports(bridge: LimsBridge | None = None) -> frozenset[int]:
    """The server's ``allowed_ports``, found the way the server finds them, so a
    token is not scoped to a port the proxy would refuse anyway."""
    return parse_ports((bridge or _configured()).allowed_ports)


def _configured() -> LimsBridge:
    try:
        return configured_bridge()
    except TraitError as e:
        raise LimsError("bad_request", f"the server's configuration is not valid: {e}") from None


def run(args: argparse.Namespace) -> int:
    action = getattr(args, "tokens_action", None) or "list"
    as_json = getattr(args, "json", False)
    explicit = getattr(args, "state_dir", None)
    scoped = action == "create" and bool(args.ports or args.services)
    try:
        # the server's configuration is read once, and only when it is needed
        bridge = _configured() if scoped or not explicit else None
        store = ProxyTokenStore(state_dir(explicit, bridge) / FILE_NAME)
        if action == "list":
            tokens = store.list()
            if as_json:
                print(json.dumps({"tokens": tokens}, indent=2))
            elif not tokens:
                print("no proxy tokens")
            else:
                for t in tokens:
                    ports = ",".join(map(str, t["ports"])) if t["ports"] else "all allowed"
                    if t["ports"] or t.get("services"):
                        ports = ",".join(map(str, t["ports"] or [])) or "none"
                    services = f"  services: {','.join(t['services'])}" if t.get("services") else ""
                    print(
                        f"{t['id']}  {t['name']!r}  ports: {ports}{services}  "
                        f"expires: {t['expiresAt'] or 'never'}  last used: {t['lastUsedAt'] or 'never'}"
                    )
        elif action == "create":
            created = store.create(
                args.name,
                args.ports,
                args.expires_in,
                allowed_ports=allowed_ports(bridge) if scoped else None,
                services=args.services,
                allowed_services=frozenset(bridge.allowed_services) if scoped and bridge else None,
            )
            if as_json:
                print(json.dumps(created, indent=2))
            else:
                print(f"id:    {created['id']}")
                print(f"token: {created['token']}")
                print(
                    "This is the only time the token is shown. Send it as the X-Proxy-Token header."
                )
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
