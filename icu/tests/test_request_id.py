"""Every request has an id, in the response's X-Request-ID header and on every log line the
request causes, whichever logger writes it."""

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from django.http import HttpRequest, JsonResponse
from django.test import Client, override_settings
from django.urls import path

from core.logging import JsonFormatter

view_logger = logging.getLogger("icu.tests.request_id")


def logging_view(request: HttpRequest) -> JsonResponse:
    view_logger.warning("inside the view", extra={"patient_uuid": "p-1"})
    return JsonResponse({"ok": True})


urlpatterns = [path("logging-view", logging_view)]


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What the view's logger and django.request write, formatted as in production."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    loggers = [view_logger, logging.getLogger("django.request")]
    for logger in loggers:
        logger.addHandler(handler)
    yield stream
    for logger in loggers:
        logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@override_settings(ROOT_URLCONF=__name__)
def test_a_new_id_is_in_the_header_and_on_the_views_log_lines(
    client: Client, json_lines: io.StringIO
) -> None:
    first = client.get("/logging-view")
    second = client.get("/logging-view")

    ids = [first["X-Request-ID"], second["X-Request-ID"]]
    assert all(re.fullmatch(r"[0-9a-f]{32}", request_id) for request_id in ids)
    assert ids[0] != ids[1]
    logged = lines(json_lines)
    assert [(line["message"], line["request_id"], line["patient_uuid"]) for line in logged] == [
        ("inside the view", ids[0], "p-1"),
        ("inside the view", ids[1], "p-1"),
    ]


@override_settings(ROOT_URLCONF=__name__)
def test_a_well_formed_id_from_the_caller_is_kept(client: Client, json_lines: io.StringIO) -> None:
    response = client.get("/logging-view", HTTP_X_REQUEST_ID="edge-7f3a.42:1")

    assert response["X-Request-ID"] == "edge-7f3a.42:1"
    assert lines(json_lines)[0]["request_id"] == "edge-7f3a.42:1"


@pytest.mark.parametrize(
    "given",
    ["", "two words", "x" * 129, 'forged\n{"level": "CRITICAL"}', "é-accent", "a;b"],
)
@override_settings(ROOT_URLCONF=__name__)
def test_a_malformed_id_is_replaced(client: Client, json_lines: io.StringIO, given: str) -> None:
    response = client.get("/logging-view", HTTP_X_REQUEST_ID=given)

    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"])
    assert lines(json_lines)[0]["request_id"] == response["X-Request-ID"]


@pytest.mark.django_db
def test_django_request_warnings_after_the_middleware_carry_the_id(
    client: Client, json_lines: io.StringIO
) -> None:
    """Django logs a 4xx response (django.request) once the middleware has returned."""
    response = client.get("/api/patients/")

    assert response.status_code == 401
    [logged] = lines(json_lines)
    assert (logged["logger"], logged["level"], logged["path"]) == (
        "django.request",
        "WARNING",
        "/api/patients/",
    )
    assert logged["request_id"] == response["X-Request-ID"]


def test_no_request_no_request_id(json_lines: io.StringIO) -> None:
    view_logger.warning("from a worker")

    assert "request_id" not in lines(json_lines)[0]
