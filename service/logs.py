"""Logging set-up: plain text or one JSON object per line (``LSTM_LOG_FORMAT=json``)."""

from __future__ import annotations

import logging
import sys

import orjson

EXTRA = ("request_id", "route", "status", "duration_ms")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for k in EXTRA:
            if hasattr(record, k):
                out[k] = getattr(record, k)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


# control characters as escapes, so that nothing a client sends (a path with %0a, say) can
# end a log line and write one of its own
_CONTROL = (
    {c: f"\\x{c:02x}" for c in (*range(32), *range(127, 160))}
    | {10: "\\n", 13: "\\r", 9: "\\t"}
    | {c: f"\\u{c:04x}" for c in (0x2028, 0x2029)}
)


def escaped(text: str) -> str:
    return text if text.isprintable() else text.translate(_CONTROL)


class TextFormatter(logging.Formatter):
    """One line per record (a traceback follows on its own lines): the message's control
    characters are escaped."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escaped(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = getattr(record, "request_id", None)
        return f"{line} request_id={escaped(str(rid))}" if rid else line


def configure(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
