"""Opening an ELN entry: the deep-link page and the server-to-server API.

``GET lims/open?lims_token=…`` is a page (so JupyterHub's OAuth completes by
itself): it verifies the token and renders the launch page, whose script
performs the open. The GET itself writes nothing, so link previewers cannot use
up a link. ``POST lims/api/open`` is authenticated by the open token alone,
so anyone may send it a body: the body is streamed and refused (413
``body_too_large``) past :data:`MAX_OPEN_BODY_BYTES`, from its
``Content-Length`` before anything is read, or as a chunked body grows.
"""

from __future__ import annotations

from jupyter_server.auth.decorator import allow_unauthenticated, authorized
from tornado import web

from ..errors import LimsError
from ..urls import url_for
from ..wording import WORDS
from .base import AUTH_RESOURCE_OPEN, LimsAPIHandler, LimsPageHandler, parse_json_object

TOKEN_HEADER = "X-Lims-Token"
#: The largest body ``POST lims/api/open`` reads: a token (at most 16 KiB) in a
#: JSON object fits many times over.
MAX_OPEN_BODY_BYTES = 64 * 1024


class OpenPageHandler(LimsPageHandler):
    auth_resource = AUTH_RESOURCE_OPEN

    def set_default_headers(self) -> None:
        super().set_default_headers()
        # the page's URL holds the token: never cache it, never send it as a Referer
        self.set_header("Cache-Control", "no-store")
        self.set_header("Referrer-Policy", "no-referrer")

    @web.authenticated
    @authorized
    async def get(self) -> None:
        token = self.get_query_argument("lims_token", None)
        request, replayed_path = await self.bridge.opener.inspect(token)
        opener = self.bridge.opener
        self.finish(
            self.render_template(
                "lims_launch.html",
                entity=request.entity,
                lims_token=token,
                api_url=url_for("open_api", self.base_url),
                staging_url=url_for("staging", self.base_url),
                replay_url=opener.notebook_url(replayed_path) if replayed_path else None,
                wait_for_data=self.bridge.wait_for_data,
                xsrf=self.xsrf_token.decode("ascii"),
                home_url=self.home_url,
                embed_origins=self.bridge.embed_origins,
                words=WORDS,
                static=self.static_url,
            )
        )


@web.stream_request_body
class OpenHandler(LimsAPIHandler):
    """``POST lims/api/open``: the open token is the only credential.

    Streams its body (jupyter_server would otherwise read up to 512 MiB before
    any check) and keeps at most :data:`MAX_OPEN_BODY_BYTES` of it.
    """

    auth_resource = AUTH_RESOURCE_OPEN

    def check_xsrf_cookie(self) -> None:
        # authenticated by the signed open token, not by a cookie: there is no
        # ambient credential for a cross-site request to abuse
        return

    async def prepare(self) -> None:
        self._body = bytearray()
        self._refused = False
        length = self.request.headers.get("Content-Length")
        if length is not None and (not length.isdigit() or int(length) > MAX_OPEN_BODY_BYTES):
            # answered before a byte of the body is read (and before any work for
            # authentication); tornado then closes the connection rather than
            # read the rest
            self.body_left_unread = True
            raise _too_large()
        await super().prepare()

    def data_received(self, chunk: bytes) -> None:
        if self._refused:
            return
        if len(self._body) + len(chunk) > MAX_OPEN_BODY_BYTES:
            # a chunked body (no Content-Length) that grew too large: answer now;
            # tornado drops what follows and closes the connection
            self._refused = True
            self.body_left_unread = True
            self._body.clear()
            self.send_error(413, exc_info=(LimsError, _too_large(), None))
            self.log_exception(LimsError, _too_large(), None)
            return
        self._body += chunk

    @allow_unauthenticated
    async def post(self) -> None:
        if self._refused:
            return
        token = self.request.headers.get(TOKEN_HEADER)
        if not token:
            body = parse_json_object(bytes(self._body))
            token = body.get("token")
            if token is not None and not isinstance(token, str):
                raise LimsError("token_invalid", "The token must be a string.")
        dry_run = self.get_query_argument("dry_run", "0").lower() in ("1", "true", "yes")
        result = await self.bridge.opener.open(token, dry_run=dry_run)
        self.write_json(result, status=201 if result["created"] and not dry_run else 200)


def _too_large() -> LimsError:
    return LimsError(
        "body_too_large", f"The request body is larger than {MAX_OPEN_BODY_BYTES // 1024} KiB."
    )
