"""``GET lims/api/status``: what the panel needs to know about this server."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from .base import AUTH_RESOURCE_STATUS, LimsAPIHandler


class StatusHandler(LimsAPIHandler):
    auth_resource = AUTH_RESOURCE_STATUS

    @web.authenticated
    @authorized
    def get(self) -> None:
        self.write_json(self.bridge.status())
