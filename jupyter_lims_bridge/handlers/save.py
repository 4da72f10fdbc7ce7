"""``lims/api/save``: Save to ELN (``POST``) and the saves of a notebook (``GET ?path=``).

Thin: the work is :class:`~jupyter_lims_bridge.eln_return.ElnReturns`'s. Only the
server's owner may call it (normal Jupyter auth, XSRF on the POST like every
Jupyter API). Answers never hold the grant or the return URL.
"""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from .base import AUTH_RESOURCE_SAVE, LimsAPIHandler


class SaveHandler(LimsAPIHandler):
    auth_resource = AUTH_RESOURCE_SAVE

    @web.authenticated
    @authorized
    def get(self) -> None:
        self.write_json(self.bridge.eln_returns.describe(self.get_query_argument("path", None)))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.get_json_object()
        self.write_json(await self.bridge.eln_returns.save(body.get("path"), body.get("formats")))
