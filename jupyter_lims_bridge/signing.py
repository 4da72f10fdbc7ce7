"""LIMS-side helpers: make open tokens and deep links.

This is what a LIMS integrator imports (and what ``jupyter lims-bridge sign``
and the tests use). It runs where the private key lives - in the LIMS, never
in a user's Jupyter server. Ten lines are enough::

    from jupyter_lims_bridge.signing import load_private_key, make_deep_link

    key = load_private_key("/etc/eln/lims-private.pem")
    link = make_deep_link(
        "https://hub.example.org/hub/user-redirect/",
        key,
        sub="alice",
        entity={"type": "sample", "id": "S-42", "title": "Buffer screen 3",
                "url": "https://eln.example.org/samples/S-42"},
        issuer="https://eln.example.org",
    )
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from .urls import url_for

DEFAULT_AUDIENCE = "jupyter-lims-bridge"
DEFAULT_LIFETIME = 300


def generate_key_pair() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as ``(private_pem, public_pem)``."""
    private = ed25519.Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return private_pem, public_pem_of(private)


def public_pem_of(private_key: Any) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(path_or_pem: str | bytes | Path, password: bytes | None = None) -> Any:
    """Load a PEM private key from a file path or from PEM text."""
    data: bytes
    if isinstance(path_or_pem, bytes):
        data = path_or_pem
    elif isinstance(path_or_pem, str) and path_or_pem.lstrip().startswith("-----BEGIN"):
        data = path_or_pem.encode()
    else:
        data = Path(path_or_pem).expanduser().read_bytes()
    return serialization.load_pem_private_key(data, password=password)


def algorithm_of(key: Any) -> str:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ES256"
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, (str, bytes)):
        return "HS256"
    raise TypeError(f"cannot sign with a {type(key).__name__}")


def make_claims(
    *,
    sub: str,
    entity: dict[str, Any],
    notebook: dict[str, Any] | None = None,
    data: list[dict[str, Any]] | None = None,
    issuer: str | None = None,
    audience: str = DEFAULT_AUDIENCE,
    lifetime: int = DEFAULT_LIFETIME,
    now: int | None = None,
    jti: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The claims of an open token (DESIGN.md), with a fresh ``jti`` and ``exp``."""
    issued = int(time.time()) if now is None else now
    claims: dict[str, Any] = {
        **(extra or {}),
        "sub": sub,
        "aud": audience,
        "iat": issued,
        "exp": issued + lifetime,
        "jti": jti or str(uuid.uuid4()),
        "entity": entity,
    }
    if issuer:
        claims["iss"] = issuer
    if notebook:
        claims["notebook"] = notebook
    if data:
        claims["data"] = data
    return claims


def sign_claims(claims: dict[str, Any], key: Any, *, kid: str | None = None) -> str:
    """Sign ``claims`` with ``key`` (its algorithm follows from the key type)."""
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims, key, algorithm=algorithm_of(key), headers=headers)


def make_token(key: Any, *, kid: str | None = None, **claim_args: Any) -> str:
    """``sign_claims(make_claims(**claim_args), key)``."""
    return sign_claims(make_claims(**claim_args), key, kid=kid)


def deep_link(server_url: str, token: str) -> str:
    """The "Open in Jupyter" URL for ``token``.

    ``server_url`` is either a JupyterHub's user-redirect URL
    (``https://hub.example.org/hub/user-redirect/``), which sends each user to
    their own server, or one server's base URL (``http://127.0.0.1:8888/``).
    """
    return url_for("open_page", server_url) + "?" + urlencode({"lims_token": token})


def make_deep_link(server_url: str, key: Any, *, kid: str | None = None, **claim_args: Any) -> str:
    """Sign fresh claims and return the deep link for them."""
    return deep_link(server_url, make_token(key, kid=kid, **claim_args))


def api_open_url(server_url: str) -> str:
    """The server-to-server endpoint: POST here with header ``X-Lims-Token``."""
    return url_for("open_api", server_url)
