"""Open-token verification, without a server: every refusal of DESIGN.md with its reason."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from tornado import httpserver, ioloop, netutil, web

from jupyter_lims_bridge import signing
from jupyter_lims_bridge.claims import KeySet, OpenTokenVerifier, ReplayStore
from jupyter_lims_bridge.errors import LimsError

ENTITY = {"type": "sample", "id": "S-42"}


def public_pem(private_key) -> str:
    return signing.public_pem_of(private_key).decode()


def make_verifier(*public_keys, owner="alice", hmac_secret=None, jwks_url=None, **kw):
    keys = KeySet(
        [public_pem(k) for k in public_keys],
        jwks_url=jwks_url,
        hmac_secret=hmac_secret,
        jwks_refetch_cooldown=0,
    )
    return OpenTokenVerifier(keys=keys, owner=owner, audience="jupyter-lims-bridge", **kw)


def claims(**overrides):
    base = signing.make_claims(sub="alice", entity=dict(ENTITY))
    for k, v in overrides.items():
        if v is None:
            base.pop(k, None)
        else:
            base[k] = v
    return base


def verify(verifier, token):
    return asyncio.run(verifier.verify(token))


def refusal(verifier, token) -> LimsError:
    with pytest.raises(LimsError) as info:
        verify(verifier, token)
    return info.value


@pytest.fixture(scope="module")
def ed_key():
    return ed25519.Ed25519PrivateKey.generate()


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# -- accepted ------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_key",
    [
        ed25519.Ed25519PrivateKey.generate,
        lambda: ec.generate_private_key(ec.SECP256R1()),
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    ],
    ids=["EdDSA", "ES256", "RS256"],
)
def test_each_asymmetric_algorithm_is_accepted(make_key):
    # Given a key of each supported type and a verifier holding its public key
    key = make_key()
    verifier = make_verifier(key)
    # When a token signed with it is verified
    request = verify(verifier, signing.sign_claims(claims(), key))
    # Then its claims come back typed
    assert request.sub == "alice"
    assert request.entity.id == "S-42"


def test_unknown_claims_are_kept_as_extra(ed_key):
    token = signing.sign_claims(claims(project="P-7", tags=["a"]), ed_key)
    assert verify(make_verifier(ed_key), token).extra == {"project": "P-7", "tags": ["a"]}


def test_hs256_only_with_an_explicit_secret():
    secret = "s3cret-per-user-0123456789abcdef"
    token = jwt.encode(claims(), secret, algorithm="HS256")
    assert verify(make_verifier(hmac_secret=secret), token).sub == "alice"
    assert (
        refusal(make_verifier(ed25519.Ed25519PrivateKey.generate()), token).reason
        == "token_invalid"
    )


# -- token_missing / token_invalid ---------------------------------------------


def test_missing_token(ed_key):
    assert refusal(make_verifier(ed_key), None).reason == "token_missing"
    assert refusal(make_verifier(ed_key), "").reason == "token_missing"


@pytest.mark.parametrize("garbage", ["abc", "a.b.c", "....", "eyJhbGciOiJ9.e30.", "💥"])
def test_malformed_tokens(ed_key, garbage):
    error = refusal(make_verifier(ed_key), garbage)
    assert (error.reason, error.status) == ("token_invalid", 401)


def test_oversized_token_is_refused_before_parsing(ed_key):
    token = signing.sign_claims(claims(padding="x" * 20000), ed_key)
    assert len(token) > 16 * 1024
    assert refusal(make_verifier(ed_key), token).reason == "token_invalid"


def test_alg_none_is_refused(ed_key):
    token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}."
    assert refusal(make_verifier(ed_key), token).reason == "token_invalid"


def test_algorithm_confusion_public_key_as_hmac_secret_is_refused():
    # Given an RSA verifier, When an attacker signs HS256 using the *public* PEM as secret
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = public_pem(key).encode()
    header = {"alg": "HS256", "typ": "JWT"}
    import hashlib
    import hmac

    signing_input = f"{b64(header)}.{b64(claims())}"
    sig = (
        base64.urlsafe_b64encode(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())
        .rstrip(b"=")
        .decode()
    )
    # Then it is refused
    assert refusal(make_verifier(key), f"{signing_input}.{sig}").reason == "token_invalid"


def test_tampered_payload_is_refused(ed_key):
    token = signing.sign_claims(claims(), ed_key)
    header, _, sig = token.split(".")
    forged = f"{header}.{b64(claims(sub='mallory'))}.{sig}"
    assert refusal(make_verifier(ed_key, owner="mallory"), forged).reason == "token_invalid"


def test_signed_by_an_unknown_key_is_refused(ed_key):
    other = ed25519.Ed25519PrivateKey.generate()
    assert (
        refusal(make_verifier(ed_key), signing.sign_claims(claims(), other)).reason
        == "token_invalid"
    )


def test_no_configured_key_refuses_everything(ed_key):
    verifier = OpenTokenVerifier(keys=KeySet(), owner="alice", audience="jupyter-lims-bridge")
    assert refusal(verifier, signing.sign_claims(claims(), ed_key)).reason == "token_invalid"


@pytest.mark.parametrize("name", ["sub", "aud", "exp", "iat", "jti"])
def test_missing_registered_claim_is_token_invalid(ed_key, name):
    token = signing.sign_claims(claims(**{name: None}), ed_key)
    error = refusal(make_verifier(ed_key), token)
    assert (error.reason, error.status) == ("token_invalid", 401)


@pytest.mark.parametrize(
    "override", [{"sub": 42}, {"jti": 7}, {"jti": ""}, {"iat": "yesterday"}, {"exp": 1.5e10}]
)
def test_ill_typed_registered_claim_is_token_invalid(ed_key, override):
    error = refusal(make_verifier(ed_key), signing.sign_claims(claims(**override), ed_key))
    assert error.reason == "token_invalid"


# -- time -----------------------------------------------------------------------


def test_expired_token(ed_key):
    now = int(time.time())
    token = signing.sign_claims(claims(iat=now - 400, exp=now - 100), ed_key)
    error = refusal(make_verifier(ed_key, leeway=30), token)
    assert (error.reason, error.status) == ("token_expired", 401)


def test_expiry_within_leeway_is_accepted(ed_key):
    now = int(time.time())
    token = signing.sign_claims(claims(iat=now - 300, exp=now - 10), ed_key)
    assert verify(make_verifier(ed_key, leeway=30), token).sub == "alice"


def test_issued_in_the_future(ed_key):
    now = int(time.time())
    token = signing.sign_claims(claims(iat=now + 120, exp=now + 300), ed_key)
    assert refusal(make_verifier(ed_key, leeway=30), token).reason == "token_expired"


def test_not_before_in_the_future(ed_key):
    now = int(time.time())
    token = signing.sign_claims(claims(nbf=now + 120), ed_key)
    assert refusal(make_verifier(ed_key, leeway=30), token).reason == "token_expired"


def test_lifetime_longer_than_allowed(ed_key):
    now = int(time.time())
    token = signing.sign_claims(claims(iat=now, exp=now + 3600), ed_key)
    assert refusal(make_verifier(ed_key, max_token_lifetime=600), token).reason == "token_expired"


# -- audience, issuer, user ---------------------------------------------------


def test_wrong_audience(ed_key):
    token = signing.sign_claims(claims(aud="another-app"), ed_key)
    error = refusal(make_verifier(ed_key), token)
    assert (error.reason, error.status) == ("wrong_audience", 401)


def test_issuer_must_be_listed_when_issuers_are_set(ed_key):
    token = signing.sign_claims(claims(iss="https://evil.example"), ed_key)
    verifier = make_verifier(ed_key, issuers=["https://eln.example.org"])
    assert refusal(verifier, token).reason == "unknown_issuer"
    good = signing.sign_claims(claims(iss="https://eln.example.org"), ed_key)
    assert verify(verifier, good).iss == "https://eln.example.org"


def test_wrong_user_carries_the_signed_claims_for_the_error_page(ed_key):
    token = signing.sign_claims(claims(sub="bob"), ed_key)
    error = refusal(make_verifier(ed_key, owner="alice"), token)
    assert (error.reason, error.status) == ("wrong_user", 403)
    assert error.claims["sub"] == "bob"


# -- LIMS claims -----------------------------------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        {"entity": None},
        {"entity": "S-42"},
        {"entity": {"type": "sample"}},
        {"entity": {"type": "", "id": "S-42"}},
        {"entity": {"type": "sample", "id": 42}},
        {"entity": {"type": "sample", "id": "S-42", "url": "javascript:alert(1)"}},
        {"notebook": "x.ipynb"},
        {"notebook": {"path": 3}},
        {"notebook": {"path": "x.txt"}},
        {"notebook": {"new": "yes"}},
        {"notebook": {"template": "../../etc/passwd"}},
        {"data": {"name": "x"}},
        {"data": ["x"]},
        {"data": [{"name": "x"}]},
        {"data": [{"name": "x", "mount": "archive"}]},
        {"data": [{"name": "x", "url": "https://a/x", "mount": "m", "path": "p"}]},
        {"data": [{"name": "x", "url": "https://a/x", "sha256": "abc"}]},
        {"data": [{"name": "x", "url": "https://a/x", "size": -1}]},
        {"data": [{"name": "x", "url": "https://a/x", "size": True}]},
        {"data": [{"name": "x", "url": "https://a/x"}, {"name": "x", "url": "https://a/y"}]},
    ],
)
def test_bad_lims_claims(ed_key, override):
    error = refusal(make_verifier(ed_key), signing.sign_claims(claims(**override), ed_key))
    assert (error.reason, error.status) == ("bad_claims", 422)


# -- JWKS -----------------------------------------------------------------------


class JWKSServer:
    """A JWKS endpoint on 127.0.0.1 that counts its requests."""

    def __init__(self) -> None:
        self.keys: list[dict] = []
        #: when set, answered instead of ``{"keys": keys}`` (a broken endpoint)
        self.body: bytes | None = None
        self.requests = 0
        sockets = netutil.bind_sockets(0, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(asyncio.new_event_loop())
            outer = self

            class Handler(web.RequestHandler):
                def get(self) -> None:
                    outer.requests += 1
                    if outer.body is not None:
                        self.set_header("Content-Type", "application/json")
                        self.write(outer.body)
                    else:
                        self.write({"keys": outer.keys})

            server = httpserver.HTTPServer(web.Application([(r"/jwks", Handler)]))
            server.add_sockets(sockets)
            self.loop = ioloop.IOLoop.current()
            ready.set()
            self.loop.start()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        ready.wait(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks"

    def add(self, private_key, kid: str) -> None:
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(private_key.public_key()))
        self.keys.append({**jwk, "kid": kid, "use": "sig", "alg": "EdDSA"})

    def stop(self) -> None:
        self.loop.add_callback(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def jwks_server():
    server = JWKSServer()
    yield server
    server.stop()


def test_jwks_key_by_kid_is_cached_and_refetched_once_on_an_unknown_kid(jwks_server):
    # Given a JWKS with one key
    first, second = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    jwks_server.add(first, "k1")
    verifier = make_verifier(jwks_url=jwks_server.url)
    # When two tokens with that kid are verified, Then the JWKS was fetched once
    for _ in range(2):
        assert verify(verifier, signing.sign_claims(claims(), first, kid="k1")).sub == "alice"
    assert jwks_server.requests == 1
    # When the LIMS rotates in a new key, Then a token with the new kid refetches once
    jwks_server.add(second, "k2")
    assert verify(verifier, signing.sign_claims(claims(), second, kid="k2")).sub == "alice"
    assert jwks_server.requests == 2


def test_jwks_unknown_kid_is_token_invalid(jwks_server):
    jwks_server.add(ed25519.Ed25519PrivateKey.generate(), "k1")
    stranger = ed25519.Ed25519PrivateKey.generate()
    verifier = make_verifier(jwks_url=jwks_server.url)
    token = signing.sign_claims(claims(), stranger, kid="nope")
    assert refusal(verifier, token).reason == "token_invalid"


def test_jwks_unreachable_is_token_invalid():
    port = netutil.bind_sockets(0, "127.0.0.1")[0]
    url = f"http://127.0.0.1:{port.getsockname()[1]}/jwks"
    port.close()
    key = ed25519.Ed25519PrivateKey.generate()
    verifier = make_verifier(jwks_url=url)
    assert refusal(verifier, signing.sign_claims(claims(), key, kid="k")).reason == "token_invalid"


#: What a broken JWKS endpoint has been seen to answer.
BROKEN_JWKS = {
    "html": b"<html><body>502 Bad Gateway</body></html>",
    "truncated": b'{"keys": [{"kty": "OKP", ',
    "not_an_object": b"[1, 2, 3]",
    "keys_not_a_list": b'{"keys": "none"}',
    "no_keys": b'{"keys": []}',
    "unusable_key": b'{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "!!", "kid": "k"}]}',
    "unknown_kty": b'{"keys": [{"kty": "XYZ", "kid": "k"}]}',
}


@pytest.mark.parametrize("answer", BROKEN_JWKS.values(), ids=BROKEN_JWKS.keys())
def test_broken_jwks_is_a_warning_and_a_pem_key_still_verifies(jwks_server, ed_key, answer, caplog):
    # Given a verifier with a PEM key and a JWKS endpoint answering garbage
    jwks_server.body = answer
    verifier = make_verifier(ed_key, jwks_url=jwks_server.url)
    caplog.set_level(logging.DEBUG)
    # When a token signed by the PEM key comes (with a kid, as JWKS users send)
    token = signing.sign_claims(claims(), ed_key, kid="k")
    # Then it is accepted, and the JWKS was not even asked
    assert verify(verifier, token).sub == "alice"
    assert jwks_server.requests == 0
    # When a token that only the JWKS could verify comes
    stranger = ed25519.Ed25519PrivateKey.generate()
    for kid in ("k", None):
        other = signing.sign_claims(claims(), stranger, kid=kid)
        # Then it is refused with our error (not a JSON or key error), and a
        # warning says the lookup failed, without the token or the URL
        assert refusal(verifier, other).reason == "token_invalid"
        logged = caplog.text
        assert "JWKS lookup failed" in logged
        assert other not in logged and other.split(".")[1] not in logged
        ours = [r.getMessage() for r in caplog.records if r.name.startswith("jupyter_lims_bridge")]
        assert not any("/jwks" in line for line in ours)
    assert jwks_server.requests >= 1


def test_pem_key_verifies_without_the_jwks_even_when_it_is_unreachable(ed_key):
    # Given a JWKS URL nothing listens on, and a PEM key
    port = netutil.bind_sockets(0, "127.0.0.1")[0]
    url = f"http://127.0.0.1:{port.getsockname()[1]}/jwks"
    port.close()
    verifier = make_verifier(ed_key, jwks_url=url)
    # Then a token of the PEM key verifies
    assert verify(verifier, signing.sign_claims(claims(), ed_key)).sub == "alice"


def test_verify_raises_only_lims_errors(ed_key, monkeypatch):
    # Given a key set whose lookup fails in a way nobody foresaw
    verifier = make_verifier(ed_key)
    token = signing.sign_claims(claims(), ed_key)

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(jwt, "decode", boom)
    # Then verify and verify_signature raise LimsError, not RuntimeError
    assert refusal(verifier, token).reason == "token_invalid"
    with pytest.raises(LimsError):
        asyncio.run(verifier.verify_signature(token))


# -- replay store ---------------------------------------------------------------


def test_replay_store_survives_a_restart_and_forgets_expired_entries(tmp_path):
    path = tmp_path / "state" / "used_jti.json"
    store = ReplayStore(path)
    now = int(time.time())
    assert store.consume("a", now + 300, path="lims/x.ipynb")
    assert store.consume("old", now - 3600)
    assert not store.consume("a", now + 300)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    # When the server restarts
    restarted = ReplayStore(path)
    # Then a used jti stays used, and one long expired is forgotten
    assert restarted.get("a")["path"] == "lims/x.ipynb"
    assert restarted.get("old") is None


RACE_ROUNDS = 150


def _race_worker(path: str, name: str, barrier, wins) -> None:
    """One server's replay store: consumes the shared jti of each round, and one of its own."""
    from pathlib import Path as _Path

    store = ReplayStore(_Path(path))  # loaded once at start, as a server does
    exp = int(time.time()) + 600
    won = []
    for i in range(RACE_ROUNDS):
        barrier.wait(10)
        if store.consume(f"shared-{i}", exp, path=f"{name}.ipynb"):
            won.append(i)
        assert store.consume(f"{name}-{i}", exp)
    wins.put((name, won))


def test_two_servers_sharing_a_state_dir_accept_each_jti_once_and_lose_nothing(tmp_path):
    # Given two server processes whose replay stores share one file
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    path = tmp_path / "state" / "used_jti.json"
    barrier, wins = ctx.Barrier(2), ctx.Queue()
    workers = [
        ctx.Process(target=_race_worker, args=(str(path), name, barrier, wins))
        for name in ("a", "b")
    ]
    # When both consume the same jti at the same moment, round after round
    for w in workers:
        w.start()
    results = dict(wins.get(timeout=120) for _ in workers)
    for w in workers:
        w.join(30)
        assert w.exitcode == 0
    # Then each shared jti was accepted exactly once between them
    assert sorted(results["a"] + results["b"]) == list(range(RACE_ROUNDS))
    # and no entry of either was lost from the file
    stored = ReplayStore(path)
    for i in range(RACE_ROUNDS):
        assert stored.get(f"a-{i}") and stored.get(f"b-{i}")
        winner = "a" if i in results["a"] else "b"
        assert stored.get(f"shared-{i}")["path"] == f"{winner}.ipynb"
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_jti_used_by_another_server_is_seen_as_used(tmp_path):
    # Given two stores on one file, both loaded before either consumed anything
    path = tmp_path / "used_jti.json"
    first, second = ReplayStore(path), ReplayStore(path)
    exp = int(time.time()) + 300
    # When the first server consumes a jti
    assert first.consume("j", exp, path="lims/x.ipynb")
    # Then the second sees it (for the launch page) and cannot consume it again
    assert second.get("j")["path"] == "lims/x.ipynb"
    assert not second.consume("j", exp)
    # and releasing or updating on one never drops the other's entries
    assert second.consume("k", exp)
    first.update("j", path="lims/x-1.ipynb")
    first.release("nothing")
    assert ReplayStore(path).get("k") and ReplayStore(path).get("j")["path"] == "lims/x-1.ipynb"


def test_private_key_pem_loading_accepts_text_and_files(tmp_path):
    private_pem, _ = signing.generate_key_pair()
    (tmp_path / "k.pem").write_bytes(private_pem)
    for source in (tmp_path / "k.pem", private_pem.decode(), private_pem):
        key = signing.load_private_key(source)
        assert isinstance(key, ed25519.Ed25519PrivateKey)
    assert serialization  # the PEM helpers stay importable for integrators
