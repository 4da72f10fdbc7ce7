"""LimsAuthenticator without a running hub: JupyterHub's own login pipeline
(``Authenticator.get_authenticated_user``: authenticate, normalize, block and
allow lists) over the shared verifier, with real signed tokens."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from jupyter_lims_bridge import signing
from jupyter_lims_bridge.errors import LimsError
from jupyter_lims_bridge.hub import LimsAuthenticator
from jupyter_lims_bridge.hub.nexturl import safe_next_url, token_from_next
from jupyter_lims_bridge.hub.replay import StoreFull, UsedTokens

ENTITY = {"type": "sample", "id": "S-42", "title": "Buffer screen 3"}


@pytest.fixture(scope="module")
def lims_key():
    private_pem, public_pem = signing.generate_key_pair()
    return signing.load_private_key(private_pem), public_pem.decode()


@pytest.fixture
def auth(lims_key) -> LimsAuthenticator:
    return LimsAuthenticator(public_keys=[lims_key[1]])


def token_for(key, sub="alice", **kw) -> str:
    kw.setdefault("entity", dict(ENTITY))
    return signing.make_token(key, sub=sub, **kw)


def login(auth: LimsAuthenticator, token: str | None):
    """JupyterHub's login pipeline for form data ``{"lims_token": token}``."""
    return asyncio.run(auth.get_authenticated_user(None, {"lims_token": token}))


def refusal(auth: LimsAuthenticator, token: str | None) -> LimsError:
    with pytest.raises(LimsError) as info:
        login(auth, token)
    if token:
        assert token not in str(info.value) and token not in repr(info.value.to_json())
    return info.value


# -- logging in -----------------------------------------------------------------


def test_a_valid_token_logs_its_user_in(auth, lims_key):
    assert login(auth, token_for(lims_key[0]))["name"] == "alice"


@pytest.mark.parametrize(
    "make_key, alg",
    [
        (lambda: ec.generate_private_key(ec.SECP256R1()), "ES256"),
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
    ],
)
def test_es256_and_rs256_keys_log_in_too(make_key, alg):
    key = make_key()
    auth = LimsAuthenticator(public_keys=[signing.public_pem_of(key).decode()])
    token = token_for(key, sub="bob")
    assert jwt.get_unverified_header(token)["alg"] == alg
    assert login(auth, token)["name"] == "bob"


def test_the_second_login_with_one_token_is_refused_as_replayed(auth, lims_key):
    token = token_for(lims_key[0])
    assert login(auth, token)["name"] == "alice"
    error = refusal(auth, token)
    assert (error.reason, error.status) == ("token_replayed", 401)


def test_checking_a_token_for_the_launch_page_uses_nothing_up(auth, lims_key):
    token = token_for(lims_key[0])
    for _ in range(3):
        asyncio.run(auth.check_token(token))
    assert login(auth, token)["name"] == "alice"


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"lifetime": -120}, "token_expired"),
        ({"audience": "another-app"}, "wrong_audience"),
        ({"lifetime": 3600}, "token_expired"),  # longer than max_token_lifetime
    ],
)
def test_bad_tokens_are_refused_with_the_reasons_of_design(auth, lims_key, change, reason):
    assert refusal(auth, token_for(lims_key[0], **change)).reason == reason


def test_a_token_signed_by_another_key_is_invalid(auth):
    other, _ = signing.generate_key_pair()
    error = refusal(auth, token_for(signing.load_private_key(other)))
    assert (error.reason, error.status) == ("token_invalid", 401)


def test_no_token_is_token_missing(auth):
    assert refusal(auth, None).reason == "token_missing"


def test_an_unknown_issuer_is_refused(lims_key):
    auth = LimsAuthenticator(public_keys=[lims_key[1]], issuers=["https://eln.example.org"])
    assert (
        refusal(auth, token_for(lims_key[0], issuer="https://evil.example")).reason
        == "unknown_issuer"
    )
    assert login(auth, token_for(lims_key[0], issuer="https://eln.example.org"))["name"] == "alice"


def test_hs256_only_when_a_secret_is_configured(lims_key):
    secret = "s" * 40
    token = token_for(secret)
    assert refusal(LimsAuthenticator(public_keys=[lims_key[1]]), token).reason == "token_invalid"
    assert login(LimsAuthenticator(hmac_secret=secret), token)["name"] == "alice"


def test_a_token_without_the_lims_claims_is_refused(auth, lims_key):
    claims = signing.make_claims(sub="alice", entity=dict(ENTITY))
    del claims["entity"]
    assert refusal(auth, signing.sign_claims(claims, lims_key[0])).reason == "bad_claims"


# -- user names --------------------------------------------------------------------


def test_Alice_is_refused_rather_than_logged_in_as_alice(auth, lims_key):
    # Given the default strict_username: the user's server compares sub exactly,
    # and a LIMS account "Alice" may not be the person "alice"
    error = refusal(auth, token_for(lims_key[0], sub="Alice"))
    assert error.reason == "wrong_user"
    assert "'alice'" in error.message and "'Alice'" in error.message


def test_without_strict_usernames_Alice_is_normalised_to_alice(lims_key):
    auth = LimsAuthenticator(public_keys=[lims_key[1]], strict_username=False)
    assert login(auth, token_for(lims_key[0], sub="Alice"))["name"] == "alice"


def test_names_colliding_after_normalisation_never_share_a_user_when_strict(lims_key):
    # Given username_map sends the LIMS's "a.smith" to the hub user "alice"
    auth = LimsAuthenticator(public_keys=[lims_key[1]], username_map={"a.smith": "alice"})
    # then only the name that needs no normalisation logs in as alice
    assert login(auth, token_for(lims_key[0], sub="alice"))["name"] == "alice"
    for colliding in ("a.smith", "ALICE", "Alice"):
        assert refusal(auth, token_for(lims_key[0], sub=colliding)).reason == "wrong_user"


def test_names_colliding_after_normalisation_map_to_one_user_when_not_strict(lims_key):
    auth = LimsAuthenticator(
        public_keys=[lims_key[1]], username_map={"a.smith": "alice"}, strict_username=False
    )
    names = {
        login(auth, token_for(lims_key[0], sub=s))["name"] for s in ("a.smith", "ALICE", "alice")
    }
    assert names == {"alice"}


def test_allow_lists_apply_after_normalisation(lims_key):
    auth = LimsAuthenticator(public_keys=[lims_key[1]], allow_all=False, allowed_users={"alice"})
    assert login(auth, token_for(lims_key[0], sub="alice"))["name"] == "alice"
    assert login(auth, token_for(lims_key[0], sub="bob")) is None  # JupyterHub: not allowed


def test_blocked_users_cannot_log_in(lims_key):
    auth = LimsAuthenticator(public_keys=[lims_key[1]], blocked_users={"mallory"})
    assert login(auth, token_for(lims_key[0], sub="mallory")) is None


def test_anyone_the_lims_signs_for_may_log_in_by_default(auth):
    assert auth.allow_all is True


def test_username_claim_is_used_without_falling_back_to_sub(lims_key):
    auth = LimsAuthenticator(public_keys=[lims_key[1]], username_claim="preferred_username")
    with_claim = token_for(lims_key[0], sub="u-1234", extra={"preferred_username": "carol"})
    assert login(auth, with_claim)["name"] == "carol"
    error = refusal(auth, token_for(lims_key[0], sub="carol"))
    assert error.reason == "bad_claims" and "preferred_username" in error.message


@pytest.mark.parametrize("claim", ["jti", "aud", "entity", ""])
def test_username_claim_must_be_able_to_name_a_user(claim):
    with pytest.raises(Exception, match="cannot name a user"):
        LimsAuthenticator(username_claim=claim)


def test_an_invalid_user_name_is_refused(lims_key):
    auth = LimsAuthenticator(public_keys=[lims_key[1]], username_pattern=r"^[a-z]+$")
    assert refusal(auth, token_for(lims_key[0], sub="bob7")).reason == "bad_claims"


# -- the hub-side store of login uses --------------------------------------------


def test_login_uses_are_forgotten_when_their_token_could_no_longer_verify():
    now = [1000.0]
    store = UsedTokens(max_entries=10, clock=lambda: now[0])
    assert store.consume("a", expires_at=1100)
    assert not store.consume("a", expires_at=1100)
    now[0] = 1101
    assert len(store) == 0
    assert store.consume("a", expires_at=1200)


def test_a_full_store_refuses_new_logins_rather_than_forget_a_live_one(lims_key):
    store = UsedTokens(max_entries=2)
    store.consume("a", 10**12)
    store.consume("b", 10**12)
    with pytest.raises(StoreFull):
        store.consume("c", 10**12)
    assert not store.consume("a", 10**12)
    auth = LimsAuthenticator(public_keys=[lims_key[1]], replay_store_size=1)
    login(auth, token_for(lims_key[0]))
    assert refusal(auth, token_for(lims_key[0])).reason == "too_many_attempts"


def test_the_store_entry_lives_for_the_tokens_lifetime_plus_leeway(auth, lims_key):
    token = token_for(lims_key[0], lifetime=300)
    login(auth, token)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert list(auth.used_tokens._expiry.values()) == [exp + auth.leeway]


def test_the_verifier_and_its_jwks_client_are_built_once():
    auth = LimsAuthenticator(jwks_url="http://127.0.0.1:9/jwks.json")
    assert auth.verifier is auth.verifier
    assert auth.verifier.keys.jwks_client is auth.verifier.keys.jwks_client is not None
    assert auth.verifier.owner is None


# -- the pages' handlers and next ----------------------------------------------------


def test_the_login_page_and_the_login_endpoint_are_registered():
    routes = [h[0] for h in LimsAuthenticator().get_handlers(None)]
    assert routes[:2] == [r"/login", r"/lims/login"]


DEEP = "/hub/user-redirect/lims/open?lims_token=abc.def.ghi"


@pytest.mark.parametrize(
    "next_url",
    [
        DEEP,
        "/user/alice/lims/open?lims_token=abc.def.ghi",
        "/hub/user-redirect/lims/open?lims_token=abc.def.ghi&extra=1",
    ],
)
def test_deep_links_of_this_hub_are_accepted_as_next(next_url):
    assert safe_next_url(next_url, base_url="/", username="alice") == next_url


@pytest.mark.parametrize(
    "next_url",
    [
        "//evil.example/hub/user-redirect/lims/open?lims_token=x",
        "///evil.example/hub/user-redirect/lims/open?lims_token=x",
        "\\\\evil.example/hub/user-redirect/lims/open?lims_token=x",
        "/\\evil.example/hub/user-redirect/lims/open?lims_token=x",
        "\\/evil.example/hub/user-redirect/lims/open?lims_token=x",
        "https://evil.example/hub/user-redirect/lims/open?lims_token=x",
        "http://127.0.0.1/hub/user-redirect/lims/open?lims_token=x",
        "javascript:alert(1)//hub/user-redirect/lims/open?lims_token=x",
        "/%2F%2Fevil.example/hub/user-redirect/lims/open?lims_token=x",
        "%2F%2Fevil.example/hub/user-redirect/lims/open?lims_token=x",
        "/%5Cevil.example/hub/user-redirect/lims/open?lims_token=x",
        "/hub/user-redirect/lims/open/../../../evil?lims_token=x",
        "/hub/user-redirect/lims/../../logout?lims_token=x",
        "/hub/user-redirect/lims/open%2F..%2F..%2Fevil?lims_token=x",
        "/hub/user-redirect/lims/open",  # no token
        "/hub/user-redirect/lims/proxy/8050/?lims_token=x",
        "/user/bob/lims/open?lims_token=x",  # another user's server
        "/user/alice%2F..%2Fbob/lims/open?lims_token=x",
        "/user/alice/../bob/lims/open?lims_token=x",
        "/hub/admin",
        "/hub/user-redirect/lims/open\t?lims_token=x",
        " /hub/user-redirect/lims/open?lims_token=x",
        "",
    ],
)
def test_anything_else_as_next_goes_to_the_hub_home(next_url):
    assert safe_next_url(next_url, base_url="/", username="alice") == "/hub/home"


def test_next_respects_the_hubs_base_url():
    link = "/jh/hub/user-redirect/lims/open?lims_token=t"
    assert safe_next_url(link, base_url="/jh/", username="alice") == link
    assert safe_next_url(DEEP, base_url="/jh/", username="alice") == "/jh/hub/home"


def test_a_user_name_is_matched_in_jupyterhubs_escaping():
    link = "/user/a%20b@c/lims/open?lims_token=t"
    assert safe_next_url(link, base_url="/", username="a b@c") == link


def test_the_token_is_found_inside_next():
    assert token_from_next(DEEP) == "abc.def.ghi"
    assert token_from_next("/hub/home") is None
    assert token_from_next("/x?lims_token=a&lims_token=b") is None


# -- what the hub imports ------------------------------------------------------------


def test_the_hub_package_does_not_import_jupyter_server():
    code = (
        "import sys, jupyter_lims_bridge.hub, jupyter_lims_bridge.hub.spawnhook;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('jupyter_server', 'notebook'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_username_map_is_applied_once(lims_key):
    # JupyterHub normalises the name authenticate() returns: a chain in username_map
    # (a.smith -> alice -> root) must not be followed twice
    auth = LimsAuthenticator(
        public_keys=[lims_key[1]],
        strict_username=False,
        username_map={"a.smith": "alice", "alice": "root"},
    )
    assert login(auth, token_for(lims_key[0], sub="a.smith"))["name"] == "alice"
