"""The four login doors (central station, admin, browsable API, token endpoint): failed logins
locked out per user name and per client address (django-axes), the lock-out's answer, the
operator's command that lifts it, and one JSON log line per login attempt (core/auth.py)."""

import json
import logging
from dataclasses import dataclass

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.core.management import call_command
from django.test import Client

from core.logging import JsonFormatter

pytestmark = pytest.mark.django_db

PASSWORD = "x" * 16  # the staff user "chief" (testing.fixtures.staff_user): every door lets him in
WRONG = "not-his-password-7"
LOCKED_MESSAGE = (
    "Too many failed logins for this user name or from this address: logins are refused for "
    "15 minutes. An administrator can lift the lock-out sooner."
)


@dataclass(frozen=True)
class Door:
    name: str  # the `door` field of the log line: the URL name of the login view
    path: str
    api: bool  # answers in the API's JSON error shape

    def login(self, username: str, password: str, **extra: str):
        return Client().post(self.path, {"username": username, "password": password}, **extra)

    def let_in(self, response) -> bool:
        if self.name == "api:token":
            return response.status_code == 200 and "token" in response.json()
        return response.status_code == 302 and "_auth_user_id" in response.client.session

    def refused(self, response) -> bool:
        """Wrong credentials, told so in the door's usual way (no lock-out yet)."""
        return response.status_code == (400 if self.name == "api:token" else 200)


DOORS = [
    Door("ward:login", "/login/", api=False),
    Door("admin:login", "/admin/login/", api=False),
    Door("rest_framework:login", "/api/auth/login/", api=True),
    Door("api:token", "/api/auth/token/", api=True),
]
door_param = pytest.mark.parametrize("door", DOORS, ids=[d.path for d in DOORS])


def assert_locked_out(door: Door, response) -> None:
    assert response.status_code == 429
    assert response["Retry-After"] == "900"
    if door.api:
        assert response["Content-Type"] == "application/json"
        assert response.json() == {
            "error": {"status": 429, "code": "login_locked_out", "message": LOCKED_MESSAGE}
        }
    else:
        assert response["Content-Type"] == "text/html; charset=utf-8"
        page = response.content.decode()
        assert "<h1>Login locked</h1>" in page
        assert LOCKED_MESSAGE in page


def test_the_lock_out_settings_of_the_suite_are_the_defaults() -> None:
    assert settings.AXES_FAILURE_LIMIT == 5
    assert settings.AXES_LOCKOUT_PARAMETERS == ["username", "ip_address"]


@door_param
def test_a_user_name_is_locked_after_the_limit_whatever_the_address(door, staff_user) -> None:
    for n in range(settings.AXES_FAILURE_LIMIT - 1):
        assert door.refused(door.login("chief", WRONG, REMOTE_ADDR=f"10.0.0.{n}"))
    # The attempt that reaches the limit is answered with the lock-out already.
    assert_locked_out(door, door.login("chief", WRONG, REMOTE_ADDR="10.0.0.50"))

    # The right password, from an address never seen: refused, without being checked.
    assert_locked_out(door, door.login("chief", PASSWORD, REMOTE_ADDR="10.9.9.9"))
    # Another user is not locked.
    assert door.refused(door.login("nobody", WRONG, REMOTE_ADDR="10.9.9.9"))

    call_command("axes_reset_username", "chief")
    assert door.let_in(door.login("chief", PASSWORD, REMOTE_ADDR="10.9.9.9"))


@door_param
def test_an_address_is_locked_after_the_limit_whatever_the_user_name_or_forwarded_for(
    door, staff_user
) -> None:
    for n in range(settings.AXES_FAILURE_LIMIT):
        # A client rotating X-Forwarded-For: no proxy is trusted (TRUSTED_PROXIES=0).
        door.login(f"guess{n}", WRONG, REMOTE_ADDR="10.1.1.1", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")

    assert_locked_out(door, door.login("chief", PASSWORD, REMOTE_ADDR="10.1.1.1"))
    assert door.let_in(door.login("chief", PASSWORD, REMOTE_ADDR="10.2.2.2"))


def test_the_reset_commands_lift_a_lock_out_and_say_what_they_removed(staff_user, capsys) -> None:
    door = DOORS[0]
    for _ in range(settings.AXES_FAILURE_LIMIT):
        door.login("chief", WRONG, REMOTE_ADDR="10.3.3.3")
    assert_locked_out(door, door.login("chief", PASSWORD, REMOTE_ADDR="10.4.4.4"))

    call_command("axes_reset_ip", "10.3.3.3")  # returns normally: exit status 0
    assert capsys.readouterr().out == "1 attempts removed.\n"
    call_command("axes_reset_username", "chief")
    assert capsys.readouterr().out == "No attempts found.\n"  # the same attempt, gone already

    assert door.let_in(door.login("chief", PASSWORD, REMOTE_ADDR="10.4.4.4"))


@door_param
def test_every_login_attempt_is_one_json_line_without_the_password(
    door, staff_user, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="core.auth")
    door.login("chief", WRONG, REMOTE_ADDR="10.5.5.5", HTTP_X_FORWARDED_FOR="192.0.2.1")
    door.login("chief", PASSWORD, REMOTE_ADDR="10.5.5.6")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        door.login("chief", WRONG, REMOTE_ADDR="10.5.5.7")
    door.login("chief", PASSWORD, REMOTE_ADDR="10.5.5.8")  # refused: locked

    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "core.auth"]
    fields = ("level", "message", "door", "username", "client_address", "outcome")
    seen = [{k: line[k] for k in fields} for line in lines]
    failure = {"level": "WARNING", "message": "login failed", "door": door.name}
    assert seen == [
        {**failure, "username": "chief", "client_address": "10.5.5.5", "outcome": "failure"},
        {
            "level": "INFO",
            "message": "login",
            "door": door.name,
            "username": "chief",
            "client_address": "10.5.5.6",
            "outcome": "success",
        },
        # A success resets the user's count: five more failures, the fifth locks.
        *[{**failure, "username": "chief", "client_address": "10.5.5.7", "outcome": "failure"}]
        * (settings.AXES_FAILURE_LIMIT - 1),
        {**failure, "username": "chief", "client_address": "10.5.5.7", "outcome": "locked_out"},
        {**failure, "username": "chief", "client_address": "10.5.5.8", "outcome": "locked_out"},
    ]
    logged = caplog.text + "".join(json.dumps(line) for line in lines)
    assert WRONG not in logged
    assert PASSWORD not in logged
    stored = "".join(a.post_data + a.get_data for a in AccessAttempt.objects.all())
    assert "password=********************" in stored
    assert WRONG not in stored


@door_param
def test_behind_one_trusted_proxy_the_address_it_added_is_locked_and_logged(
    door, staff_user, settings, caplog
) -> None:
    settings.TRUSTED_PROXIES = 1
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    caplog.set_level(logging.INFO, logger="core.auth")
    for n in range(settings.AXES_FAILURE_LIMIT):
        forwarded = f"192.0.2.{n}, 198.51.100.7"  # the client's own entry, then the proxy's
        door.login(f"guess{n}", WRONG, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded)

    locked = door.login(
        "chief", PASSWORD, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7"
    )
    assert_locked_out(door, locked)
    other = door.login(
        "chief", PASSWORD, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="192.0.2.1, 198.51.100.8"
    )
    assert door.let_in(other)
    addresses = [r.client_address for r in caplog.records if r.name == "core.auth"]
    assert addresses == ["198.51.100.7"] * 6 + ["198.51.100.8"]
