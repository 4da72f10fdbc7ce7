"""Event schema ids of the bridge and the one helper that emits them.

Schemas live in ``event_schemas/<name>/v<N>.yaml`` and are registered on
jupyter_server's event bus at start-up, so a deployment can route them to its
own log pipeline (``c.EventLogger.handlers``). The managers emit, not the
handlers. No event ever carries a token or a secret.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).parent / "event_schemas"
_BASE = "https://events.jupyter.org/jupyter_lims_bridge"

OPEN = f"{_BASE}/open"
STAGING = f"{_BASE}/staging"
PROXY_TOKENS = f"{_BASE}/proxy_tokens"
PROXY_SESSION = f"{_BASE}/proxy_session"
SAVE = f"{_BASE}/save"

log = logging.getLogger(__name__)


def register_event_schemas(event_logger: Any) -> None:
    """Register every schema shipped in ``event_schemas/`` (once per logger)."""
    for path in sorted(SCHEMA_DIR.glob("*/v*.yaml")):
        try:
            event_logger.register_event_schema(path)
        except Exception as e:
            log.debug("lims-bridge: schema %s not registered: %s", path.name, e)


def emit(event_logger: Any, schema_id: str, data: dict[str, Any]) -> None:
    """Emit ``data`` on ``schema_id``, dropping ``None`` values; never raises."""
    if event_logger is None:
        return
    try:
        event_logger.emit(
            schema_id=schema_id, data={k: v for k, v in data.items() if v is not None}
        )
    except Exception:
        log.exception("lims-bridge: could not emit %s", schema_id)
