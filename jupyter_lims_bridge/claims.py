"""Open-token verification: keys, JWKS cache, claim checks and the replay store.

The LIMS signs an open token (a JWT); this module decides whether this server
accepts it, and turns its claims into a typed :class:`OpenRequest`. It owns:

- the verification keys (PEM public keys, a JWKS URL, or - only when the
  operator configured it - an HMAC secret) and which algorithm each key may use;
- the checks of DESIGN.md, each mapped to a stable error reason;
- the ``jti`` replay store, which survives a server restart and is shared
  safely by servers on one state directory (through :mod:`.statefile`);
- the shape of the optional ``return`` claim (where "Save to ELN" sends results);
  whether its URL is allowed here is ``eln_return``'s decision, not this module's.

It must not touch the workspace or know about HTTP handlers. It never logs or
echoes a token, and the verifier raises nothing but :class:`LimsError`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import LimsError
from .statefile import read_json, update_private_json

# PyJWT and cryptography cost a server some 10 MiB of RSS: they are imported
# by the first token verified (``import jwt`` where it is used), not when the
# extension loads, so a server never opened from the ELN does not pay for them.

#: Asymmetric algorithms accepted by default (the key types: :func:`_key_types`).
ASYMMETRIC_ALGORITHMS = ("EdDSA", "ES256", "RS256")


def _key_types() -> dict[str, Any]:
    """Each asymmetric algorithm and the key type that may verify it."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    return {
        "EdDSA": ed25519.Ed25519PublicKey,
        "ES256": ec.EllipticCurvePublicKey,
        "RS256": rsa.RSAPublicKey,
    }


HMAC_ALGORITHM = "HS256"
#: A token larger than this is refused before any parsing (a deep link must fit a URL anyway).
MAX_TOKEN_BYTES = 16 * 1024
REGISTERED_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "nbf", "jti")
# "return" is a LIMS claim so that it never lands in the notebook's provenance
# (``OpenRequest.extra``): its grant is a credential
LIMS_CLAIMS = ("entity", "notebook", "data", "return")
MAX_GRANT_LENGTH = 4096
MAX_RETURN_URL_LENGTH = 2048
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entity:
    """The ELN/LIMS entry a token opens."""

    type: str
    id: str
    title: str | None = None
    url: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "id": self.id, "title": self.title, "url": self.url}


@dataclass(frozen=True)
class NotebookSpec:
    """What the token asks of the notebook: where, from which template, new or reused."""

    path: str | None = None
    template: str = "default"
    new: bool = False


@dataclass(frozen=True)
class DataItem:
    """One ``data`` entry: either ``mount`` + ``path`` or ``url`` (+ ``sha256``, ``size``)."""

    name: str
    mount: str | None = None
    path: str | None = None
    url: str | None = None
    sha256: str | None = None
    size: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class ReturnSpec:
    """The ``return`` claim: where and with which bearer grant results go back to the ELN."""

    url: str
    grant: str = field(repr=False)  # a credential: never in a repr, a log or a response
    expires: int | None = None


@dataclass(frozen=True)
class OpenRequest:
    """A verified open token, ready for the workspace."""

    sub: str
    jti: str
    iat: int
    exp: int
    iss: str | None
    entity: Entity
    notebook: NotebookSpec
    data: tuple[DataItem, ...]
    #: claims this version does not know; kept in the notebook's provenance metadata
    extra: dict[str, Any] = field(default_factory=dict)
    #: the ``return`` claim, if any (kept server-side by ``eln_return``, never in the notebook)
    return_to: ReturnSpec | None = None


# ---------------------------------------------------------------------------
# keys


def pem_text(text_or_path: str) -> str:
    """The PEM text given as such or as the path of a PEM file (read now)."""
    text = text_or_path.strip()
    if not text.startswith("-----BEGIN"):
        text = Path(text_or_path).expanduser().read_text()
    if "-----BEGIN" not in text:
        raise ValueError("not a PEM public key")
    return text


def load_public_key(text_or_path: str) -> Any:
    """Load a PEM public key given as PEM text or as the path of a PEM file."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key = load_pem_public_key(pem_text(text_or_path).strip().encode())
    if not isinstance(key, tuple(_key_types().values())):
        raise ValueError(f"unsupported public key type {type(key).__name__}")
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name != "secp256r1":
        raise ValueError("only P-256 EC keys (ES256) are supported")
    return key


def algorithm_for_key(key: Any) -> str:
    for alg, key_type in _key_types().items():
        if isinstance(key, key_type):
            return alg
    raise ValueError(f"unsupported key type {type(key).__name__}")


class KeySet:
    """The keys that may verify an open token, grouped by algorithm.

    PEM keys are read at start (a missing file fails then) and parsed once, on
    first use (no cryptography import before a token arrives). A JWKS is fetched in a worker thread (never on the
    event loop), cached 5 minutes, and refetched once when a token names an
    unknown ``kid`` (PyJWKClient does that, at most once per cooldown period).
    A JWKS that cannot be fetched or used counts as empty (and is logged as a
    warning): the verifier asks it only after the PEM keys, so a broken
    endpoint never stops a token that a PEM key verifies.
    """

    def __init__(
        self,
        public_keys: Iterable[str] = (),
        jwks_url: str | None = None,
        hmac_secret: str | None = None,
        jwks_timeout: float = 5.0,
        jwks_refetch_cooldown: float = 10.0,
    ) -> None:
        self._pem_texts = [pem_text(k) for k in public_keys]
        self._pem_keys: list[Any] | None = None
        self.hmac_secret = hmac_secret or None
        self.jwks_url = jwks_url or None
        self._jwks_options = (jwks_timeout, jwks_refetch_cooldown)
        self._jwks_client: Any = None

    @property
    def pem_keys(self) -> list[Any]:
        if self._pem_keys is None:
            try:
                self._pem_keys = [load_public_key(text) for text in self._pem_texts]
            except Exception as e:
                log.error("lims-bridge: a configured public key cannot be used: %s", e)
                raise
        return self._pem_keys

    @property
    def jwks_client(self) -> Any:
        if self.jwks_url and self._jwks_client is None:
            import jwt

            timeout, cooldown = self._jwks_options
            # the cooldown bounds how often tokens with made-up kids can make us
            # refetch the LIMS's JWKS
            self._jwks_client = jwt.PyJWKClient(
                self.jwks_url,
                cache_keys=True,
                lifespan=300,
                timeout=timeout,
                cooldown_duration=cooldown,
            )
        return self._jwks_client

    @property
    def algorithms(self) -> list[str]:
        algs = {algorithm_for_key(k) for k in self.pem_keys}
        if self.jwks_url:
            algs |= set(ASYMMETRIC_ALGORITHMS)
        if self.hmac_secret:
            algs.add(HMAC_ALGORITHM)
        return sorted(algs)

    @property
    def configured(self) -> bool:
        return bool(self._pem_texts or self.jwks_url or self.hmac_secret)

    async def candidates(self, alg: str, kid: str | None) -> list[Any]:
        """The keys that may have signed a token with header ``alg`` / ``kid``.

        The configured keys first, then the JWKS's. The verifier itself asks for
        the two groups separately, so it fetches the JWKS only when no configured
        key verifies the token."""
        return self.local_candidates(alg) + await self.jwks_candidates(alg, kid)

    def local_candidates(self, alg: str) -> list[Any]:
        """The configured keys (PEM keys, or the HMAC secret) that may verify ``alg``."""
        if alg == HMAC_ALGORITHM:
            return [self.hmac_secret] if self.hmac_secret else []
        key_type = _key_types().get(alg)
        if key_type is None:
            return []
        return [k for k in self.pem_keys if isinstance(k, key_type)]

    async def jwks_candidates(self, alg: str, kid: str | None) -> list[Any]:
        """The JWKS's keys for ``alg`` / ``kid``; empty when there is no JWKS or it
        cannot be used. Never raises."""
        if not self.jwks_url or alg not in ASYMMETRIC_ALGORITHMS:
            return []
        return await asyncio.to_thread(self._jwks_keys, alg, kid)

    def _jwks_keys(self, alg: str, kid: str | None) -> list[Any]:
        assert self.jwks_client is not None
        try:
            if kid:
                jwks = [self.jwks_client.get_signing_key(kid)]
            else:
                jwks = self.jwks_client.get_signing_keys()
            key_type = _key_types()[alg]
            return [j.key for j in jwks if isinstance(j.key, key_type)]
        except Exception as e:
            # an unknown kid, the endpoint unreachable, or answering something that
            # is not a usable key set (PyJWT then raises JSON, key-set or key errors
            # of several kinds): all mean this token cannot be verified by the JWKS
            # now. Only the type is logged: the messages may quote the URL or keys.
            log.warning("lims-bridge: JWKS lookup failed: %s", type(e).__name__)
            return []


# ---------------------------------------------------------------------------
# replay store


class ReplayStore:
    """Remembers used ``jti`` values until their token's ``exp`` has passed.

    Persisted as a small JSON file (mode 0600, written atomically) so a server
    restart does not make a used link usable again. Each entry also remembers
    the notebook the token opened, so a browser replaying its own link can be
    sent to the same notebook instead of being refused.

    The file is the truth, not this object's memory: every change locks it,
    re-reads it, checks and writes under the lock (:mod:`.statefile`), so servers
    sharing a state directory accept a ``jti`` exactly once between them and
    never drop each other's entries; reads pick up the other servers' changes.
    """

    def __init__(self, path: Path, leeway: int = 30) -> None:
        self.path = path
        self.leeway = leeway
        self._used: dict[str, dict[str, Any]] = {}
        self._seen: tuple[int, int, int] | None = None  # (inode, mtime, size) last read
        self._refresh()

    def _refresh(self) -> None:
        """Reload the file when another writer (or this one) changed it."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._used, self._seen = {}, None
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._seen:
            self._used = self._valid(read_json(self.path, dict))
            self._seen = stamp

    @staticmethod
    def _valid(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in data.items() if isinstance(v, dict)}

    def _forget_expired(self, used: dict[str, Any]) -> None:
        horizon = time.time() - self.leeway
        for jti in [k for k, v in used.items() if not isinstance(v, dict) or _exp(v) < horizon]:
            del used[jti]

    def _update(self, change: Any) -> None:
        self._used = self._valid(update_private_json(self.path, change))
        self._seen = None  # re-stat on the next read

    def get(self, jti: str) -> dict[str, Any] | None:
        self._refresh()
        entry = self._used.get(jti)
        if entry is None or _exp(entry) < time.time() - self.leeway:
            return None
        return entry

    def consume(self, jti: str, exp: int, **record: Any) -> bool:
        """Mark ``jti`` used. Returns False if it already was (check and set in one
        step, under the file's lock: exactly one of several servers wins)."""
        won = False

        def change(used: dict[str, Any]) -> bool:
            nonlocal won
            if isinstance(used.get(jti), dict):
                return False
            self._forget_expired(used)
            used[jti] = {"exp": exp, **record}
            won = True
            return True

        self._update(change)
        return won

    def update(self, jti: str, **record: Any) -> None:
        def change(used: dict[str, Any]) -> bool:
            if not isinstance(used.get(jti), dict):
                return False
            used[jti].update(record)
            return True

        self._update(change)

    def release(self, jti: str) -> None:
        """Forget ``jti`` again: the open it was consumed for wrote nothing."""
        self._update(lambda used: used.pop(jti, None) is not None)


def _exp(entry: dict[str, Any]) -> float:
    exp = entry.get("exp", 0)
    return exp if isinstance(exp, (int, float)) and not isinstance(exp, bool) else 0


# ---------------------------------------------------------------------------
# verification


class OpenTokenVerifier:
    """Checks an open token against this server's configuration.

    ``verify`` is pure: it does not consume the ``jti``. The caller consumes it
    through :attr:`replay` once it is about to act, so a dry run or a launch
    page render leaves the link usable.
    """

    def __init__(
        self,
        *,
        keys: KeySet,
        owner: str | None,
        audience: str,
        issuers: Iterable[str] = (),
        max_token_lifetime: int = 600,
        leeway: int = 30,
        replay: ReplayStore | None = None,
    ) -> None:
        self.keys = keys
        self.owner = owner
        self.audience = audience
        self.issuers = list(issuers)
        self.max_token_lifetime = max_token_lifetime
        self.leeway = leeway
        self.replay = replay

    async def verify(self, token: str | None) -> OpenRequest:
        """Verify ``token`` and return its request, or raise :class:`LimsError` (only)."""
        with _only_lims_errors():
            claims = await self._verify_signature(token)
            return self.check_claims(claims)

    async def verify_signature(self, token: str | None) -> dict[str, Any]:
        """Check signature, times, audience and issuer; return the raw claims.

        Raises only :class:`LimsError`."""
        with _only_lims_errors():
            return await self._verify_signature(token)

    async def _verify_signature(self, token: str | None) -> dict[str, Any]:
        import jwt

        if not token:
            raise LimsError("token_missing")
        if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
            raise LimsError("token_invalid", "The token is malformed or too large.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise LimsError("token_invalid", "The token is malformed.") from None
        alg = header.get("alg")
        kid = header.get("kid")
        if alg not in self.keys.algorithms:
            # covers "none", HS256 without a configured secret (algorithm
            # confusion: a public key used as an HMAC secret), and unknown algs
            raise LimsError("token_invalid", "The token's signing algorithm is not accepted.")
        if kid is not None and not isinstance(kid, str):
            raise LimsError("token_invalid", "The token's key id is malformed.")
        # the configured keys first: the JWKS (a network fetch that may fail) is
        # asked only when none of them verifies the token
        local = self.keys.local_candidates(alg)
        claims = self._decode(token, alg, local)
        tried = bool(local)
        if claims is None:
            remote = await self.keys.jwks_candidates(alg, kid)
            claims = self._decode(token, alg, remote)
            tried = tried or bool(remote)
        if claims is None:
            if not tried:
                raise LimsError("token_invalid", "No key of this server can verify the token.")
            raise LimsError("token_invalid", "The token's signature does not verify.")
        self._check_registered(claims)
        return claims

    def _decode(self, token: str, alg: str, keys: list[Any]) -> dict[str, Any] | None:
        """The claims, verified by the first of ``keys`` whose signature matches;
        None when none does. Raises :class:`LimsError` on any other failure."""
        import jwt

        options = {"require": ["exp", "iat", "sub", "aud", "jti"], "verify_nbf": True}
        for key in keys:
            try:
                return jwt.decode(
                    token,
                    key=key,
                    algorithms=[alg],
                    audience=self.audience,
                    issuer=self.issuers or None,
                    leeway=self.leeway,
                    options=options,
                )
            except jwt.InvalidSignatureError:
                continue  # another candidate key may have signed it
            except jwt.ExpiredSignatureError:
                # PyJWT checks the signature before the times: this key signed it,
                # so the error page may offer the way back to the entry it names
                raise LimsError(
                    "token_expired",
                    "The link has expired.",
                    claims=_expired_claims(token, key, alg),
                ) from None
            except jwt.ImmatureSignatureError:
                raise LimsError(
                    "token_expired", "The token is not valid yet (check the clocks)."
                ) from None
            except jwt.InvalidAudienceError:
                raise LimsError("wrong_audience") from None
            except jwt.InvalidIssuerError:
                raise LimsError("unknown_issuer") from None
            except jwt.MissingRequiredClaimError as e:
                raise LimsError(
                    "token_invalid", f"The token lacks the {e.claim!r} claim."
                ) from None
            except (jwt.InvalidKeyError, jwt.PyJWTError, ValueError, TypeError):
                raise LimsError("token_invalid", "The token is malformed.") from None
        return None

    def _check_registered(self, claims: dict[str, Any]) -> None:
        for name in ("sub", "jti"):
            if not isinstance(claims.get(name), str) or not claims[name]:
                raise LimsError("token_invalid", f"The token's {name!r} claim is malformed.")
        for name in ("iat", "exp"):
            if not isinstance(claims.get(name), int) or isinstance(claims[name], bool):
                raise LimsError("token_invalid", f"The token's {name!r} claim is malformed.")
        if claims["exp"] - claims["iat"] > self.max_token_lifetime:
            raise LimsError(
                "token_expired",
                f"The token lives longer than the {self.max_token_lifetime} s this server allows.",
            )
        if claims["iat"] > time.time() + self.leeway:
            raise LimsError(
                "token_expired", "The token was issued in the future (check the clocks)."
            )

    def check_claims(self, claims: dict[str, Any]) -> OpenRequest:
        """Check owner and LIMS claims of signature-verified ``claims``.

        ``owner=None`` (the hub, which serves every user) skips the owner check:
        the caller maps ``sub`` to a user itself.
        """
        if self.owner is not None and claims["sub"] != self.owner:
            # the claims are signed, so the error page may offer the way back to the ELN
            raise LimsError("wrong_user", claims=claims)
        try:
            entity = parse_entity(claims.get("entity"))
            notebook = parse_notebook(claims.get("notebook"))
            data = parse_data(claims.get("data"))
            return_to = parse_return(claims.get("return"))
        except LimsError as e:
            e.claims = claims
            raise
        extra = {k: v for k, v in claims.items() if k not in REGISTERED_CLAIMS + LIMS_CLAIMS}
        return OpenRequest(
            sub=claims["sub"],
            jti=claims["jti"],
            iat=claims["iat"],
            exp=claims["exp"],
            iss=claims.get("iss"),
            entity=entity,
            notebook=notebook,
            data=data,
            extra=extra,
            return_to=return_to,
        )


def _expired_claims(token: str, key: Any, alg: str) -> dict[str, Any] | None:
    """The claims of an expired token whose signature ``key`` verified: only its
    ``entity`` (for the way back), never trusted for anything else."""
    import jwt  # loaded by the first token verified, not with the extension

    try:
        claims = jwt.decode(
            token, key=key, algorithms=[alg], options={"verify_exp": False, "verify_aud": False}
        )
    except jwt.PyJWTError:
        return None
    entity = claims.get("entity")
    return {"entity": entity} if isinstance(entity, dict) else None


@contextmanager
def _only_lims_errors() -> Iterator[None]:
    """Turn any unexpected failure of verification into ``token_invalid``.

    Callers (handlers, the hub) then deal with one error type, and no stray
    exception carries a token into a traceback or a log line."""
    try:
        yield
    except LimsError:
        raise
    except Exception as e:
        log.warning("lims-bridge: token verification failed unexpectedly: %s", type(e).__name__)
        raise LimsError("token_invalid", "The token could not be verified.") from None


# ---------------------------------------------------------------------------
# LIMS claims


def build_verifier(
    options: Any, *, owner: str | None, replay: ReplayStore | None = None
) -> OpenTokenVerifier:
    """The verifier for ``options``: anything with the key and claim options of
    DESIGN (``public_keys``, ``jwks_url``, ``hmac_secret``, ``audience``,
    ``issuers``, ``max_token_lifetime``, ``leeway``) as attributes. The server
    extension, ``jupyter lims-bridge verify`` and the hub side (``owner=None``:
    any user, mapped by the caller) build theirs here, so a token is judged the
    same way everywhere."""
    return OpenTokenVerifier(
        keys=KeySet(options.public_keys, options.jwks_url, options.hmac_secret),
        owner=owner,
        audience=options.audience,
        issuers=options.issuers,
        max_token_lifetime=options.max_token_lifetime,
        leeway=options.leeway,
        replay=replay,
    )


def _bad(message: str) -> LimsError:
    return LimsError("bad_claims", message)


def _optional_str(obj: dict[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise _bad(f"{where}.{key} must be a string.")
    return value


def parse_entity(raw: Any) -> Entity:
    if not isinstance(raw, dict):
        raise _bad("The token has no 'entity' object.")
    for key in ("type", "id"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise _bad(f"entity.{key} must be a non-empty string.")
    url = _optional_str(raw, "url", "entity")
    if url is not None and not re.match(r"^https?://", url, re.IGNORECASE):
        raise _bad("entity.url must be an http(s) URL.")
    return Entity(
        type=raw["type"], id=raw["id"], title=_optional_str(raw, "title", "entity"), url=url
    )


def parse_notebook(raw: Any) -> NotebookSpec:
    if raw is None:
        return NotebookSpec()
    if not isinstance(raw, dict):
        raise _bad("'notebook' must be an object.")
    path = _optional_str(raw, "path", "notebook")
    template = _optional_str(raw, "template", "notebook") or "default"
    new = raw.get("new", False)
    if not isinstance(new, bool):
        raise _bad("notebook.new must be true or false.")
    if path is not None and not path.endswith(".ipynb"):
        raise _bad("notebook.path must end in .ipynb.")
    if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$", template):
        raise _bad("notebook.template must be a plain template name.")
    return NotebookSpec(path=path, template=template, new=new)


def parse_data(raw: Any) -> tuple[DataItem, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _bad("'data' must be a list.")
    items = []
    for i, entry in enumerate(raw):
        where = f"data[{i}]"
        if not isinstance(entry, dict):
            raise _bad(f"{where} must be an object.")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(f"{where}.name must be a non-empty string.")
        mount = _optional_str(entry, "mount", where)
        path = _optional_str(entry, "path", where)
        url = _optional_str(entry, "url", where)
        sha256 = _optional_str(entry, "sha256", where)
        size = entry.get("size")
        if url is not None:
            if mount is not None or path is not None:
                raise _bad(f"{where} must have either 'url' or 'mount' and 'path', not both.")
            if sha256 is not None and not _SHA256_RE.match(sha256):
                raise _bad(f"{where}.sha256 must be 64 hexadecimal digits.")
            if size is not None and (
                not isinstance(size, int) or isinstance(size, bool) or size < 0
            ):
                raise _bad(f"{where}.size must be a non-negative integer.")
        elif mount is None or path is None:
            raise _bad(f"{where} must have either 'url' or 'mount' and 'path'.")
        items.append(
            DataItem(
                name=name,
                mount=mount,
                path=path,
                url=url,
                sha256=sha256.lower() if sha256 else None,
                size=size,
            )
        )
    names = [item.name for item in items]
    if len(set(names)) != len(names):
        raise _bad("Two data items have the same name.")
    return tuple(items)


def parse_return(raw: Any) -> ReturnSpec | None:
    """The ``return`` claim's shape: ``url`` (http(s)), ``grant`` (non-empty), ``expires``
    (optional Unix time). Messages never quote the values."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _bad("'return' must be an object.")
    url, grant, expires = raw.get("url"), raw.get("grant"), raw.get("expires")
    if (
        not isinstance(url, str)
        or len(url) > MAX_RETURN_URL_LENGTH
        or not re.match(r"^https?://[^\s]+$", url, re.IGNORECASE)
    ):
        raise _bad("return.url must be an http(s) URL.")
    if not isinstance(grant, str) or not grant.strip() or len(grant) > MAX_GRANT_LENGTH:
        raise _bad(
            f"return.grant must be a non-empty string of at most {MAX_GRANT_LENGTH} characters."
        )
    if not re.fullmatch(r"[\x21-\x7e]+", grant):
        # it travels in an HTTP header: printable ASCII, no spaces
        raise _bad("return.grant must be printable ASCII without spaces.")
    if expires is not None and (not isinstance(expires, int) or isinstance(expires, bool)):
        raise _bad("return.expires must be a Unix time in seconds.")
    return ReturnSpec(url=url, grant=grant, expires=expires)
