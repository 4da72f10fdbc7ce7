"""What every bridge handler shares: access to the services and the one place
where a :class:`~jupyter_lims_bridge.errors.LimsError` becomes a response.

API handlers answer ``{"message", "reason"}`` JSON; page handlers render the
error page. A refusal is logged as one INFO line with its reason, never with
the request's query string (it may hold a token) and never with a traceback;
any other exception is logged with its method and path, never its query.
"""

from __future__ import annotations

import json
from http.client import responses
from typing import TYPE_CHECKING, Any

from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerJinjaMixin, ExtensionHandlerMixin
from tornado import web

from ..errors import LimsError
from ..wording import explain

if TYPE_CHECKING:
    from ..app import LimsBridge

#: The resource name of jupyter_server's authorizer for each capability.
AUTH_RESOURCE_OPEN = "lims_bridge:open"
AUTH_RESOURCE_STATUS = "lims_bridge:status"
AUTH_RESOURCE_STAGING = "lims_bridge:staging"
AUTH_RESOURCE_TOKENS = "lims_bridge:tokens"
AUTH_RESOURCE_PROXY = "lims_bridge:proxy"
AUTH_RESOURCE_SAVE = "lims_bridge:save"


def error_json(status_code: int, error: BaseException | None) -> tuple[int, dict[str, Any]]:
    """Status and ``{"message", "reason"}`` body for an error a handler raised
    (for handlers that are not ``APIHandler``s, such as the proxy's)."""
    if isinstance(error, LimsError):
        return error.status, error.to_json()
    if isinstance(error, web.HTTPError):
        default = responses.get(status_code)
        message = error.log_message or default or "Error"
        return status_code, {
            "message": message,
            "reason": error.reason if error.reason != default else None,
        }
    return status_code, {"message": "Unhandled error", "reason": None}


def json_error(
    status_code: int,
    error: BaseException | None,
    *,
    cors_origin: str | None = None,
    close: bool = False,
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the JSON error for ``error`` (see
    :func:`error_json`), readable cross-origin by ``cors_origin`` when one is
    given; ``close`` when the request's body was left unread."""
    status, body = error_json(status_code, error)
    headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
    if close:
        headers["Connection"] = "close"
    if cors_origin:
        headers["Access-Control-Allow-Origin"] = cors_origin
        headers["Vary"] = "Origin"
    return status, headers, json.dumps(body).encode()


def write_json_error(
    handler: Any, status_code: int, exc_info: Any, *, cors_origin: str | None = None
) -> None:
    """Finish ``handler`` with the JSON error for ``exc_info`` (:func:`json_error`)."""
    status, headers, body = json_error(
        status_code,
        exc_info[1] if exc_info else None,
        cors_origin=cors_origin,
        close=getattr(handler, "body_left_unread", False),
    )
    handler.set_status(status)
    for name, value in headers.items():
        handler.set_header(name, value)
    handler.finish(body)


class BridgeMixin:
    """Access to the extension's services, and quiet logging of refusals."""

    settings: dict[str, Any]
    request: Any
    log: Any

    #: set by a handler that answers before reading the request's body: tornado
    #: then closes the connection, and the answer must say so (``Connection: close``)
    #: or a client that reuses the connection gets a reset
    body_left_unread = False

    @property
    def bridge(self) -> LimsBridge:
        # jupyter_server keeps each extension app in the settings under its name
        return self.extensionapp  # type: ignore[attr-defined]

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        log_refusal(self.log, self.request.method, self.request.path, value, (typ, value, tb))


def log_refusal(
    log: Any, method: str | None, path: str, value: BaseException, exc_info: Any = None
) -> None:
    """One log line for an error a request ended with: a refusal at INFO with its
    reason, an ``HTTPError`` with a message at WARNING, anything else with its
    traceback. tornado's own version prints the request's URI (twice for an
    uncaught exception, with the request's repr): its query may hold a token
    (``?lims_token=``), so every line here names the path only."""
    if isinstance(value, LimsError):
        log.info("lims-bridge: %s %s refused: %s", method, path, value.reason)
    elif isinstance(value, web.HTTPError):
        if value.log_message:
            log.warning("%d %s %s: %s", value.status_code, method, path, value.get_message())
    else:
        log.error(
            "lims-bridge: uncaught exception in %s %s",
            method,
            path,
            exc_info=exc_info or (type(value), value, value.__traceback__),
        )


class LimsAPIHandler(BridgeMixin, ExtensionHandlerMixin, APIHandler):
    """Base of the JSON API handlers."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, LimsError):
            self.set_status(error.status)
            self.set_header("Content-Type", "application/json")
            self.set_header("Cache-Control", "no-store")
            if self.body_left_unread:
                self.set_header("Connection", "close")
            self.finish(json.dumps(error.to_json()))
            return
        super().write_error(status_code, **kwargs)

    def write_json(self, body: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(body))

    def get_json_object(self) -> dict[str, Any]:
        """The request body as a JSON object, or ``bad_request``."""
        return parse_json_object(self.request.body)


def parse_json_object(body: bytes) -> dict[str, Any]:
    """``body`` as a JSON object; ``bad_request`` when it is not valid JSON, nested
    too deeply for the parser (``RecursionError``), or not an object."""
    if not body:
        return {}
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise LimsError("bad_request", "The request body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise LimsError("bad_request", "The request body must be a JSON object.")
    return value


class LimsPageHandler(
    BridgeMixin, ExtensionHandlerJinjaMixin, ExtensionHandlerMixin, JupyterHandler
):
    """Base of the HTML page handlers: errors render ``lims_error.html``."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if not isinstance(error, LimsError):
            super().write_error(status_code, **kwargs)
            return
        self.set_status(error.status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        words = explain(error.reason)
        self.finish(
            self.render_template(
                "lims_error.html",
                error=error,
                words=words,
                # the way back to the entry only from a token whose signature verified
                back_url=_signed_entity_url(error.claims),
                home_url=self.home_url,
                embed_origins=self.bridge.embed_origins,
                static=self.static_url,
            )
        )

    @property
    def home_url(self) -> str:
        """JupyterLab's home (the server's default URL, under its base URL)."""
        return self.default_url or self.base_url


def _signed_entity_url(claims: dict[str, Any] | None) -> str | None:
    """``entity.url`` of claims whose signature verified, if it is an http(s) URL."""
    entity = (claims or {}).get("entity")
    url = entity.get("url") if isinstance(entity, dict) else None
    if isinstance(url, str) and url.lower().startswith(("https://", "http://")):
        return url
    return None
