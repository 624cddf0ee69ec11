"""Log formatters: one JSON object per line for machines, a compact line for a terminal.

Context goes in through `extra=`, e.g. `logger.info("stored", extra={"patient_uuid": u})`;
every extra key becomes a field of the JSON line. Every line logged while a web request is
handled also carries its `request_id` (RequestIdMiddleware), so that one request's lines can be
found among many workers'.
"""

import json
import logging
import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime

from django.http import HttpRequest, HttpResponse

# The id of the web request being handled, if any (a ContextVar: right under threads and ASGI).
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
REQUEST_ID_HEADER = "X-Request-ID"
# An id from a proxy or client is kept if it looks like one (a uuid, a trace id...); anything
# else (too long, spaces, control characters: log injection) is replaced by a fresh one.
_REQUEST_ID_SHAPE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestIdMiddleware:
    """Give every request an id: the caller's `X-Request-ID` when well-formed, else a new one;
    put it on the log lines of the request and in the response's `X-Request-ID` header."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = given if _REQUEST_ID_SHAPE.fullmatch(given) else uuid.uuid4().hex
        # On the request too: Django logs 4xx/5xx responses (django.request) after the
        # middleware has returned, with the request but outside this context.
        request.request_id = request_id
        token = request_id_var.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response[REQUEST_ID_HEADER] = request_id
        return response


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
    request_id = request_id_var.get()
    if request_id is not None:
        extra.setdefault("request_id", request_id)
    request = extra.pop("request", None)
    if isinstance(request, HttpRequest):
        extra["method"], extra["path"] = request.method, request.path
        if getattr(request, "request_id", None):
            extra.setdefault("request_id", request.request_id)
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
