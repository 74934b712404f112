"""JSON-lines logging with a request id; records carry ids and resource types, never payloads or names."""

from __future__ import annotations

import contextvars
import json
import logging
import sys

import orjson

from gateway.clock import instant

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
QUIET_LIBRARIES = ("httpx", "httpcore", "hpack", "h2", "h11")
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": instant(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            entry["request_id"] = rid
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type and where it was raised; its message could quote data, so it is left out.
            entry["error"] = record.exc_info[0].__name__
            tb = record.exc_info[2]
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            if tb is not None:
                entry["at"] = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
        try:
            return orjson.dumps(entry, default=str).decode()
        except orjson.JSONEncodeError:  # an integer past 64 bits, say: the standard encoder writes anything
            return json.dumps(entry, default=str)


def configure(level: str = "INFO") -> None:
    """Send every log record to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    # The JSON lines carry neither the caller's file and line nor thread and process names: the logging HOWTO's
    # "Optimization" switches spare each record a stack walk and those lookups.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # HTTP client libraries log every request's URL at INFO (httpx) or its host and headers at DEBUG (httpcore):
    # webhook receivers, EHR paths and vendors' query strings, which can hold patient ids. Their warnings only.
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = name != "uvicorn.access"
