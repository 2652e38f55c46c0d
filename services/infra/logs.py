"""Structured logs: one JSON object per line (or readable key=value lines on a terminal).

Our own events go through structlog; the standard library's loggers (uvicorn, litestar,
asyncpg) are rendered by the same processors, so every line has one shape.
"""

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

#: ``scheme://user:password@``: the password part of a URL (a NATS or PostgreSQL login).
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:@/\s]*):[^@/\s]*@", re.IGNORECASE)


def redact_passwords(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace the password of every URL in a string value with ``***``."""
    for key, value in event_dict.items():
        if isinstance(value, str) and "@" in value:
            event_dict[key] = _URL_PASSWORD.sub(r"\1:***@", value)
    return event_dict


_SHARED: list[structlog.types.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    redact_passwords,
]


def configure_logging(level: str = "info", *, json: bool | None = None) -> None:
    """Send every log record to stderr; JSON unless stderr is a terminal (or ``json`` says)."""
    as_json = (not sys.stderr.isatty()) if json is None else json
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            *_SHARED,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*_SHARED, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
