"""The error tree of jupyter-lims-bridge: stable codes, safe messages, HTTP statuses.

Every refusal the bridge makes is a :class:`LimsError` carrying a stable
``reason`` (the contract other systems branch on), an HTTP ``status`` and a
``message`` that is safe to show to a user. Messages never contain a token or
any other secret; callers pass only what they would print on a screen.

This module must not import tornado handlers: handlers translate a
:class:`LimsError` into a response in one place (``handlers/base.py``).
"""

from __future__ import annotations

from typing import Any

#: reason -> (HTTP status, default message). The reasons and statuses are part of
#: the external contract (DESIGN.md); add new ones, never rename.
REASONS: dict[str, tuple[int, str]] = {
    # open tokens and proxy tokens
    "token_missing": (401, "No token was given."),
    "token_invalid": (401, "The token is not valid."),
    "token_expired": (401, "The token has expired or is not valid yet."),
    "wrong_audience": (401, "The token was made for another audience."),
    "unknown_issuer": (401, "The token comes from an issuer this server does not trust."),
    "wrong_user": (403, "This link was made for another user."),
    "token_replayed": (409, "This link has already been used."),
    "bad_claims": (422, "The token's claims are missing or malformed."),
    # the hub's login (jupyter_lims_bridge.hub): the user is not in its allow lists
    "user_not_allowed": (403, "This user may not log in to this JupyterHub."),
    # workspace and data
    "path_not_allowed": (403, "That path is not allowed."),
    "unknown_mount": (422, "The data store named in the token is not available here."),
    "data_missing": (422, "The data named in the token does not exist."),
    "url_not_allowed": (403, "That download URL is not allowed."),
    "download_failed": (502, "The download failed."),
    "checksum_mismatch": (422, "The downloaded data does not match its checksum."),
    "too_large": (413, "The download is larger than allowed."),
    "not_found": (404, "Not found."),
    "bad_request": (400, "The request is malformed."),
    "body_too_large": (413, "The request body is too large."),
    # proxy
    "port_not_allowed": (403, "That port is not allowed."),
    # a named service (proxy/services.py): not in allowed_services, or outside a token's scope
    "service_not_allowed": (403, "That service is not allowed."),
    "proxy_disabled": (403, "The proxy is disabled."),
    # Jupyter's DNS-rebinding guard refused the request's Host (allow_remote_access off)
    "host_not_allowed": (
        403,
        "This server does not answer to that Host name (see ServerApp.allow_remote_access).",
    ),
    "too_many_attempts": (429, "Too many failed attempts; try again later."),
    "backend_unavailable": (502, "The service behind the proxy is not reachable."),
    # save to ELN (eln_return.py)
    "no_return": (
        409,
        "This notebook cannot be saved to the ELN: it was not opened with a return.",
    ),
    "return_expired": (410, "The ELN's permission to receive results for this entry has expired."),
    "eln_refused": (502, "The ELN refused the upload."),
    "eln_unreachable": (504, "The ELN cannot be reached."),
}


class LimsError(Exception):
    """A refusal with a stable ``reason``, an HTTP ``status`` and a display-safe ``message``.

    ``details`` holds extra JSON-safe facts a caller may show (never secrets).
    ``claims`` may hold the claims of a token whose *signature was verified*
    before it was refused (e.g. ``wrong_user``); error pages use it to offer a
    way back to the ELN entry, and must not trust it otherwise.
    """

    def __init__(
        self,
        reason: str,
        message: str | None = None,
        *,
        status: int | None = None,
        claims: dict[str, Any] | None = None,
        **details: Any,
    ) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown error reason {reason!r}")
        default_status, default_message = REASONS[reason]
        self.reason = reason
        self.status = status or default_status
        self.message = message or default_message
        self.claims = claims
        self.details = details
        super().__init__(self.message)

    def to_json(self) -> dict[str, Any]:
        """The JSON body of an error response: ``{"message", "reason", ...details}``."""
        return {**self.details, "message": self.message, "reason": self.reason}

    def __repr__(self) -> str:
        return f"LimsError({self.reason!r}, {self.message!r})"
