"""``jupyter lims-bridge demo``: the whole story on one machine, one command.

Starts, in a throw-away directory that is deleted on exit:

- a fresh Ed25519 key pair (the demo ELN keeps the private key, JupyterLab
  gets only the public key, as in production);
- a sample data store that the server treats as a mounted volume;
- JupyterLab from this Python environment, with the bridge configured only
  through ``LIMS_BRIDGE_*`` environment variables (as a spawner would do);
- an instrument simulator: a tiny JSON API on a port the bridge allows
  (``lims/proxy/<port>/``);
- a demo ELN web page whose entries carry "Open in Jupyter" links signed
  afresh at every page load.

It prints the one URL to open (the ELN page) and runs until Ctrl-C or SIGTERM.
JupyterLab runs on 127.0.0.1 with a token login, which the demo ELN's links
carry so that they work in one click (see :mod:`.runner` for why, and what that
means); the ELN page shows what a proxy token is for, and JupyterLab embedded.

This package owns the demo only; it must not be imported by the server extension.
"""

from __future__ import annotations

import argparse
from typing import Any

DEFAULT_ELN_PORT = 8765
DEFAULT_SERVICE_PORT = 8050


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``demo`` subcommand to ``jupyter lims-bridge``."""
    parser = subparsers.add_parser(
        "demo",
        help="run JupyterLab, a demo ELN and an instrument simulator on this machine",
        description="Run the whole story on this machine: JupyterLab with the bridge, a demo "
        "ELN page whose entries carry signed 'Open in Jupyter' links, and an instrument "
        "simulator on an allowed port. Everything lives in a temporary directory that is "
        "deleted on exit. Everything listens on 127.0.0.1 only; the demo ELN's links carry "
        "JupyterLab's login token.",
    )
    configure_parser(parser)
    parser.set_defaults(run=run)
    return parser


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"port of the demo ELN page (default: {DEFAULT_ELN_PORT}, or a free port when "
        "it is taken; 0: a free port)",
    )
    parser.add_argument(
        "--lab-port", type=int, default=0, help="port of JupyterLab (default: a free port)"
    )
    parser.add_argument(
        "--service-port",
        type=int,
        default=None,
        help=f"port of the instrument simulator (default: {DEFAULT_SERVICE_PORT}, or a free "
        "port when it is taken; 0: a free port)",
    )
    parser.add_argument(
        "--open-browser",
        action="store_true",
        help="open the ELN page in a web browser (default: only print its URL)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary directory (notebooks, logs, keys) on exit",
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=90.0,
        help="seconds to wait for JupyterLab to start (default: 90)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C / SIGTERM; returns the exit status."""
    from .runner import run_demo

    return run_demo(args)
