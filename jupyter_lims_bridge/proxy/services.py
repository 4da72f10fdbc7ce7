"""Named services: ``lims/proxy/<name>/`` for the services an operator declares
in ``c.ServerProxy.servers`` (jupyter-server-proxy's configuration).

Owns: which names may be reached (``allowed_services``), and the launch of a
declared service on its first request through jupyter-server-proxy's own
machinery (its ``SuperviseAndProxyHandler``: command template, environment,
readiness check, timeout, supervision), which tells us the service's port.
Our proxy then relays to that port like to any other (access.py decides who
may pass, upstream.py and tunnel.py relay).

jupyter-server-proxy's supervision lives in its handler class, so a launch
builds one such handler over a request of its own (never the client's) and
awaits its ``ensure_process``; when jupyter-server-proxy's own extension is
enabled too, the state of its ``/<name>/`` route is shared, so both reach one
process. Tested with jupyter-server-proxy 4.6 (``pyproject.toml`` pins
``>=4.6,<4.7``): ``ServerProxy.servers``, ``ServerProcess.make_proxy_handler``,
the handler's ``state``, ``ensure_process`` and ``port``.

Must not: import jupyter-server-proxy before a named service is first asked for
(a server never using one pays nothing for it), relay anything itself, or
reach a service over a Unix socket (we relay to 127.0.0.1 only).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from typing import Any

from tornado import httputil

log = logging.getLogger(__name__)

#: a service name: never all digits (those are ports), never the ``absolute`` route
NAME = re.compile(r"[a-z][a-z0-9-]*")
RESERVED = frozenset({"absolute"})


def valid_name(name: str) -> bool:
    return bool(NAME.fullmatch(name)) and name not in RESERVED


class ServiceUnavailable(Exception):
    """A named service could not be launched or is not declared."""


class _NoConnection:
    """The connection of the launch's own request: no client behind it."""

    def set_close_callback(self, callback: Any) -> None:
        return None


class NamedServices:
    """The allowed named services of one server, launched on demand."""

    def __init__(self, serverapp: Any, allowed: Iterable[str]) -> None:
        self.allowed = frozenset(allowed)
        self._serverapp = serverapp
        self._declared: dict[str, Any] | None = None
        #: name -> jupyter-server-proxy's handler state (holds the process and its port)
        self._states: dict[str, dict[str, Any]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        #: names whose state is jupyter-server-proxy's own route's (it stops them)
        self._shared: set[str] = set()

    def _processes(self) -> dict[str, Any]:
        if self._declared is None:
            from jupyter_server_proxy.config import ServerProxy

            config = ServerProxy(parent=self._serverapp)
            self._declared = {
                name: sp for name, sp in config.servers.items() if name in self.allowed
            }
        return self._declared

    async def port_of(self, name: str) -> int:
        """The port of service ``name`` (allowed), launching it if it is not running."""
        process = self._processes().get(name)
        if process is None:
            raise ServiceUnavailable(f"{name} is not declared in ServerProxy.servers")
        if getattr(process, "unix_socket", None):
            raise ServiceUnavailable(f"{name} listens on a Unix socket")
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            handler = self._handler(name, process)
            try:
                await handler.ensure_process()
            except Exception as e:
                # jupyter-server-proxy raises HTTPError(500) when the process is not
                # ready in time; its message names the service only
                log.warning("lims-bridge: proxy: starting service %s failed: %s", name, e)
                raise ServiceUnavailable(str(e)) from None
            return int(handler.port)

    async def close(self) -> None:
        """Stop the services launched here (a shared one is jupyter-server-proxy's to stop)."""
        for name, state in self._states.items():
            proc = state.get("proc")
            if name in self._shared or not hasattr(proc, "terminate"):
                continue
            try:
                await asyncio.wait_for(proc.terminate(), 5)
            except Exception:
                log.warning("lims-bridge: proxy: service %s did not stop; killing it", name)
                try:
                    await proc.kill()
                except Exception:
                    log.exception("lims-bridge: proxy: could not stop service %s", name)

    def _handler(self, name: str, process: Any) -> Any:
        cls, kwargs = process.make_proxy_handler()
        if cls is None:
            raise ServiceUnavailable(f"{name} cannot be proxied")
        state = self._states.get(name)
        if state is None:
            shared = _registered_state(self._serverapp.web_app, name)
            if shared is not None:
                self._shared.add(name)
            self._states[name] = shared if shared is not None else kwargs["state"]
        kwargs = {**kwargs, "state": self._states[name]}
        request = httputil.HTTPServerRequest(
            method="GET", uri=f"/{name}/", connection=_NoConnection()
        )
        return cls(self._serverapp.web_app, request, **kwargs)


def _registered_state(web_app: Any, name: str) -> dict[str, Any] | None:
    """The state of jupyter-server-proxy's own route for ``name`` (its pattern
    ends ``/<name>/(.*)``), if its extension registered one: then both
    launches share one process."""
    pending = [web_app.default_router]
    while pending:
        router = pending.pop()
        for rule in getattr(router, "rules", ()):
            target = rule.target
            if hasattr(target, "rules"):
                pending.append(target)
                continue
            kwargs = getattr(rule, "target_kwargs", None) or {}
            regex = getattr(getattr(rule, "matcher", None), "regex", None)
            pattern = regex.pattern.rstrip("$") if regex is not None else ""
            if pattern.endswith(f"/{name}/(.*)") and isinstance(kwargs.get("state"), dict):
                return kwargs["state"]
    return None


__all__ = ["NAME", "NamedServices", "ServiceUnavailable", "valid_name"]
