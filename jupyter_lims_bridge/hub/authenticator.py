"""``LimsAuthenticator``: log a browser in to JupyterHub with the ELN's open token.

The ELN's deep link ``/hub/user-redirect/lims/open?lims_token=…`` sends an
anonymous browser to ``/hub/login?next=…``. This module owns what happens there:

- the login page (``/hub/login``, registered ahead of JupyterHub's own) finds
  ``lims_token`` inside ``next``, verifies it *without using it* and renders a
  launch page; nothing changes before the page's script runs, so link
  previewers and prefetchers cannot burn a login;
- the script POSTs the token to ``/hub/lims/login``, which verifies it again
  with the shared verifier (``claims.OpenTokenVerifier``, built once: one JWKS
  client for the hub's life), maps the user name, records the login use of the
  ``jti`` (``replay.UsedTokens``), sets JupyterHub's login cookie and answers
  the ``next`` to go to - only this hub's own deep-link shapes (``nexturl``);
- errors carry the stable reasons of DESIGN.md and never the token.

It must not import jupyter_server (it runs in the hub) and never logs a token.
JupyterHub itself logs the request line of ``/hub/login?next=…`` (the token is
in it): the operator docs say why that is acceptable (single-use, short-lived).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, FileSystemLoader
from jupyterhub._xsrf_utils import _set_xsrf_cookie  # private; as LoginHandler.get (5.x, 6.x)
from jupyterhub.auth import Authenticator
from jupyterhub.handlers.base import BaseHandler
from jupyterhub.handlers.login import LoginHandler
from tornado import web
from traitlets import Bool, Int, List, TraitError, Unicode, default, validate

from ..claims import OpenRequest, OpenTokenVerifier, build_verifier
from ..errors import LimsError
from .nexturl import safe_next_url, token_from_next
from .replay import StoreFull, UsedTokens

HERE = Path(__file__).parent
#: Claims that cannot name a user: registered ones other than ``sub``, and the LIMS's own.
_NOT_A_USERNAME = ("iss", "aud", "exp", "iat", "nbf", "jti", "entity", "notebook", "data")


class LimsAuthenticator(Authenticator):
    """Log users in with a signed open token from the ELN (no password, no second login)."""

    # -- which tokens (the same options, with the same meaning, as the server side) --

    public_keys = List(
        Unicode(),
        help="""Public keys (PEM text or paths of PEM files) that verify open tokens.

        Ed25519 (EdDSA), P-256 (ES256) and RSA (RS256). The same keys the users'
        servers get in ``LIMS_BRIDGE_PUBLIC_KEYS``. Default: none.
        Example: ``["/etc/jupyterhub/lims-public.pem"]``.""",
    ).tag(config=True)

    jwks_url = Unicode(
        "",
        help="""URL of the LIMS's JWKS (JSON Web Key Set), instead of or besides ``public_keys``.

        Fetched at most every 5 minutes, and again (at most every 10 s) when a
        token names an unknown ``kid``. Default: none.
        Example: ``"https://eln.example.org/.well-known/jwks.json"``.""",
    ).tag(config=True)

    hmac_secret = Unicode(
        "",
        help="""Shared secret for HS256 tokens. Off unless set; prefer ``public_keys``.

        Whoever holds it can forge a login for any user, and the users' servers
        would need it too: see the trust notes in docs/deploy.md. Default: none.""",
    ).tag(config=True)

    issuers = List(
        Unicode(),
        help="""Accepted ``iss`` values; empty accepts any issuer (the keys decide).

        Default: ``[]``. Example: ``["https://eln.example.org"]``.""",
    ).tag(config=True)

    audience = Unicode(
        "jupyter-lims-bridge",
        help="""The ``aud`` a token must carry. Default: ``"jupyter-lims-bridge"``.""",
    ).tag(config=True)

    max_token_lifetime = Int(
        600,
        help="""Longest accepted ``exp - iat``, in seconds. Default: 600. Example: ``300``.""",
    ).tag(config=True)

    leeway = Int(
        30,
        help="""Clock skew tolerated on ``exp``/``iat``/``nbf``, in seconds. Default: 30.""",
    ).tag(config=True)

    # -- who logs in ---------------------------------------------------------------

    username_claim = Unicode(
        "sub",
        help="""The claim that names the JupyterHub user. No fallback to another claim.

        The name then goes through JupyterHub's ``normalize_username`` and allow
        lists. The users' servers still compare ``sub`` with their owner, so a
        claim other than ``sub`` suits only sites where both carry the same name.
        Default: ``"sub"``. Example: ``"preferred_username"``.""",
    ).tag(config=True)

    @validate("username_claim")
    def _validate_username_claim(self, proposal: dict[str, Any]) -> str:
        value = proposal["value"]
        if not value or value in _NOT_A_USERNAME:
            raise TraitError(f"username_claim {value!r} cannot name a user")
        return value

    strict_username = Bool(
        True,
        help="""Refuse a token whose user name JupyterHub's normalisation would change.

        With ``True`` a token for ``Alice`` is refused (``wrong_user``) instead of
        logging in as ``alice``: two LIMS accounts that differ only in case (or
        map to one name through ``username_map``) never share a server, and the
        user's server, which compares ``sub`` exactly, would refuse the open
        anyway. ``False`` applies JupyterHub's normalisation silently.
        Default: ``True``.""",
    ).tag(config=True)

    eln_url = Unicode(
        "",
        help="""The ELN's address, shown on the login page of a visit without a token
        ("start from the ELN"). Default: none. Example: ``"https://eln.example.org"``.""",
    ).tag(config=True)

    replay_store_size = Int(
        100_000,
        help="""Most login uses of tokens remembered at once (each until its token
        expires, ``exp`` + ``leeway``). When full, new logins are refused with
        ``too_many_attempts`` rather than an entry forgotten. Default: 100000
        (a few MiB; 160 logins a second for 10 minutes).""",
    ).tag(config=True)

    @default("allow_all")
    def _default_allow_all(self) -> bool:
        # Whoever the LIMS signs a token for may log in: the LIMS is the identity
        # provider here. Operators narrow it with allowed_users / blocked_users.
        return True

    _verifier: OpenTokenVerifier | None = None
    _used: UsedTokens | None = None

    # -- verification ----------------------------------------------------------------

    @property
    def verifier(self) -> OpenTokenVerifier:
        """The shared verifier, built once (one JWKS client, one key cache)."""
        if self._verifier is None:
            # the hub serves every user: no owner, the name is mapped from the claims below
            self._verifier = build_verifier(self, owner=None)
            if not self._verifier.keys.configured:
                self.log.warning(
                    "LimsAuthenticator: no public_keys, jwks_url or hmac_secret; every login is refused."
                )
            if self.hmac_secret:
                self.log.warning(
                    "LimsAuthenticator: HS256 tokens are enabled by hmac_secret; whoever holds "
                    "that secret can log in as any user."
                )
        return self._verifier

    @property
    def used_tokens(self) -> UsedTokens:
        if self._used is None:
            self._used = UsedTokens(self.replay_store_size)
        return self._used

    async def check_token(self, token: str | None) -> tuple[OpenRequest, str]:
        """Verify ``token`` and map its user name, using nothing up. Raises :class:`LimsError`."""
        request = await self.verifier.verify(token)
        claim = self.username_claim
        raw = self._claimed_name(request)
        if not isinstance(raw, str) or not raw.strip():
            raise LimsError("bad_claims", f"The token's {claim!r} claim names no user.")
        name = self.normalize_username(raw)
        if not self.validate_username(name):
            raise LimsError(
                "bad_claims", f"The token's {claim!r} claim is not a valid user name here."
            )
        if self.strict_username and name != raw:
            raise LimsError(
                "wrong_user",
                f"The ELN sent the user name {raw!r}, which this JupyterHub knows as "
                f"{name!r}. The ELN must send the JupyterHub user name exactly.",
            )
        return request, name

    def _claimed_name(self, request: OpenRequest) -> Any:
        claim = self.username_claim
        return request.sub if claim == "sub" else request.extra.get(claim)

    async def authenticate(self, handler: Any, data: dict[str, Any]) -> dict[str, Any] | None:
        """Verify ``data["lims_token"]``, record its login use, and name the user.

        Raises :class:`LimsError` (the login handler turns it into the answer).
        JupyterHub applies ``normalize_username``, the block and allow lists after this.
        """
        request, _ = await self.check_token(data.get("lims_token"))
        try:
            fresh = self.used_tokens.consume(
                f"{request.iss or ''}\x00{request.jti}", request.exp + self.leeway
            )
        except StoreFull:
            self.log.warning(
                "LimsAuthenticator: %d unexpired login uses recorded (replay_store_size); "
                "refusing logins until some expire.",
                self.replay_store_size,
            )
            raise LimsError("too_many_attempts") from None
        if not fresh:
            raise LimsError(
                "token_replayed",
                "This link has already been used to log in. Go back to the ELN and "
                'click "Open in Jupyter" again.',
                status=401,  # a login refused (DESIGN: hub side), not the server's 409
            )
        # the name as claimed: JupyterHub normalises it once more itself (applying
        # username_map twice could chain two of its entries)
        return {"name": self._claimed_name(request)}

    def get_handlers(self, app: Any) -> list[tuple[str, Any, dict[str, Any]] | tuple[str, Any]]:
        # listed ahead of JupyterHub's own handlers, so this /login wins
        return [
            (r"/login", LimsLoginPageHandler),
            (r"/lims/login", LimsLoginHandler),
            (r"/lims/static/(.*)", _StaticHandler, {"path": str(HERE / "static")}),
        ]


# ---------------------------------------------------------------------------
# handlers


class _Pages:
    """Renders this package's templates, which extend JupyterHub's ``page.html``
    (so a site's template customisations apply to them too)."""

    def render_lims(self: Any, name: str, **ns: Any) -> str:
        hub_env = self.settings["jinja2_env_sync"]
        env = self.settings.get("lims_jinja2_env")
        if env is None:
            env = hub_env.overlay(
                loader=ChoiceLoader([FileSystemLoader(str(HERE / "templates")), hub_env.loader])
            )
            self.settings["lims_jinja2_env"] = env
        context = dict(self.template_namespace)
        context["xsrf_token"] = self.xsrf_token.decode("ascii")
        context["lims_static"] = self.hub.base_url + "lims/static/"
        context["eln_url"] = self.authenticator.eln_url
        context.update(ns)
        return env.get_template(name).render(**context)

    def no_store(self: Any) -> None:
        # the page carries a token: keep it out of every cache and Referer
        self.set_header("Cache-Control", "no-store")
        self.set_header("Referrer-Policy", "no-referrer")


class LimsLoginPageHandler(_Pages, LoginHandler):
    """``GET /hub/login``: the launch page for a deep link, or "start from the ELN"."""

    async def get(self) -> None:
        if self.current_user or not isinstance(self.authenticator, LimsAuthenticator):
            return await super().get()
        # as JupyterHub's login page: a fresh _xsrf cookie, which the POST must echo
        _set_xsrf_cookie(
            self, self._xsrf_token_id, cookie_path=self.hub.base_url, xsrf_token=self.xsrf_token
        )
        self.no_store()
        next_url = self.get_argument("next", default="")
        token = token_from_next(next_url)
        if token is None:
            self.finish(self.render_lims("lims_hub_start.html"))
            return
        try:
            request, name = await self.authenticator.check_token(token)
        except LimsError as e:
            self.authenticator.log.info("LIMS login page: token refused (%s)", e.reason)
            self.set_status(e.status)
            self.finish(self.render_lims("lims_hub_error.html", error=e))
            return
        # nothing is used up here: the page's script does the login
        self.finish(
            self.render_lims(
                "lims_hub_launch.html",
                entity=request.entity,
                username=name,
                lims_token=token,
                next_url=next_url,
                login_post_url=self.hub.base_url + "lims/login",
            )
        )

    async def post(self) -> None:
        if not isinstance(self.authenticator, LimsAuthenticator):
            return await super().post()
        # no password form here: logins come with a token to /hub/lims/login
        raise web.HTTPError(405)


class LimsLoginHandler(_Pages, BaseHandler):
    """``POST /hub/lims/login`` (form fields ``lims_token``, ``next``, ``_xsrf``): log in.

    The launch page's script asks for JSON: ``200 {"next": url}`` with the login
    cookie set, or the error ``{"message", "reason"}`` with its status. A plain
    form post (the page's no-script button) gets a redirect to ``next``, or the
    error page.
    """

    async def get(self) -> None:
        # a GET never logs in (previewers); the login page is where a link lands
        self.redirect(self.settings["login_url"])

    async def post(self) -> None:
        authenticator = self.authenticator
        self.no_store()
        if not isinstance(authenticator, LimsAuthenticator):
            raise web.HTTPError(404)
        wants_json = "application/json" in self.request.headers.get("Accept", "")
        token = self.get_body_argument("lims_token", default="")
        next_url = self.get_body_argument("next", default="")
        try:
            user = await self.login_user({"lims_token": token})
            if user is None:
                raise LimsError("user_not_allowed")
        except LimsError as e:
            authenticator.log.warning("LIMS login refused: %s", e.reason)
            self.set_status(e.status)
            if wants_json:
                self.set_header("Content-Type", "application/json")
                self.finish(json.dumps({"message": e.message, "reason": e.reason}))
            else:
                self.finish(self.render_lims("lims_hub_error.html", error=e))
            return
        target = safe_next_url(next_url, base_url=self.base_url, username=user.name)
        if wants_json:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"next": target}))
        else:
            self.redirect(target)


class _StaticHandler(web.StaticFileHandler):
    """The launch page's script (no JupyterHub auth: it is public, like /hub/static)."""
