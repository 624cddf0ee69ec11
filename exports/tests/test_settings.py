"""The exports' settings, read from the environment like every other (icu/settings.py)."""

import json

import pytest

from icu.tests.test_settings import run_settings

PRINT = """
import json, django
django.setup()
from django.conf import settings
print(json.dumps({"ttl": settings.EXPORT_RESULT_TTL.total_seconds(), "media": settings.MEDIA_ROOT,
                  "tasks": settings.TASKS["default"]["BACKEND"]}))
"""


def test_defaults_and_the_environment():
    result = run_settings(PRINT, DEBUG="true")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["ttl"] == 7 * 24 * 3600
    assert found["media"].endswith("/var/media")
    assert found["tasks"] == "django_tasks_db.DatabaseBackend"
    result = run_settings(PRINT, DEBUG="true", EXPORT_RESULT_TTL="36h", MEDIA_ROOT="/srv/media")
    found = json.loads(result.stdout)
    assert (found["ttl"], found["media"]) == (36 * 3600, "/srv/media")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("7", "EXPORT_RESULT_TTL: '7' is not a duration like 30d, 12h, 90m, 2w."),
        ("a week", "EXPORT_RESULT_TTL: 'a week' is not a duration like 30d, 12h, 90m, 2w."),
        ("0d", "EXPORT_RESULT_TTL must be longer than 0."),
    ],
)
def test_a_bad_ttl_stops_the_start_with_a_clear_message(value, message):
    result = run_settings(PRINT, DEBUG="true", EXPORT_RESULT_TTL=value)
    assert result.returncode == 1
    assert f"django.core.exceptions.ImproperlyConfigured: {message}" in result.stderr
