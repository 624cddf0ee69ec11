"""Bounds on request bodies, checked before anything reads them.

Django's own DATA_UPLOAD_MAX_MEMORY_SIZE is met only once a body is read (and through DRF's
parsers it becomes a 500 with a traceback). This middleware looks at the headers alone:

- a Content-Length above MAX_REQUEST_BODY_BYTES: 413, the body left unread (gunicorn drains a
  little of it and closes the connection);
- a body without Content-Length (`Transfer-Encoding: chunked`): 411. Under WSGI Django reads
  such a body as empty (its stream is limited to CONTENT_LENGTH, 0 when absent), so a PATCH
  would silently change nothing; refusing it says so.

Above it nothing can read more than the limit: Django's request stream stops at the
Content-Length.

And the address: a NUL character (U+0000, `%00`) in the path or the query is a 400 before any
view sees it (RequestAddressCheckMiddleware). PostgreSQL's text cannot hold one: handed to a
filter or a lookup it was a DataError, a 500. No parameter of ours has a use for one; bodies
are the serializers' (DRF's CharField refuses NUL).
"""

from collections.abc import Callable
from urllib.parse import unquote

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from core.exceptions import (
    InvalidParameter,
    LengthRequired,
    json_error_response,
    request_too_large,
)


class RequestBodyLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "HTTP_TRANSFER_ENCODING" in request.META:
            return json_error_response(LengthRequired())
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0  # Django reads nothing of a body whose length is not a number
        if length > settings.MAX_REQUEST_BODY_BYTES:
            return json_error_response(request_too_large(limit=settings.MAX_REQUEST_BODY_BYTES))
        return self.get_response(request)


NUL_REFUSED = "The request's address holds a NUL character (U+0000), which no parameter may hold."


class RequestAddressCheckMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "\x00" in request.path or "\x00" in unquote(request.META.get("QUERY_STRING", "")):
            return json_error_response(InvalidParameter(NUL_REFUSED))
        return self.get_response(request)
