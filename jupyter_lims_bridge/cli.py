"""``jupyter lims-bridge``: the command line of operators and LIMS integrators.

Subcommands: ``keygen`` (an Ed25519 key pair), ``sign`` (an open token or a
full deep link), ``verify`` (why the current configuration accepts or refuses
a token), ``tokens`` (proxy tokens from a terminal) and ``demo`` (the whole
story on one machine). Signing runs where the private key lives; ``verify``
needs only what the user's server has, and reads the token from standard
input (an argument would show it to every user in ``ps``). Output never includes a secret unless
the command exists to make one (``sign``, ``tokens create``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import jwt

from . import cli_tokens, demo, signing
from ._version import __version__
from .app import configured_bridge
from .claims import ReplayStore, build_verifier
from .errors import LimsError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "run", None)
    if run is None:
        parser.print_help()
        return 2
    try:
        return int(run(args) or 0)
    except (OSError, ValueError) as e:
        print(f"jupyter lims-bridge {args.command}: {e}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jupyter lims-bridge",
        description="Open signed LIMS/ELN deep links in Jupyter; manage proxy tokens.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_keygen(sub)
    _add_sign(sub)
    _add_verify(sub)
    cli_tokens.add_parser(sub)
    demo.add_parser(sub)
    return parser


# ---------------------------------------------------------------------------
# keygen


def _add_keygen(sub: Any) -> None:
    p = sub.add_parser(
        "keygen",
        help="write an Ed25519 key pair (private key for the LIMS, public key for Jupyter)",
        description="Write an Ed25519 key pair. The private key (mode 0600) stays with the "
        "LIMS; the public key goes into the image or the spawner (LimsBridge.public_keys).",
    )
    p.add_argument("--out", default=".", help="directory to write into (default: .)")
    p.add_argument("--name", default="lims", help="file name stem (default: lims)")
    p.add_argument("--force", action="store_true", help="replace existing key files")
    p.set_defaults(run=_keygen)


def _keygen(args: argparse.Namespace) -> int:
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    private_path = out / f"{args.name}-private.pem"
    public_path = out / f"{args.name}-public.pem"
    if not args.force:
        for path in (private_path, public_path):
            if path.exists():
                raise ValueError(f"{path} exists; pass --force to replace it")
    private_pem, public_pem = signing.generate_key_pair()
    private_path.unlink(missing_ok=True)
    # created 0600, never readable by others even for an instant
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    public_path.write_bytes(public_pem)
    print(f"private key (keep it in the LIMS): {private_path}")
    print(f"public key (give it to Jupyter):    {public_path}")
    print(f"\n  c.LimsBridge.public_keys = [{str(public_path.resolve())!r}]")
    return 0


# ---------------------------------------------------------------------------
# sign


def _add_sign(sub: Any) -> None:
    p = sub.add_parser(
        "sign",
        help="make an open token, or a full deep link with --url",
        description="Sign an open token for one user and one ELN entry. Claims come from "
        "--claims (a JSON file) and/or the flags (flags win).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  jupyter lims-bridge sign --key lims-private.pem --sub alice \\\n"
        "      --entity-type sample --entity-id S-42 --title 'Buffer screen 3' \\\n"
        "      --url https://hub.example.org/hub/user-redirect/\n"
        "  jupyter lims-bridge sign --key lims-private.pem --claims claims.json\n",
    )
    p.add_argument("--key", required=True, help="private key PEM file (Ed25519, P-256 or RSA)")
    p.add_argument("--kid", help="key id to put in the token header (for a JWKS)")
    p.add_argument("--claims", help="JSON file with claims (sub, entity, notebook, data, …)")
    p.add_argument("--sub", help="the Jupyter user the link is for")
    p.add_argument("--issuer", help="iss claim, e.g. https://eln.example.org")
    p.add_argument("--audience", default=signing.DEFAULT_AUDIENCE, help="aud claim")
    p.add_argument("--lifetime", type=int, default=signing.DEFAULT_LIFETIME, help="seconds")
    p.add_argument("--entity-type", help="entity.type, e.g. sample")
    p.add_argument("--entity-id", help="entity.id, e.g. S-42")
    p.add_argument("--title", help="entity.title")
    p.add_argument("--entity-url", help="entity.url: the entry in the ELN")
    p.add_argument("--notebook-path", help="notebook.path relative to the workspace")
    p.add_argument("--template", help="notebook.template")
    p.add_argument("--new", action="store_true", help="notebook.new: always make a new notebook")
    p.add_argument(
        "--mount",
        action="append",
        default=[],
        metavar="NAME=STORE:PATH",
        help="a data item linked from a mounted store (repeatable)",
    )
    p.add_argument(
        "--download",
        action="append",
        default=[],
        metavar="NAME=URL[#sha256=HEX]",
        help="a data item downloaded from a URL (repeatable)",
    )
    p.add_argument(
        "--url",
        help="print a deep link for this server URL: a hub's …/hub/user-redirect/ "
        "or one server's base URL",
    )
    p.set_defaults(run=_sign)


def _parse_mount(spec: str) -> dict[str, str]:
    name, sep, rest = spec.partition("=")
    store, sep2, path = rest.partition(":")
    if not (sep and sep2 and name and store and path):
        raise ValueError(f"--mount {spec!r}: expected NAME=STORE:PATH")
    return {"name": name, "mount": store, "path": path}


def _parse_download(spec: str) -> dict[str, Any]:
    name, sep, url = spec.partition("=")
    if not (sep and name and url):
        raise ValueError(f"--download {spec!r}: expected NAME=URL[#sha256=HEX]")
    item: dict[str, Any] = {"name": name}
    url, _, fragment = url.partition("#sha256=")
    item["url"] = url
    if fragment:
        item["sha256"] = fragment
    return item


def claims_from_args(args: argparse.Namespace, now: int | None = None) -> dict[str, Any]:
    """The claims ``sign`` makes from ``--claims`` and the flags."""
    base: dict[str, Any] = {}
    if args.claims:
        base = json.loads(Path(args.claims).read_text())
        if not isinstance(base, dict):
            raise ValueError("--claims must hold a JSON object")
    entity = dict(base.get("entity") or {})
    for flag, key in (
        ("entity_type", "type"),
        ("entity_id", "id"),
        ("title", "title"),
        ("entity_url", "url"),
    ):
        if getattr(args, flag):
            entity[key] = getattr(args, flag)
    notebook = dict(base.get("notebook") or {})
    if args.notebook_path:
        notebook["path"] = args.notebook_path
    if args.template:
        notebook["template"] = args.template
    if args.new:
        notebook["new"] = True
    data = list(base.get("data") or [])
    data += [_parse_mount(s) for s in args.mount] + [_parse_download(s) for s in args.download]
    sub = args.sub or base.get("sub")
    if not sub:
        raise ValueError("give the user with --sub (or 'sub' in --claims)")
    if not entity.get("type") or not entity.get("id"):
        raise ValueError("give --entity-type and --entity-id (or 'entity' in --claims)")
    registered = ("sub", "aud", "iat", "exp", "jti", "iss", "entity", "notebook", "data")
    return signing.make_claims(
        sub=sub,
        entity=entity,
        notebook=notebook or None,
        data=data or None,
        issuer=args.issuer or base.get("iss"),
        audience=args.audience,
        lifetime=args.lifetime,
        now=now,
        extra={k: v for k, v in base.items() if k not in registered},
    )


def _sign(args: argparse.Namespace) -> int:
    key = signing.load_private_key(args.key)
    token = signing.sign_claims(claims_from_args(args), key, kid=args.kid)
    print(signing.deep_link(args.url, token) if args.url else token)
    return 0


# ---------------------------------------------------------------------------
# verify


def _add_verify(sub: Any) -> None:
    p = sub.add_parser(
        "verify",
        help="explain why this server's configuration accepts or refuses a token",
        description="Check a token (or a deep link) against the LimsBridge configuration "
        "of this Jupyter installation (config files and LIMS_BRIDGE_* variables), "
        "step by step. Exit status 0 when it would be accepted. The token is read "
        "from standard input, e.g. `pbpaste | jupyter lims-bridge verify` or "
        "`jupyter lims-bridge verify < token.txt`: an argument on the command line "
        "is visible to every user of the machine (ps, /proc).",
    )
    p.add_argument(
        "token",
        nargs="?",
        default="-",
        help="- (the default): read the token or deep link from standard input; "
        "a token given here instead is visible in the process list",
    )
    p.add_argument("--owner", help="check as if the server belonged to this user")
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="LimsBridge.NAME=VALUE",
        help="override a LimsBridge option (repeatable), e.g. LimsBridge.public_keys=['k.pem']",
    )
    p.set_defaults(run=_verify)


def _token_from(text: str) -> str:
    if text == "-":
        if sys.stdin.isatty():
            print("paste the token or deep link, then press Ctrl-D:", file=sys.stderr)
        text = sys.stdin.read()
    else:
        print(
            "note: a token on the command line is visible in the process list; "
            "pipe it on standard input instead (jupyter lims-bridge verify < token.txt)",
            file=sys.stderr,
        )
    text = text.strip()
    if "lims_token=" in text:
        from urllib.parse import parse_qs, urlsplit

        text = parse_qs(urlsplit(text).query).get("lims_token", [""])[0]
    return text


def _verify(args: argparse.Namespace) -> int:
    bridge = configured_bridge(args.config)
    token = _token_from(args.token)
    replay_path = Path(bridge.state_dir) / "used_jti.json"
    verifier = build_verifier(
        bridge,
        owner=args.owner or bridge.owner,
        replay=ReplayStore(replay_path, leeway=bridge.leeway) if replay_path.exists() else None,
    )
    report = explain(token, verifier)
    for ok, line in report.steps:
        print(("  ok   " if ok else "  FAIL ") + line)
    if report.error is None:
        print("\naccepted")
        return 0
    print(f"\nrefused: {report.error.reason} ({report.error.status}): {report.error.message}")
    return 1


class Explanation:
    def __init__(self) -> None:
        self.steps: list[tuple[bool, str]] = []
        self.error: LimsError | None = None


def explain(token: str, verifier: Any) -> Explanation:
    """Run the server's checks on ``token`` one by one, recording what each found."""
    report = Explanation()
    step = report.steps.append
    if not verifier.keys.configured:
        step((False, "no public_keys, jwks_url or hmac_secret is configured"))
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
        step(
            (
                True,
                f"a JWT of {len(token)} bytes, alg {header.get('alg')!r}"
                + (f", kid {header['kid']!r}" if header.get("kid") else ""),
            )
        )
        step(
            (
                header.get("alg") in verifier.keys.algorithms,
                f"accepted algorithms here: {', '.join(verifier.keys.algorithms) or 'none'}",
            )
        )
        now = int(time.time())
        exp, iat = unverified.get("exp"), unverified.get("iat")
        if isinstance(exp, int) and isinstance(iat, int):
            step(
                (
                    exp + verifier.leeway >= now,
                    f"expires in {exp - now} s (leeway {verifier.leeway} s)",
                )
            )
            step(
                (
                    exp - iat <= verifier.max_token_lifetime,
                    f"lifetime {exp - iat} s (at most {verifier.max_token_lifetime} s)",
                )
            )
        step(
            (
                unverified.get("aud") == verifier.audience
                or verifier.audience in (unverified.get("aud") or []),
                f"audience {unverified.get('aud')!r} (expected {verifier.audience!r})",
            )
        )
        if verifier.issuers:
            step(
                (
                    unverified.get("iss") in verifier.issuers,
                    f"issuer {unverified.get('iss')!r} (trusted: {', '.join(verifier.issuers)})",
                )
            )
        step(
            (
                unverified.get("sub") == verifier.owner,
                f"user {unverified.get('sub')!r} (this server's owner: {verifier.owner!r})",
            )
        )
    except jwt.PyJWTError:
        step((False, "not a well-formed JWT"))
    try:
        request = asyncio.run(verifier.verify(token))
        step((True, "signature verifies with a configured key"))
        step(
            (
                True,
                f"entity {request.entity.type} {request.entity.id}, "
                f"{len(request.data)} data item(s)",
            )
        )
        used = verifier.replay.get(request.jti) if verifier.replay else None
        if used:
            report.error = LimsError("token_replayed")
            step((False, f"jti {request.jti!r} was already used on this server"))
        else:
            step((True, f"jti {request.jti!r} not used on this server yet"))
    except LimsError as e:
        report.error = e
        step((False, f"{e.reason}: {e.message}"))
    return report


if __name__ == "__main__":
    sys.exit(main())
