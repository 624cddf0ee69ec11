"""The project's errors and the one JSON shape every API error takes.

    {"error": {"status": 404, "code": "patient_not_found", "message": "...", "fields": {...}}}

`fields` appears only on validation errors: it maps each bad parameter to its messages.
Workers use the same classes: `InvalidReading.reason` is the code written to the DLQ header.
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


class PatientNotFound(IcuError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "patient_not_found"
    default_message = "No patient with this uuid."


class InvalidParameter(IcuError):
    """A malformed request parameter: a uuid that is not one, a time that does not parse."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "invalid_parameter"
    default_message = "A request parameter is invalid."


class InvalidCursor(InvalidParameter):
    """A pagination cursor the list did not issue (icu/pagination.py): forged, altered, cut,
    or another list's."""

    code = "invalid_cursor"
    default_message = "Not a cursor this list issued: follow its `next` link."


class AlarmNotFound(IcuError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "alarm_not_found"
    default_message = "No such alarm."


class AlarmNotOpen(IcuError):
    """An action on an alarm that its state does not allow (acknowledging a resolved one)."""

    status_code = status.HTTP_409_CONFLICT
    code = "alarm_not_open"
    default_message = "The alarm is resolved."


class AlarmOffRefused(IcuError):
    """Switching off (or on) an alarm that cannot be switched off: NEWS2 escalation, asystole,
    a technical alarm, or no alarm at all."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "alarm_off_refused"
    default_message = "This alarm cannot be switched off."


class ExportNotFound(IcuError):
    """No such export, or not one the user may see (someone else's is not found either)."""

    status_code = status.HTTP_404_NOT_FOUND
    code = "export_not_found"
    default_message = "No such export."


class ExportNotReady(IcuError):
    """The result of an export still pending or running."""

    status_code = status.HTTP_409_CONFLICT
    code = "export_not_ready"
    default_message = "The export has not finished yet."


class ExportFailed(IcuError):
    """An export that failed: raised by the job with the reason it records, and by the API for
    the result of such an export (which will never come)."""

    status_code = status.HTTP_409_CONFLICT
    code = "export_failed"
    default_message = "The export failed."


class ExportExpired(IcuError):
    """The result of an export older than EXPORT_RESULT_TTL: gone for good."""

    status_code = status.HTTP_410_GONE
    code = "export_expired"
    default_message = "The export has expired."


class ExportResultMissing(IcuError):
    """A successful export whose file is not there: the web server does not see the worker's
    MEDIA_ROOT, or someone deleted it. A fault of the deployment, not of the request."""

    code = "export_result_missing"
    default_message = "The export's file is missing on the server; request the export again."


class RequestTooLarge(IcuError):
    """A request body larger than MAX_REQUEST_BODY_BYTES (icu/request_limits.py)."""

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
    """A readiness check (icu/health.py) that fails; `detail` goes into /readyz's answer."""

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


class InvalidReading(IcuError):
    """A message on the vitals topic that breaks the contract; it goes to the DLQ.

    `reason` is a stable machine code (the `dlq.reason` header), the message says exactly what
    was wrong in words.
    """

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    code = "invalid_reading"

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


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
