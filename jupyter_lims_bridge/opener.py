"""The open use case: a verified token becomes a notebook with its data beside it.

Ties together the verifier (``claims``), the workspace, the stager, the
recent-opens list, the ELN returns (``eln_return``) and the event bus, in the order that keeps DESIGN.md's
promises: everything is checked before anything is written, the ``jti`` is
used up only by a real open, and every open - accepted or refused - is
emitted as an event. Knows nothing of HTTP.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from jupyter_server.utils import url_escape, url_path_join

from . import events
from .claims import OpenRequest, OpenTokenVerifier, ReturnSpec
from .eln_return import ElnReturns
from .errors import LimsError
from .recent import RecentOpens
from .staging import DataStager, PlannedItem
from .workspace import NotebookPlan, Workspace


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _without_query(url: str) -> str:
    # download URLs often carry a signature in their query: keep it out of the notebook
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


class Opener:
    def __init__(
        self,
        *,
        verifier: OpenTokenVerifier,
        workspace: Workspace,
        stager: DataStager,
        recent: RecentOpens,
        event_logger: Any,
        base_url: str,
        open_url: str,
        returns: ElnReturns | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.verifier = verifier
        self.workspace = workspace
        self.stager = stager
        self.recent = recent
        self.event_logger = event_logger
        self.base_url = base_url
        self.open_url = open_url
        self.returns = returns
        self.log = log or logging.getLogger(__name__)

    def notebook_url(self, api_path: str) -> str:
        """The browser URL of a notebook, under the server's base URL."""
        return url_path_join(self.base_url, self.open_url.format(path=url_escape(api_path)))

    # -- the launch page's view --------------------------------------------------

    async def inspect(self, token: str | None) -> tuple[OpenRequest, str | None]:
        """Verify ``token`` without acting. Returns the request and, when its ``jti``
        was already used, the path of the notebook that first open made."""
        try:
            request = await self.verifier.verify(token)
        except LimsError as e:
            self._emit_refused(e)
            raise
        used = self.verifier.replay.get(request.jti) if self.verifier.replay else None
        return request, used.get("path") if used else None

    # -- the open itself -----------------------------------------------------------

    async def open(self, token: str | None, *, dry_run: bool = False) -> dict[str, Any]:
        """Open the entry ``token`` names; the body of ``POST lims/api/open``."""
        request: OpenRequest | None = None
        try:
            request = await self.verifier.verify(token)
            replay = self.verifier.replay
            if replay is not None and replay.get(request.jti) is not None:
                raise LimsError("token_replayed")
            plan = self.workspace.plan(request)
            planned = self.stager.plan(
                request.data, plan.data_dir, plan.data_api_dir, self.workspace.workspace_root
            )
            self.workspace.template(request.notebook.template)  # unknown template: refuse now
            # a return URL outside return_url_prefixes refuses the open now
            return_to = self.returns.check(request.return_to) if self.returns else None
            if dry_run:
                result = await self._dry_run(request, plan, planned)
            else:
                result = await self._open(request, plan, planned, return_to)
        except LimsError as e:
            if e.claims is None and request is not None:
                e.claims = _signed_summary(request)
            self._emit_refused(e)
            raise
        action = "dry_run" if dry_run else ("opened" if result["created"] else "reused")
        events.emit(
            self.event_logger,
            events.OPEN,
            {
                "action": action,
                "issuer": request.iss,
                "subject": request.sub,
                "jti": request.jti,
                "entityType": request.entity.type,
                "entityId": request.entity.id,
                "path": result["path"],
                "dataItems": len(request.data),
            },
        )
        return result

    async def _dry_run(
        self, request: OpenRequest, plan: NotebookPlan, planned: list[PlannedItem]
    ) -> dict[str, Any]:
        created = await self.workspace.would_create(plan, request)
        data = [
            {
                "name": p.item.name,
                "path": p.api_path,
                "status": "queued" if p.is_download else "linked",
            }
            for p in planned
        ]
        return self._result(plan.api_path, created=created, dry_run=True, data=data)

    async def _open(
        self,
        request: OpenRequest,
        plan: NotebookPlan,
        planned: list[PlannedItem],
        return_to: ReturnSpec | None = None,
    ) -> dict[str, Any]:
        replay = self.verifier.replay
        if replay is not None and not replay.consume(request.jti, request.exp, path=plan.api_path):
            raise LimsError("token_replayed")
        opened_at = utc_now()
        try:
            api_path, created = await self.workspace.create(
                plan, request, self._template_context(request, planned, opened_at)
            )
        except BaseException:
            # nothing was written: the link may be tried again
            if replay is not None:
                replay.release(request.jti)
            raise
        if replay is not None and api_path != plan.api_path:
            replay.update(request.jti, path=api_path)
        if return_to is not None and self.returns is not None:
            # kept beside the notebook's path, server-side only (never in the notebook)
            self.returns.remember(api_path, return_to, request.entity.to_json())
        data = await self.stager.apply(planned)
        self.recent.add(request.entity.to_json(), api_path, opened_at)
        return self._result(api_path, created=created, dry_run=False, data=data)

    def _result(
        self, api_path: str, *, created: bool, dry_run: bool, data: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return {
            "fileName": api_path.rsplit("/", 1)[-1],
            "path": api_path,
            "url": self.notebook_url(api_path),
            "created": created,
            "dryRun": dry_run,
            "data": data,
        }

    def _template_context(
        self, request: OpenRequest, planned: list[PlannedItem], opened_at: str
    ) -> dict[str, Any]:
        data = [
            {
                "name": p.item.name,
                "path": f"data/{p.item.name}",
                "kind": "download" if p.is_download else "mount",
            }
            for p in planned
        ]
        provenance = {
            "issuer": request.iss,
            "subject": request.sub,
            "entity": request.entity.to_json(),
            "openedAt": opened_at,
            "jti": request.jti,
            "data": [
                {**p.item.to_json(), **({"url": _without_query(p.item.url)} if p.item.url else {})}
                for p in planned
            ],
            "claims": request.extra,
        }
        return {
            "entity": request.entity.to_json(),
            "notebook": {"template": request.notebook.template},
            "data": data,
            "data_paths": {d["name"]: d["path"] for d in data},
            "issuer": request.iss,
            "opened_at": opened_at,
            "claims": request.extra,
            "provenance": provenance,
        }

    def _emit_refused(self, error: LimsError) -> None:
        claims = error.claims or {}
        entity = claims.get("entity") if isinstance(claims.get("entity"), dict) else {}
        events.emit(
            self.event_logger,
            events.OPEN,
            {
                "action": "refused",
                "reason": error.reason,
                "issuer": _str_or_none(claims.get("iss")),
                "subject": _str_or_none(claims.get("sub")),
                "jti": _str_or_none(claims.get("jti")),
                "entityType": _str_or_none(entity.get("type")),
                "entityId": _str_or_none(entity.get("id")),
            },
        )


def _signed_summary(request: OpenRequest) -> dict[str, Any]:
    """The verified claims an error page and an event may show."""
    return {
        "iss": request.iss,
        "sub": request.sub,
        "jti": request.jti,
        "entity": request.entity.to_json(),
    }


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
