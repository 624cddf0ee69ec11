"""The base of the project's errors, the platform's own, and the one JSON shape every API
error takes. Each domain's errors live with its app (patients/errors.py, vitals/errors.py,
exports/errors.py).

    {"error": {"status": 404, "code": "patient_not_found", "message": "...", "fields": {...}}}

`fields` appears only on validation errors: it maps each bad parameter to its messages.
Workers use the same classes: `vitals.errors.InvalidReading.reason` is the DLQ header's code.
"""

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import Http404, HttpRequest, HttpResponsePermanentRedirect, JsonResponse
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


class IcuError(Exception):
    """Base of every error the project raises on purpose."""

    status_code: int = status.HTTP_500_INTERNAL_SERVER_ERROR
    code: str = "error"
    default_message: str = "An error occurred."

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


class InvalidParameter(IcuError):
    """A malformed request parameter: a uuid that is not one, a time that does not parse."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "invalid_parameter"
    default_message = "A request parameter is invalid."


class InvalidCursor(InvalidParameter):
    """A pagination cursor the list did not issue (core/pagination.py): forged, altered, cut,
    or another list's."""

    code = "invalid_cursor"
    default_message = "Not a cursor this list issued: follow its `next` link."


class RequestTooLarge(IcuError):
    """A request body larger than MAX_REQUEST_BODY_BYTES (core/request_limits.py)."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    code = "request_too_large"
    default_message = "The request body is too large."


class LengthRequired(IcuError):
    """A request body without Content-Length: under WSGI Django would read it as empty."""

    status_code = status.HTTP_411_LENGTH_REQUIRED
    code = "length_required"
    default_message = "A request body needs a Content-Length (chunked bodies are not accepted)."


class TooManyFields(IcuError):
    """A form with more fields (or files) than Django's DATA_UPLOAD_MAX_NUMBER_FIELDS (or
    _FILES) allows."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "too_many_fields"
    default_message = "The request body has too many fields."


class KafkaUnavailable(IcuError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "kafka_unavailable"
    default_message = "The Kafka broker cannot be reached."


class NotReady(IcuError):
    """A readiness check (core/health.py) that fails; `detail` goes into /readyz's answer."""

    code = "not_ready"
    default_message = "Not ready."

    def __init__(self, message: str | None = None, *, detail: dict | None = None) -> None:
        super().__init__(message)
        self.detail = detail or {}


class LoginLockedOut(IcuError):
    """A login refused without looking at the password: too many failed logins for the user
    name or from the address (django-axes). `retry_after`: seconds until the lock-out ends."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    code = "login_locked_out"
    default_message = "Too many failed logins."

    def __init__(self, message: str | None = None, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def error_body(*, status_code: int, code: str, message: str, fields: Any = None) -> dict:
    error: dict[str, Any] = {"status": status_code, "code": code, "message": message}
    if fields is not None:
        error["fields"] = fields
    return {"error": error}


def api_exception_handler(exc: Exception, context: dict) -> Response:
    """DRF's EXCEPTION_HANDLER: every error of every API view becomes `error_body`."""
    if isinstance(exc, RequestDataTooBig):  # Django's own limit, met while a parser reads
        exc = request_too_large(limit=settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    elif isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        exc = TooManyFields()
    if isinstance(exc, IcuError):
        body = error_body(status_code=exc.status_code, code=exc.code, message=exc.message)
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return Response(body, status=exc.status_code, headers=headers)
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None:
        # A bug, not a client error: log the traceback, answer in the same shape, leak nothing.
        logger.error("unhandled API error", exc_info=exc)
        body = error_body(status_code=500, code="server_error", message="Internal server error.")
        return Response(body, status=status.HTTP_500_INTERNAL_SERVER_ERROR)

    if isinstance(exc, drf_exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = error_body(
            status_code=response.status_code,
            code="invalid",
            message="Invalid input.",
            fields=fields,
        )
    else:
        codes = exc.get_codes()
        response.data = error_body(
            status_code=response.status_code,
            code=codes if isinstance(codes, str) else exc.default_code,
            message=str(exc.detail),
        )
    return response


def request_too_large(*, limit: int) -> RequestTooLarge:
    return RequestTooLarge(f"The request body is larger than the {limit} bytes accepted.")


def json_error_response(exc: IcuError) -> JsonResponse:
    """An IcuError answered outside DRF (middleware) in the same shape."""
    return _json_error(exc.status_code, exc.code, exc.message)


def _json_error(status_code: int, code: str, message: str) -> JsonResponse:
    body = error_body(status_code=status_code, code=code, message=message)
    return JsonResponse(body, status=status_code)


def json_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """handler404: URLs that match no route answer in the API's error shape."""
    return _json_error(404, "not_found", f"No such resource: {request.path}")


def json_server_error(request: HttpRequest) -> JsonResponse:
    """handler500: errors outside DRF views (middleware, non-API views)."""
    return _json_error(500, "server_error", "Internal server error.")


def unknown_path(view):
    """Marks a catch-all view (the last route under a prefix): `slash_redirect` skips it. It
    changes nothing, so no CSRF check: a POST to an unknown path is its 404, not a 403 page."""
    view = csrf_exempt(view)
    view.unknown_path = True
    return view


def slash_redirect(request: HttpRequest) -> HttpResponsePermanentRedirect | None:
    """What CommonMiddleware's APPEND_SLASH does for a path that matches no route, for a path
    that only a catch-all matched: the redirect to the path with a slash when a real route
    takes that one (`/api/docs` to `/api/docs/`)."""
    path = request.path_info
    if not settings.APPEND_SLASH or path.endswith("/"):
        return None
    try:
        match = resolve(f"{path}/", getattr(request, "urlconf", None))
    except Resolver404:
        return None
    if getattr(match.func, "unknown_path", False):
        return None
    return HttpResponsePermanentRedirect(request.get_full_path(force_append_slash=True))


@unknown_path
def unknown_api_path(request: HttpRequest, url: str = "") -> JsonResponse:
    """The last route under API_PREFIX: a 404 in the error shape whatever DEBUG says (with
    DEBUG on, handler404 is not used and Django answers its HTML page)."""
    return slash_redirect(request) or json_not_found(request)
