"""Logging set-up: plain text or one JSON object per line (``PROXY_LOG_FORMAT=json``)."""

from __future__ import annotations

import logging
import time

import orjson

# Longest client-supplied value a log line shows (paths, model names, header names).
CLIP_CHARS = 120


def clip(value: object, limit: int = CLIP_CHARS) -> str:
    """A client-supplied value made safe for one log line: at most ``limit`` characters shown,
    control characters escaped (no forged lines), and how much was cut said at the end.

    Every log call that formats something a client sent goes through this: a multi-megabyte
    model name must cost a log line, not megabytes of log storage.
    """
    text = value if isinstance(value, str) else repr(value)
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text[:limit])
    return shown if len(text) <= limit else f"{shown}...(+{len(text) - limit} chars)"


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
