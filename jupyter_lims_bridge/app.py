"""The jupyter-lims-bridge server extension: configuration, services and routes.

:class:`LimsBridge` is the ``ExtensionApp``. Its traits are the operator's
configuration (section ``LimsBridge``; each also read from an environment
variable ``LIMS_BRIDGE_<NAME>`` so a spawner can configure a user's server
without files). It builds the services (verifier, workspace, stager, proxy…)
once and hands them to the handlers through the tornado settings; it holds
no request logic itself.
"""

from __future__ import annotations

import getpass
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jupyter_core.application import JupyterApp
from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp, ExtensionAppJinjaMixin
from tornado import web
from traitlets import (
    Bool,
    Dict,
    Enum,
    Float,
    Int,
    List,
    TraitError,
    Unicode,
    Union,
    default,
    validate,
)

from . import embed, urls
from ._version import __version__
from .claims import ReplayStore, build_verifier
from .eln_return import ElnReturns
from .events import register_event_schemas
from .handlers import default_handlers, fast_routes, proxy_fast
from .opener import Opener
from .proxy.access import Access
from .proxy.front import Front
from .proxy.service import MODES, ProxyService
from .proxy.services import NamedServices, valid_name
from .proxy_tokens import AttemptLimiter, ProxyTokenStore
from .recent import RecentOpens
from .staging import DataStager
from .urlrules import check_url
from .webhook import DEFAULT_EVENTS, WebhookService, parse_secret
from .workspace import Workspace

HERE = Path(__file__).parent
ENV_PREFIX = "LIMS_BRIDGE_"
_PORT_RANGE_RE = re.compile(r"^\s*(\d{1,5})\s*-\s*(\d{1,5})\s*$")


def parse_ports(spec: list[int | str]) -> frozenset[int]:
    """Expand ``allowed_ports`` (ints and ``"a-b"`` ranges) into a set of ports."""
    ports: set[int] = set()
    for item in spec:
        if isinstance(item, int) and not isinstance(item, bool):
            low = high = item
        elif isinstance(item, str) and item.strip().isdigit():
            low = high = int(item)
        elif isinstance(item, str) and (m := _PORT_RANGE_RE.match(item)):
            low, high = int(m.group(1)), int(m.group(2))
        else:
            raise ValueError(f"{item!r} is neither a port nor a range 'a-b'")
        if not (1 <= low <= high <= 65535):
            raise ValueError(f"{item!r} is not a port range within 1-65535")
        ports.update(range(low, high + 1))
    return frozenset(ports)


def _from_environment(trait: Any, text: str) -> Any:
    """Parse the text of a ``LIMS_BRIDGE_*`` variable for ``trait``."""
    if isinstance(trait, List):
        stripped = text.strip()
        if stripped.startswith("["):
            return json.loads(stripped)
        return [part.strip() for part in text.split(",") if part.strip()]
    if isinstance(trait, Dict):
        return json.loads(text)
    if isinstance(trait, Bool):
        return text.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(trait, Int):
        return int(text)
    if isinstance(trait, Float):
        return float(text)
    return text


def _login_cookie_names(serverapp: Any) -> list[str]:
    """A login cookie name the operator configured (the usual ones are known to proxy/headers.py)."""
    name = getattr(getattr(serverapp, "identity_provider", None), "cookie_name", "")
    return [name] if name else []


def configured_bridge(overrides: Iterable[str] = ()) -> LimsBridge:
    """The bridge's options as a server here would have them, for the command line.

    The same order as the server: defaults, then ``LIMS_BRIDGE_*`` variables, then
    the Jupyter config files (``jupyter_server_config.*`` in every config
    directory), then ``overrides`` (``LimsBridge.NAME=VALUE``). Builds no services.
    """

    class _ConfigLoader(JupyterApp):
        name = "jupyter-lims-bridge"

        @property
        def config_file_name(self) -> str:  # type: ignore[override]
            return "jupyter_server_config"

    loader = _ConfigLoader()
    loader.initialize([o if o.startswith("--") else f"--{o}" for o in overrides])
    bridge = LimsBridge()
    bridge.update_config(loader.config)
    return bridge


class LimsBridge(ExtensionAppJinjaMixin, ExtensionApp):
    """Open signed LIMS/ELN deep links as notebooks, stage their data, proxy local ports."""

    name = "lims_bridge"
    description = __doc__
    load_other_extensions = True
    template_paths = [str(HERE / "templates")]  # type: ignore[assignment]
    static_paths = [str(HERE / "static")]  # type: ignore[assignment]

    # -- who and which tokens -------------------------------------------------

    owner = Unicode(
        help="""The user an open token's ``sub`` claim must name.

        Default: ``$JUPYTERHUB_USER`` under JupyterHub, else the operating-system
        account name. Environment: ``LIMS_BRIDGE_OWNER``. Example: ``"alice"``.""",
    ).tag(config=True)

    @default("owner")
    def _default_owner(self) -> str:
        return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()

    public_keys = List(
        Unicode(),
        help="""Public keys (PEM text or paths of PEM files) that verify open tokens.

        Ed25519 (EdDSA), P-256 (ES256) and RSA (RS256) keys. The LIMS keeps the
        private key; only the public key belongs in the image or the spawner.
        Default: none. Environment: ``LIMS_BRIDGE_PUBLIC_KEYS`` (JSON list or
        comma-separated paths). Example: ``["/etc/jupyter/lims-public.pem"]``.""",
    ).tag(config=True)

    jwks_url = Unicode(
        None,
        allow_none=True,
        help="""A JWKS URL of the LIMS, fetched with a 5 s timeout and cached 5 minutes.

        An unknown ``kid`` refetches it once. Default: none. Environment:
        ``LIMS_BRIDGE_JWKS_URL``. Example: ``"https://eln.example.org/.well-known/jwks.json"``.""",
    ).tag(config=True)

    hmac_secret = Unicode(
        None,
        allow_none=True,
        help="""A shared secret that enables HS256 open tokens. Off by default.

        Anyone who can read it can forge links for this server, so under
        JupyterHub it must be a per-user secret set by the spawner, never one
        secret for all users. Prefer ``public_keys``. Environment:
        ``LIMS_BRIDGE_HMAC_SECRET``.""",
    ).tag(config=True)

    issuers = List(
        Unicode(),
        help="""Accepted ``iss`` claims; empty accepts any issuer (still signed by a trusted key).

        Default: ``[]``. Environment: ``LIMS_BRIDGE_ISSUERS``.
        Example: ``["https://eln.example.org"]``.""",
    ).tag(config=True)

    audience = Unicode(
        "jupyter-lims-bridge",
        help="""The ``aud`` an open token must carry. Default: ``"jupyter-lims-bridge"``.
        Environment: ``LIMS_BRIDGE_AUDIENCE``.""",
    ).tag(config=True)

    max_token_lifetime = Int(
        600,
        help="""Longest accepted ``exp - iat`` of an open token, in seconds. Default: 600.
        Environment: ``LIMS_BRIDGE_MAX_TOKEN_LIFETIME``. Example: ``300``.""",
    ).tag(config=True)

    leeway = Int(
        30,
        help="""Clock skew tolerated between the LIMS and this server, in seconds.
        Default: 30. Environment: ``LIMS_BRIDGE_LEEWAY``.""",
    ).tag(config=True)

    # -- workspace --------------------------------------------------------------

    workspace_dir = Unicode(
        "lims",
        help="""Directory, relative to the server root, where notebooks for ELN entries are made.

        Every notebook and data path stays inside it. Default: ``"lims"``.
        Environment: ``LIMS_BRIDGE_WORKSPACE_DIR``. Example: ``"eln"``.""",
    ).tag(config=True)

    templates_dir = Unicode(
        None,
        allow_none=True,
        help="""Directory of notebook templates ``<name>.ipynb`` named by a token's
        ``notebook.template``. The built-in ``default`` is used when a name is
        not found there. Cell sources may use ``{{ entity.id }}``-style
        placeholders (sandboxed Jinja2). Default: none. Environment:
        ``LIMS_BRIDGE_TEMPLATES_DIR``. Example: ``"/etc/jupyter/lims-templates"``.""",
    ).tag(config=True)

    open_url = Unicode(
        "lab/tree/{path}",
        help="""Where the browser goes after an open, relative to the server's base URL;
        ``{path}`` is the notebook's URL-escaped path. Default: ``"lab/tree/{path}"``.
        Environment: ``LIMS_BRIDGE_OPEN_URL``. Example: ``"doc/tree/{path}"``.""",
    ).tag(config=True)

    @validate("open_url")
    def _validate_open_url(self, proposal: dict[str, Any]) -> str:
        value = proposal["value"]
        if "{path}" not in value or "://" in value or value.startswith("/"):
            raise TraitError("open_url must be a relative URL containing '{path}'")
        return value

    # -- data -------------------------------------------------------------------

    data_mounts = Dict(
        value_trait=Unicode(),
        help="""Mounted data stores: name -> local directory the spawner mounted.

        A data item ``{"mount": name, "path": p}`` is linked from inside that
        directory only. Default: ``{}``. Environment: ``LIMS_BRIDGE_DATA_MOUNTS``
        (JSON). Example: ``{"archive": "/mnt/archive"}``.""",
    ).tag(config=True)

    data_url_prefixes = List(
        Unicode(),
        help="""URL prefixes data items may be downloaded from; any other URL is refused.

        Default: ``[]`` (no downloads). Environment: ``LIMS_BRIDGE_DATA_URL_PREFIXES``.
        Example: ``["https://lims.example.org/files/"]``.""",
    ).tag(config=True)

    max_download_bytes = Int(
        10 * 1024**3,
        help="""Largest accepted download of one data item, in bytes. Default: 10 GiB.
        Environment: ``LIMS_BRIDGE_MAX_DOWNLOAD_BYTES``. Example: ``1073741824``.""",
    ).tag(config=True)

    max_concurrent_downloads = Int(
        4,
        help="""Downloads running at once on this server; more wait in the queue.
        Default: 4. Environment: ``LIMS_BRIDGE_MAX_CONCURRENT_DOWNLOADS``.""",
    ).tag(config=True)

    wait_for_data = Bool(
        True,
        help="""Whether the launch page waits for downloads before opening the notebook.
        ``False`` opens at once and lets data arrive. Default: ``True``.
        Environment: ``LIMS_BRIDGE_WAIT_FOR_DATA``.""",
    ).tag(config=True)

    # -- proxy -------------------------------------------------------------------

    allowed_ports = List(
        Union([Int(), Unicode()]),
        help="""Local ports reachable through ``lims/proxy/<port>/``: ints and ``"a-b"`` ranges.

        Default: ``[]`` (none). Environment: ``LIMS_BRIDGE_ALLOWED_PORTS``.
        Example: ``[8050, "9000-9010"]`` or ``LIMS_BRIDGE_ALLOWED_PORTS=8050,9000-9010``.""",
    ).tag(config=True)

    @validate("allowed_ports")
    def _validate_allowed_ports(self, proposal: dict[str, Any]) -> list[int | str]:
        try:
            parse_ports(proposal["value"])
        except ValueError as e:
            raise TraitError(f"allowed_ports: {e}") from None
        return proposal["value"]

    proxy_mode = Enum(
        list(MODES),
        "token",
        help="""Who may use the port proxy at start-up: ``token`` (the owner's session or
        a proxy token), ``open`` (anyone who can reach the server) or ``disabled``.
        The owner can change it at run time; a change closes the live websockets and
        streams it no longer admits. Default: ``"token"``.
        Environment: ``LIMS_BRIDGE_PROXY_MODE``.
        Failed proxy-token attempts are limited per client address: the TCP peer, or
        with ``ServerApp.trust_xheaders`` (JupyterHub turns it on) the last
        ``X-Forwarded-For`` entry. Turn ``trust_xheaders`` on only behind a front proxy
        that appends that entry (configurable-http-proxy does); without one a client
        claims any address. A valid token always passes.""",
    ).tag(config=True)

    allowed_services = List(
        Unicode(),
        help="""Named services reachable through ``lims/proxy/<name>/`` (and
        ``lims/proxy/absolute/<name>/``): names of services declared in
        ``c.ServerProxy.servers`` (jupyter-server-proxy's configuration, which
        launches them on the first request and supervises them); our proxy relays
        to them with the same token rules as ports. Names match ``[a-z][a-z0-9-]*``
        (never all digits: those are ports; never ``absolute``).
        Default: ``[]`` (none). Environment: ``LIMS_BRIDGE_ALLOWED_SERVICES``.
        Example: ``["dashboard"]`` with ``c.ServerProxy.servers = {"dashboard":
        {"command": ["panel", "serve", "app.py", "--port", "{port}"]}}``.""",
    ).tag(config=True)

    @validate("allowed_services")
    def _validate_allowed_services(self, proposal: dict[str, Any]) -> list[str]:
        bad = [n for n in proposal["value"] if not valid_name(n)]
        if bad:
            raise TraitError(
                f"allowed_services: {bad!r}: a name matches [a-z][a-z0-9-]* and is not 'absolute'"
            )
        return proposal["value"]

    cors_origins = List(
        Unicode(),
        help="""Origins whose browsers may call the proxy cross-origin (e.g. the ELN's
        JavaScript). Default: ``[]``. Environment: ``LIMS_BRIDGE_CORS_ORIGINS``.
        Example: ``["https://eln.example.org"]``.""",
    ).tag(config=True)

    websocket_max_message_size = Int(
        10 * 1024 * 1024,
        help="""Largest websocket message relayed by the port proxy, in bytes, either way
        (all fragments; compressed size with permessage-deflate); a bigger one is
        not forwarded and closes the session (code 1009). Default: 10 MiB.
        Environment: ``LIMS_BRIDGE_WEBSOCKET_MAX_MESSAGE_SIZE``. Example: ``67108864``.""",
    ).tag(config=True)

    @validate("cors_origins")
    def _validate_origins(self, proposal: dict[str, Any]) -> list[str]:
        for origin in proposal["value"]:
            if not re.match(r"^https?://[^/\s;,']+$", origin):
                raise TraitError(f"{origin!r} is not an origin like 'https://eln.example.org'")
        return proposal["value"]

    # -- embedding in the ELN's page (iframe) --------------------------------------

    embed_origins = List(
        Unicode(),
        help="""Exact origins of ELN pages that may show this server in an iframe.

        They join the ``frame-ancestors`` of the Content-Security-Policy of every page
        the server sends (merged with jupyter_server's own policy); Jupyter's cookies
        are then sent ``SameSite=None; Secure`` so they work inside the frame (HTTPS,
        or ``localhost``/``127.0.0.1``), and the launch page and the notebook toolbar
        post ``lims-bridge:*`` messages to the embedding page when its origin is one
        of these. ``*``, wildcards and anything but ``scheme://host[:port]`` are
        refused at start-up. See docs/embedding.md for the matching JupyterHub
        settings. Default: ``[]`` (no framing by other sites). Environment:
        ``LIMS_BRIDGE_EMBED_ORIGINS``. Example: ``["https://eln.example.org"]``.""",
    ).tag(config=True)

    @validate("embed_origins")
    def _validate_embed_origins(self, proposal: dict[str, Any]) -> list[str]:
        try:
            return [embed.check_origin(o) for o in proposal["value"]]
        except ValueError as e:
            raise TraitError(f"embed_origins: {e}") from None

    embed_partitioned_cookies = Bool(
        False,
        help="""Whether Jupyter's cookies also carry ``Partitioned`` (CHIPS) when
        ``embed_origins`` is set: the browser keeps them per embedding site. It does
        not help a browser that blocks third-party cookies altogether (the launch
        page then offers "Open in a new tab"). Default: ``False``.
        Environment: ``LIMS_BRIDGE_EMBED_PARTITIONED_COOKIES``. Example: ``True``.""",
    ).tag(config=True)

    # -- save to ELN ----------------------------------------------------------------

    return_url_prefixes = List(
        Unicode(),
        help="""URL prefixes an open token's ``return.url`` may lie under: where "Save to
        ELN" sends a notebook and its HTML export (docs/save.md). Empty turns the feature
        off (a token's ``return`` is then ignored); when set, a token whose return URL
        lies outside them is refused (``url_not_allowed``). Compared part by part
        (scheme, host and port exactly, then whole path segments).
        Default: ``[]`` (off). Environment: ``LIMS_BRIDGE_RETURN_URL_PREFIXES``.
        Example: ``["https://eln.example.org/api/jupyter/"]``.""",
    ).tag(config=True)

    return_timeout = Float(
        60.0,
        help="""Time allowed for the upload of a Save to ELN (connect, and each send or
        read), in seconds; a LIMS slower than that is reported ``eln_unreachable``.
        Default: 60. Environment: ``LIMS_BRIDGE_RETURN_TIMEOUT``. Example: ``300``.""",
    ).tag(config=True)

    @validate("return_url_prefixes")
    def _validate_return_url_prefixes(self, proposal: dict[str, Any]) -> list[str]:
        for prefix in proposal["value"]:
            try:
                check_url(prefix)
            except ValueError as e:
                raise TraitError(f"return_url_prefixes: {prefix!r} {e}") from None
        return proposal["value"]

    # -- events to the LIMS (webhook) ---------------------------------------------

    event_webhook_url = Unicode(
        "",
        help="""Where the bridge POSTs its events for the LIMS (an http(s) URL); empty = off.

        Each event is one JSON POST signed per Standard Webhooks (see
        docs/webhooks.md), delivered at least once from a queue on disk.
        Default: ``""`` (off). Environment: ``LIMS_BRIDGE_EVENT_WEBHOOK_URL``.
        Example: ``"https://lims.example.org/api/jupyter/events"``.""",
    ).tag(config=True)

    @validate("event_webhook_url")
    def _validate_event_webhook_url(self, proposal: dict[str, Any]) -> str:
        value = proposal["value"].strip()
        if value:
            try:
                check_url(value)
            except ValueError as e:
                raise TraitError(f"event_webhook_url {e}") from None
        return value

    event_webhook_secret = Unicode(
        "",
        help="""The key that signs webhook requests, in the Standard Webhooks form
        ``whsec_<base64 key>`` (at least 24 bytes of key; the LIMS verifies with the
        same value). Required when ``event_webhook_url`` is set. The bridge never logs
        it; prefer the environment variable to a config file, whose values
        ``--debug`` logs ("Config changed"). Default: none. Environment: ``LIMS_BRIDGE_EVENT_WEBHOOK_SECRET``.
        Example: ``"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"`` (make one with
        ``python -c "import base64,os; print('whsec_' + base64.b64encode(os.urandom(32)).decode())"``).""",
    ).tag(config=True)

    @validate("event_webhook_secret")
    def _validate_event_webhook_secret(self, proposal: dict[str, Any]) -> str:
        value = proposal["value"].strip()
        if value:
            try:
                parse_secret(value)
            except ValueError as e:
                # the message says what is wrong, never the value
                raise TraitError(f"event_webhook_secret {e}") from None
        return value

    event_webhook_events = List(
        Unicode(),
        default_value=list(DEFAULT_EVENTS),
        help="""Which events are sent to ``event_webhook_url``: any of ``open``, ``save``,
        ``staging``, ``proxy_session``, ``proxy_tokens`` (unknown names are ignored
        with a warning). Default: ``["open", "save", "staging", "proxy_session"]``.
        Environment: ``LIMS_BRIDGE_EVENT_WEBHOOK_EVENTS``. Example: ``["open", "save"]``
        or ``LIMS_BRIDGE_EVENT_WEBHOOK_EVENTS=open,save``.""",
    ).tag(config=True)

    event_webhook_queue_size = Int(
        10_000,
        help="""Most webhook events kept waiting for delivery, in events; when full, the
        oldest are dropped and counted (``webhook.dropped`` in ``GET lims/api/status``).
        Default: 10000. Environment: ``LIMS_BRIDGE_EVENT_WEBHOOK_QUEUE_SIZE``.
        Example: ``50000``.""",
    ).tag(config=True)

    event_webhook_timeout = Float(
        10.0,
        help="""Time allowed for one webhook request (connect, and each read), in seconds;
        a request that takes longer is retried. Default: 10.
        Environment: ``LIMS_BRIDGE_EVENT_WEBHOOK_TIMEOUT``. Example: ``30``.""",
    ).tag(config=True)

    event_webhook_retry_initial = Float(
        1.0,
        help="""Delay before the first retry of a failed webhook request, in seconds; it
        doubles with each failure up to ``event_webhook_retry_max``, and a random
        half of it is waited (jitter). Default: 1. Environment:
        ``LIMS_BRIDGE_EVENT_WEBHOOK_RETRY_INITIAL``. Example: ``5``.""",
    ).tag(config=True)

    event_webhook_retry_max = Float(
        300.0,
        help="""Longest delay between retries of a failed webhook request, in seconds.
        Default: 300. Environment: ``LIMS_BRIDGE_EVENT_WEBHOOK_RETRY_MAX``.
        Example: ``60``.""",
    ).tag(config=True)

    @validate("event_webhook_queue_size")
    def _validate_event_webhook_queue_size(self, proposal: dict[str, Any]) -> int:
        if proposal["value"] < 1:
            raise TraitError("event_webhook_queue_size must be at least 1")
        return proposal["value"]

    @validate(
        "event_webhook_timeout",
        "event_webhook_retry_initial",
        "event_webhook_retry_max",
        "return_timeout",
    )
    def _validate_positive_seconds(self, proposal: dict[str, Any]) -> float:
        if not proposal["value"] > 0:
            raise TraitError(f"{proposal['trait'].name} must be a positive number of seconds")
        return proposal["value"]

    # -- state --------------------------------------------------------------------

    state_dir = Unicode(
        help="""Directory of the bridge's private state (used ``jti``s, proxy tokens,
        recent opens), created mode 0700. Default: ``<jupyter data dir>/lims_bridge``.
        Environment: ``LIMS_BRIDGE_STATE_DIR``.""",
    ).tag(config=True)

    @default("state_dir")
    def _default_state_dir(self) -> str:
        return str(Path(jupyter_data_dir()) / "lims_bridge")

    # ---------------------------------------------------------------------------

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # The environment sits between the defaults and the config files:
        # config loaded later (update_config) overrides what is set here.
        self._apply_environment()

    def _apply_environment(self) -> None:
        for name, trait in self.class_own_traits(config=True).items():
            text = os.environ.get(ENV_PREFIX + name.upper())
            if text is None:
                continue
            try:
                setattr(self, name, _from_environment(trait, text))
            except (ValueError, TraitError) as e:
                raise TraitError(f"{ENV_PREFIX}{name.upper()}: {e}") from None

    def initialize_settings(self) -> None:
        state = Path(self.state_dir)
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.hmac_secret:
            self.log.warning(
                "lims-bridge: HS256 open tokens are enabled by hmac_secret. Anyone who can "
                "read that secret can forge links for this server: it must be per user."
            )
        self.verifier = build_verifier(
            self, owner=self.owner, replay=ReplayStore(state / "used_jti.json", leeway=self.leeway)
        )
        if not self.verifier.keys.configured:
            self.log.warning(
                "lims-bridge: no public_keys, jwks_url or hmac_secret configured; "
                "every open token will be refused."
            )
        self.event_logger = self.serverapp.event_logger
        register_event_schemas(self.event_logger)
        root_dir = Path(self.serverapp.root_dir).expanduser()
        self.workspace = Workspace(
            root_dir=root_dir,
            workspace_dir=self.workspace_dir,
            templates_dir=self.templates_dir,
            contents_manager=self.serverapp.contents_manager,
        )
        self.stager = DataStager(
            mounts=self.data_mounts,
            url_prefixes=self.data_url_prefixes,
            max_download_bytes=self.max_download_bytes,
            max_concurrent=self.max_concurrent_downloads,
            event_logger=self.event_logger,
            log=self.log,
        )
        self.recent = RecentOpens(state / "recent.json")
        self.eln_returns = ElnReturns(
            state_dir=state,
            prefixes=self.return_url_prefixes,
            root_dir=root_dir,
            workspace_root=self.workspace.workspace_root,
            workspace_api_dir=self.workspace.workspace_api_dir,
            contents_manager=self.serverapp.contents_manager,
            owner=self.owner,
            timeout=self.return_timeout,
            event_logger=self.event_logger,
            log=self.log,
        )
        self.opener = Opener(
            verifier=self.verifier,
            workspace=self.workspace,
            stager=self.stager,
            recent=self.recent,
            event_logger=self.event_logger,
            base_url=self.serverapp.base_url,
            open_url=self.open_url,
            returns=self.eln_returns,
            log=self.log,
        )
        self.proxy_tokens = ProxyTokenStore(
            state / "proxy_tokens.json", event_logger=self.event_logger
        )
        self.proxy_attempts = AttemptLimiter()
        self.port_proxy = ProxyService(
            mode=self.proxy_mode,
            ports=parse_ports(self.allowed_ports),
            cors_origins=self.cors_origins,
            websocket_max_message_size=self.websocket_max_message_size,
            event_logger=self.event_logger,
            trust_xheaders=self.serverapp.trust_xheaders,
            jupyter_cookies=_login_cookie_names(self.serverapp),
            tokens=self.proxy_tokens,
            attempts=self.proxy_attempts,
            services=NamedServices(self.serverapp, self.allowed_services),
        )
        #: who may pass: one decision for new requests and live sessions alike
        self.proxy_access = Access(self.port_proxy)
        # live websockets and streams are closed once their client is no longer admitted
        self.port_proxy.admits = self.proxy_access.still_admitted
        self._add_frame_ancestors()
        self.webhook = self._build_webhook(state)

    def _build_webhook(self, state: Path) -> WebhookService | None:
        if not self.event_webhook_url:
            return None
        if not self.event_webhook_secret:
            raise TraitError(
                "event_webhook_url is set but event_webhook_secret is empty: the LIMS could "
                "not tell our events from anyone else's. Set it to 'whsec_<base64 key>'."
            )
        webhook = WebhookService(
            url=self.event_webhook_url,
            secret=self.event_webhook_secret,
            types=self.event_webhook_events,
            owner=self.owner,
            state_dir=state,
            queue_size=self.event_webhook_queue_size,
            timeout=self.event_webhook_timeout,
            retry_initial=self.event_webhook_retry_initial,
            retry_max=self.event_webhook_retry_max,
            log=self.log,
        )
        webhook.attach(self.event_logger)
        return webhook

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        if getattr(self, "webhook", None) is not None:
            self.webhook.start()
        try:
            http_server = serverapp.http_server
        except AttributeError:  # a server app started without its own HTTP server
            return
        self.install_proxy_front(http_server)

    def install_proxy_front(self, http_server: Any) -> None:
        """Let the proxy's front (proxy/front.py) read each request to
        ``http_server`` before tornado does: the fast path's requests are
        served there, any other goes to tornado, one request at a time."""
        base_url = self.serverapp.web_app.settings["base_url"]
        routes = fast_routes(self, base_url)
        paths = (f"{base_url}{urls.NAMESPACE}/proxy/",)  # (Jupyter's base_url ends with "/")
        self.proxy_front = Front.install(http_server, proxy_fast.front_route(routes), paths)
        if self.proxy_front is None:
            self.log.debug(
                "lims-bridge: proxy: tornado reads every request (TLS, untested tornado)"
            )
        else:
            self.log.debug(
                "lims-bridge: proxy: the front reads each request first (proxy/front.py)"
            )

    def set_proxy_mode(self, mode: str) -> None:
        """The owner's run-time choice of ``proxy_mode``, kept across restarts
        (until the operator changes the configured value)."""
        self.port_proxy.set_mode(mode)  # live sessions the new mode does not admit end now

    def _add_frame_ancestors(self) -> None:
        """Let ``embed_origins`` frame every page, keep their cookies in the frame,
        and tell the panel (page config) where it may post messages."""
        if not self.embed_origins:
            return
        web_settings = self.serverapp.web_app.settings
        # jupyter_server copies the web app's settings into ours before this runs
        # and writes ours back afterwards: change both, or the write-back undoes it
        headers = dict(web_settings.get("headers") or {})
        default_csp = "frame-ancestors 'self'; report-uri " + web_settings.get(
            "csp_report_uri",
            self.serverapp.base_url.rstrip("/") + "/api/security/csp-report",
        )
        headers["Content-Security-Policy"] = embed.merge_frame_ancestors(
            headers.get("Content-Security-Policy"), self.embed_origins, default_csp
        )
        attributes = embed.cookie_attributes()
        xsrf = embed.with_cookie_attributes(web_settings.get("xsrf_cookie_kwargs"), attributes)
        page_config = dict(web_settings.get("page_config_data") or {})
        page_config["limsBridgeEmbedOrigins"] = list(self.embed_origins)
        for settings in (web_settings, self.settings):
            settings["headers"] = headers
            settings["xsrf_cookie_kwargs"] = xsrf
            settings["page_config_data"] = page_config
        # the login cookie: the identity provider reads its own options at each login
        provider = self.serverapp.identity_provider
        provider.cookie_options = embed.with_cookie_attributes(provider.cookie_options, attributes)
        web_settings["cookie_options"] = self.settings["cookie_options"] = provider.cookie_options
        transforms = self.serverapp.web_app.transforms
        if self.embed_partitioned_cookies and embed.PartitionedCookies not in transforms:
            transforms.append(embed.PartitionedCookies)

    def initialize_handlers(self) -> None:
        # The proxy's fast path (handlers/proxy_fast.py) is tried before any
        # other route: tornado tries host rules in turn, each extension's a list
        # of path patterns, and a proxied request is the most frequent there is.
        # A request it does not take falls through to the proxy handlers. It is
        # added with tornado's own add_handlers: jupyter_server's checks
        # RequestHandler classes for auth decorators, and this target is a
        # Router whose every request Access.admit decides.
        web_app = self.serverapp.web_app
        web.Application.add_handlers(
            web_app, ".*$", fast_routes(self, web_app.settings["base_url"])
        )
        rules = web_app.default_router.rules
        rules.insert(0, rules.pop(-2))  # add_handlers put it before the last one
        self.handlers.extend(default_handlers)

    async def stop_extension(self) -> None:
        stager = getattr(self, "stager", None)
        if stager is not None:
            await stager.close()
        if getattr(self, "proxy_tokens", None) is not None:
            self.proxy_tokens.flush()
        if getattr(self, "proxy_front", None) is not None:
            self.proxy_front.uninstall()
        if getattr(self, "port_proxy", None) is not None:
            await self.port_proxy.close()
        # last: what the others emit while stopping is still queued for the next start
        if getattr(self, "webhook", None) is not None:
            await self.webhook.stop()

    def status(self) -> dict[str, Any]:
        """The body of ``GET lims/api/status``."""
        return {
            "version": __version__,
            "owner": self.owner,
            "proxy": {
                "mode": self.port_proxy.mode,
                "allowedPorts": sorted(self.port_proxy.ports),
                "allowedServices": sorted(self.port_proxy.services.allowed),
            },
            "mounts": sorted(self.data_mounts),
            "recent": self.eln_returns.annotate(self.recent.list()),
            "webhook": self.webhook.status() if getattr(self, "webhook", None) else None,
            "embed": {"origins": list(self.embed_origins)},
        }
