"""Opening an ELN entry: the deep-link page and the server-to-server API.

``GET lims/open?lims_token=…`` is a page (so JupyterHub's OAuth completes by
itself): it verifies the token and renders the launch page, whose script
performs the open. The GET itself writes nothing, so link previewers cannot use
up a link. ``POST lims/api/open`` is authenticated by the open token alone.
"""

from __future__ import annotations

from jupyter_server.auth.decorator import allow_unauthenticated, authorized
from tornado import web

from ..errors import LimsError
from ..urls import url_for
from .base import AUTH_RESOURCE_OPEN, LimsAPIHandler, LimsPageHandler

TOKEN_HEADER = "X-Lims-Token"


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
                static=self.static_url,
            )
        )


class OpenHandler(LimsAPIHandler):
    """``POST lims/api/open``: the open token is the only credential."""

    auth_resource = AUTH_RESOURCE_OPEN

    def check_xsrf_cookie(self) -> None:
        # authenticated by the signed open token, not by a cookie: there is no
        # ambient credential for a cross-site request to abuse
        return

    @allow_unauthenticated
    async def post(self) -> None:
        token = self.request.headers.get(TOKEN_HEADER)
        if not token:
            body = self.get_json_object()
            token = body.get("token")
            if token is not None and not isinstance(token, str):
                raise LimsError("token_invalid", "The token must be a string.")
        dry_run = self.get_query_argument("dry_run", "0").lower() in ("1", "true", "yes")
        result = await self.bridge.opener.open(token, dry_run=dry_run)
        self.write_json(result, status=201 if result["created"] and not dry_run else 200)
