"""The one JSON error shape and the log formatters."""

import inspect
import io
import json
import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from django.test import RequestFactory
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from core.exceptions import (
    IcuError,
    InvalidParameter,
    KafkaUnavailable,
    api_exception_handler,
    error_body,
    json_not_found,
    json_server_error,
)
from core.logging import JsonFormatter, TextFormatter, record_extra
from patients.errors import PatientNotFound
from vitals.errors import InvalidReading

PATIENT_UUID = uuid.UUID("11111111-1111-4111-8111-111111111111")
# 2026-11-23T08:00:00.250Z: a quarter second is exact in binary, so milliseconds are too.
CREATED = datetime(2026, 11, 23, 8, 0, 0, 250000, tzinfo=UTC).timestamp()


@contextmanager
def captured(formatter: logging.Formatter) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose records are written, formatted, to a string."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("icu.tests.formatter")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


def record(message: str = "stored %d readings", *args, **extra) -> logging.LogRecord:
    """A record with a fixed creation time."""
    rec = logging.LogRecord(
        "icu.vitals", logging.INFO, "/work/x/consumer.py", 42, message, args or (3,), None, "run"
    )
    rec.created = CREATED
    rec.__dict__.update(extra)
    return rec


# --- JsonFormatter ------------------------------------------------------------------------------


def test_json_formatter_fields() -> None:
    with captured(JsonFormatter()) as (logger, stream):
        line = inspect.currentframe().f_lineno + 1
        logger.warning("stored %d readings", 3, extra={"patient_uuid": PATIENT_UUID, "batch": 7})

    output = stream.getvalue()
    assert output.count("\n") == 1  # one line per record
    entry = json.loads(output)
    timestamp = entry.pop("timestamp")
    assert entry == {
        "level": "WARNING",
        "message": "stored 3 readings",
        "logger": "icu.tests.formatter",
        "module": "test_errors_and_logging",
        "function": "test_json_formatter_fields",
        "line": line,
        "patient_uuid": str(PATIENT_UUID),
        "batch": 7,
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", timestamp)
    assert abs(datetime.fromisoformat(timestamp) - datetime.now(tz=UTC)) < timedelta(seconds=5)


def test_json_formatter_timestamp_is_utc_with_milliseconds() -> None:
    entry = json.loads(JsonFormatter().format(record()))

    assert entry["timestamp"] == "2026-11-23T08:00:00.250+00:00"
    assert entry["module"] == "consumer"
    assert entry["function"] == "run"
    assert entry["line"] == 42


def test_json_formatter_keeps_non_ascii_and_stringifies_objects() -> None:
    output = JsonFormatter().format(
        record("patient %s", "Zoë", when=datetime(2026, 1, 2, tzinfo=UTC))
    )

    assert '"message": "patient Zoë"' in output
    assert json.loads(output)["when"] == "2026-01-02 00:00:00+00:00"


def test_json_formatter_exception() -> None:
    with captured(JsonFormatter()) as (logger, stream):
        try:
            raise ValueError("boom 42")
        except ValueError:
            logger.exception("store failed", extra={"patient_uuid": PATIENT_UUID})

    output = stream.getvalue()
    assert output.count("\n") == 1  # the traceback is escaped inside the JSON string
    entry = json.loads(output)
    assert entry["level"] == "ERROR"
    assert entry["message"] == "store failed"
    assert entry["patient_uuid"] == str(PATIENT_UUID)
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert entry["exception"].endswith("ValueError: boom 42")


def test_json_formatter_without_exception_has_no_exception_field() -> None:
    assert "exception" not in json.loads(JsonFormatter().format(record()))


def test_record_extra_is_only_what_extra_added() -> None:
    assert record_extra(record()) == {}
    assert record_extra(record(partition=2, offset=10)) == {"partition": 2, "offset": 10}


# --- TextFormatter ------------------------------------------------------------------------------


def test_text_formatter_line() -> None:
    line = TextFormatter().format(record(patient_uuid=PATIENT_UUID, batch=7))

    assert line == (
        "2026-11-23T08:00:00.250+00:00 INFO    icu.vitals: stored 3 readings "
        f"[patient_uuid={PATIENT_UUID} batch=7]"
    )


def test_text_formatter_without_extra() -> None:
    assert TextFormatter().format(record()) == (
        "2026-11-23T08:00:00.250+00:00 INFO    icu.vitals: stored 3 readings"
    )


def test_text_formatter_exception() -> None:
    with captured(TextFormatter()) as (logger, stream):
        try:
            raise ValueError("boom 42")
        except ValueError:
            logger.exception("store failed", extra={"partition": 2})

    first, *rest = stream.getvalue().rstrip("\n").split("\n")
    assert re.fullmatch(
        r"\S+\+00:00 ERROR   icu\.tests\.formatter: store failed \[partition=2\]", first
    )
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "ValueError: boom 42"


# --- api_exception_handler ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "status", "code", "message"),
    [
        (PatientNotFound(), 404, "patient_not_found", "No patient with this uuid."),
        (
            PatientNotFound("No patient with uuid x."),
            404,
            "patient_not_found",
            "No patient with uuid x.",
        ),
        (
            InvalidParameter("'7' is not a valid uuid."),
            400,
            "invalid_parameter",
            "'7' is not a valid uuid.",
        ),
        (InvalidParameter(), 400, "invalid_parameter", "A request parameter is invalid."),
        (KafkaUnavailable(), 503, "kafka_unavailable", "The Kafka broker cannot be reached."),
        (
            InvalidReading("out_of_range", "'spo2' 101 is outside 0-100"),
            422,
            "invalid_reading",
            "'spo2' 101 is outside 0-100",
        ),
        (IcuError(), 500, "error", "An error occurred."),
    ],
)
def test_handler_maps_icu_errors(exc: IcuError, status: int, code: str, message: str) -> None:
    response = api_exception_handler(exc, {})

    assert response.status_code == status
    assert response.data == {"error": {"status": status, "code": code, "message": message}}


@pytest.mark.parametrize(
    ("exc", "status", "code", "message"),
    [
        (Http404("secret"), 404, "not_found", "Not found."),
        (
            DjangoPermissionDenied("secret"),
            403,
            "permission_denied",
            "You do not have permission to perform this action.",
        ),
        (
            drf_exceptions.NotAuthenticated(),
            401,
            "not_authenticated",
            "Authentication credentials were not provided.",
        ),
        (
            drf_exceptions.Throttled(wait=3),
            429,
            "throttled",
            "Request was throttled. Expected available in 3 seconds.",
        ),
    ],
)
def test_handler_maps_django_and_drf_errors(exc, status: int, code: str, message: str) -> None:
    response = api_exception_handler(exc, {})

    assert response.status_code == status
    assert response.data == {"error": {"status": status, "code": code, "message": message}}


def test_handler_validation_error_fields() -> None:
    exc = drf_exceptions.ValidationError({"since": ["Bad time."]})

    response = api_exception_handler(exc, {})

    assert response.status_code == 400
    assert response.data == {
        "error": {
            "status": 400,
            "code": "invalid",
            "message": "Invalid input.",
            "fields": {"since": ["Bad time."]},
        }
    }


def test_handler_validation_error_list_goes_to_non_field_errors() -> None:
    response = api_exception_handler(drf_exceptions.ValidationError(["Nope."]), {})

    assert response.data["error"]["fields"] == {"non_field_errors": ["Nope."]}


def test_error_body_leaves_out_fields_unless_given() -> None:
    assert error_body(status_code=400, code="c", message="m") == {
        "error": {"status": 400, "code": "c", "message": "m"}
    }
    assert error_body(status_code=400, code="c", message="m", fields={}) == {
        "error": {"status": 400, "code": "c", "message": "m", "fields": {}}
    }


class ExplodingView(APIView):
    authentication_classes = []
    permission_classes = []

    def get(self, request):
        raise RuntimeError("connection string postgres://admin:hunter2@db")


class RaisingIcuErrorView(APIView):
    authentication_classes = []
    permission_classes = []

    def get(self, request):
        raise KafkaUnavailable("Broker 10.0.0.1:9092 down.")


def test_unexpected_exception_in_a_view_is_a_500_without_details(caplog) -> None:
    request = APIRequestFactory().get("/boom/")

    with caplog.at_level(logging.ERROR, logger="core.exceptions"):
        response = ExplodingView.as_view()(request)
        response.render()

    assert response.status_code == 500
    assert json.loads(response.content) == {
        "error": {"status": 500, "code": "server_error", "message": "Internal server error."}
    }
    assert b"hunter2" not in response.content
    (logged,) = [r for r in caplog.records if r.name == "core.exceptions"]
    assert logged.levelno == logging.ERROR
    assert logged.getMessage() == "unhandled API error"
    assert logged.exc_info[0] is RuntimeError
    assert "Traceback (most recent call last)" in caplog.text
    assert "RuntimeError: connection string postgres://admin:hunter2@db" in caplog.text


def test_icu_error_in_a_view(caplog) -> None:
    request = APIRequestFactory().get("/kafka/")

    response = RaisingIcuErrorView.as_view()(request)
    response.render()

    assert isinstance(response, Response)
    assert response.status_code == 503
    assert json.loads(response.content) == {
        "error": {
            "status": 503,
            "code": "kafka_unavailable",
            "message": "Broker 10.0.0.1:9092 down.",
        }
    }
    assert not [r for r in caplog.records if r.name == "core.exceptions"]


# --- handler404 / handler500 --------------------------------------------------------------------


def test_json_not_found_handler() -> None:
    response = json_not_found(RequestFactory().get("/somewhere/else"), Http404())

    assert response.status_code == 404
    assert json.loads(response.content) == {
        "error": {
            "status": 404,
            "code": "not_found",
            "message": "No such resource: /somewhere/else",
        }
    }


def test_json_server_error_handler() -> None:
    response = json_server_error(RequestFactory().get("/x"))

    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content) == {
        "error": {"status": 500, "code": "server_error", "message": "Internal server error."}
    }


def test_unknown_path_outside_the_api_is_json_404(client) -> None:
    response = client.get("/not/here/")

    assert response.status_code == 404
    assert response.json() == {
        "error": {"status": 404, "code": "not_found", "message": "No such resource: /not/here/"}
    }


def test_django_request_objects_become_method_and_path_and_sockets_are_dropped():
    import socket

    from django.test import RequestFactory

    from core.logging import JsonFormatter

    http_request = RequestFactory().get("/api/patients/?page=2")
    record = logging.LogRecord(
        "django.request", logging.WARNING, __file__, 1, "Unauthorized", (), None
    )
    record.request = http_request
    record.status_code = 401
    with socket.socket() as raw:
        server_record = logging.LogRecord(
            "django.server", logging.INFO, __file__, 1, "GET", (), None
        )
        server_record.request = raw
        server_line = json.loads(JsonFormatter().format(server_record))

    line = json.loads(JsonFormatter().format(record))

    assert (line["method"], line["path"], line["status_code"]) == ("GET", "/api/patients/", 401)
    assert "request" not in line
    assert "request" not in server_line
