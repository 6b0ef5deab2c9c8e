"""Logging set-up: plain text or one JSON object per line (``PROXY_LOG_FORMAT=json``)."""

from __future__ import annotations

import logging
import time

import orjson

LOG_VALUE_CHARS = 120


def clip(value: str, limit: int = LOG_VALUE_CHARS) -> str:
    """A client- or upstream-controlled string made safe to log: ``repr``-quoted and bounded."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...'"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure_logging(level: str, fmt: str) -> None:
    """Install one stream handler on the root logger."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
