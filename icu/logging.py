"""Log formatters: one JSON object per line for machines, a compact line for a terminal.

Context goes in through `extra=`, e.g. `logger.info("stored", extra={"patient_uuid": u})`;
every extra key becomes a field of the JSON line.
"""

import json
import logging
from datetime import UTC, datetime

from django.http import HttpRequest

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime"}
)


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")


def record_extra(record: logging.LogRecord) -> dict[str, object]:
    """The context fields passed with `extra=` on one record.

    Django's own loggers pass `request`: an HttpRequest (django.request), which becomes its
    method and path, or the raw socket (django.server), which says nothing the message does not.
    """
    extra = {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS}
    request = extra.pop("request", None)
    if isinstance(request, HttpRequest):
        extra["method"], extra["path"] = request.method, request.path
    elif isinstance(request, str):
        extra["request"] = request
    return extra


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "timestamp": _timestamp(record),
            "level": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            "module": record.module,
            "function": record.funcName,
            "line": record.lineno,
        }
        for key, value in record_extra(record).items():
            entry.setdefault(key, value)  # context never overwrites the standard fields
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in record_extra(record).items())
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extra:
            line += f" [{extra}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line
