"""The owner's API for the port proxy: proxy tokens and the proxy mode.

``GET/POST lims/api/tokens``, ``DELETE lims/api/tokens/<id>`` and
``PUT lims/api/proxy``. Jupyter authentication and XSRF as every Jupyter API;
the token store (proxy_tokens.py) does the work and emits the events.
"""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..urls import url_for
from .base import AUTH_RESOURCE_PROXY, AUTH_RESOURCE_TOKENS, LimsAPIHandler


class TokensHandler(LimsAPIHandler):
    auth_resource = AUTH_RESOURCE_TOKENS

    @web.authenticated
    @authorized
    def get(self) -> None:
        bridge = self.bridge
        self.write_json(
            {
                "mode": bridge.port_proxy.mode,
                "allowedPorts": sorted(bridge.port_proxy.ports),
                "allowedServices": sorted(bridge.port_proxy.services.allowed),
                "tokens": bridge.proxy_tokens.list(),
            }
        )

    @web.authenticated
    @authorized
    def post(self) -> None:
        body = self.get_json_object()
        created = self.bridge.proxy_tokens.create(
            body.get("name"),
            body.get("ports"),
            body.get("expiresIn"),
            allowed_ports=self.bridge.port_proxy.ports,
            services=body.get("services"),
            allowed_services=self.bridge.port_proxy.services.allowed,
        )
        self.set_header("Location", url_for("token", self.base_url, token_id=created["id"]))
        self.write_json(created, status=201)


class TokenHandler(LimsAPIHandler):
    auth_resource = AUTH_RESOURCE_TOKENS

    @web.authenticated
    @authorized
    def delete(self, token_id: str) -> None:
        self.bridge.proxy_tokens.revoke(token_id)
        self.set_status(204)
        self.finish()


class ProxyModeHandler(LimsAPIHandler):
    auth_resource = AUTH_RESOURCE_PROXY

    @web.authenticated
    @authorized
    def put(self) -> None:
        mode = self.get_json_object().get("mode")
        self.bridge.set_proxy_mode(mode)  # the service checks it (bad_request)
        self.write_json({"mode": mode})
