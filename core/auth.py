"""The login doors' defences: which address a request comes from, the lock-out's answer and the
login log.

- `client_address`: the client's address, with TRUSTED_PROXIES deciding whether (and which
  entry of) X-Forwarded-For counts. django-axes (AXES_CLIENT_IP_CALLABLE) and the login log use
  it; DRF's throttles count by the same rule (NUM_PROXIES, set from the same setting).
- `lockout_response`: django-axes' AXES_LOCKOUT_CALLABLE, for the doors that are Django views
  (the central station's and the admin's login pages, the browsable API's login).
- `login_locked_out_error`: the same refusal for the token endpoint, a DRF view.
- One JSON line per login attempt, on the logger `core.auth`: door (the URL name of the login
  view), username, client_address, outcome (success, failure, locked_out). Never the password.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from core.exceptions import LoginLockedOut, error_body

logger = logging.getLogger("core.auth")

# Namespaces of the login views that answer in the API's JSON error shape.
_API_NAMESPACES = frozenset({"api", "rest_framework"})


def client_address(request: HttpRequest) -> str:
    """The address of the client: the peer's (REMOTE_ADDR) when no proxy is trusted, else the
    entry of X-Forwarded-For that the outermost trusted proxy added (the N-th from the right;
    each proxy appends the address it was connected from). Entries further left were written by
    the client and prove nothing. The rule of DRF's throttles with NUM_PROXIES."""
    remote = request.META.get("REMOTE_ADDR", "")
    proxies = settings.TRUSTED_PROXIES
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if not proxies or not forwarded:
        return remote
    addresses = forwarded.split(",")
    return addresses[-min(proxies, len(addresses))].strip()


def _duration_text(duration: timedelta) -> str:
    seconds = int(duration.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds} seconds"


def login_locked_out_message() -> str:
    return (
        "Too many failed logins for this user name or from this address: logins are refused "
        f"for {_duration_text(settings.AXES_COOLOFF_TIME)}. An administrator can lift the "
        "lock-out sooner."
    )


def login_locked_out_error() -> LoginLockedOut:
    return LoginLockedOut(
        login_locked_out_message(),
        retry_after=int(settings.AXES_COOLOFF_TIME.total_seconds()),
    )


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict | None
) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: the API's JSON error for the browsable API's login, a page for
    the central station's and the admin's."""
    error = login_locked_out_error()
    match = getattr(request, "resolver_match", None)
    if match is not None and match.namespace in _API_NAMESPACES:
        body = error_body(status_code=error.status_code, code=error.code, message=error.message)
        response = JsonResponse(body, status=error.status_code)
    else:
        response = render(
            request,
            "core/login_locked_out.html",
            {"message": error.message},
            status=error.status_code,
        )
    response["Retry-After"] = str(error.retry_after)
    return response


def _door(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    return match.view_name if match is not None else request.path


def _log(request: HttpRequest, *, username: str, outcome: str) -> None:
    fields = {
        "door": _door(request),
        "username": username[:150],
        "client_address": client_address(request),
        "outcome": outcome,
    }
    if outcome == "success":
        logger.info("login", extra=fields)
    else:
        logger.warning("login failed", extra=fields)


# Connected after django-axes' receivers (icu comes after axes in INSTALLED_APPS): a failure
# that reaches the limit is already marked `axes_locked_out`, as its answer says.
@receiver(user_login_failed, dispatch_uid="core.auth.login_failed")
def _login_failed(sender, credentials: dict, request: HttpRequest | None = None, **kwargs) -> None:
    if request is None:  # no door: a shell or a script calling authenticate()
        return
    outcome = "locked_out" if getattr(request, "axes_locked_out", False) else "failure"
    _log(request, username=str(credentials.get("username") or ""), outcome=outcome)


@receiver(user_logged_in, dispatch_uid="core.auth.logged_in")
def _logged_in(sender, request: HttpRequest | None, user, **kwargs) -> None:
    if request is None:
        return
    _log(request, username=user.get_username(), outcome="success")
