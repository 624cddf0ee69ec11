"""The exports' settings, read from the environment like every other (icu/settings.py)."""

import json

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
