"""Settings read from the environment and `.env`, and the SQLite connection they configure."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

BASE_DIR = Path(__file__).resolve().parent.parent.parent

PRINT_SETTINGS = """
import json, django
django.setup()
from django.conf import settings
from django.urls import reverse
print(json.dumps({
    "API_PREFIX": settings.API_PREFIX,
    "patients_url": reverse("api:patient-list"),
    "DEBUG": settings.DEBUG,
    "SECRET_KEY": settings.SECRET_KEY,
    "KAFKA_TOPIC": settings.KAFKA_TOPIC,
    "LOG_LEVEL": settings.LOG_LEVEL,
}))
"""


def run_settings(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter on the production settings module.

    The environment is built from scratch, so nothing of the test run's own (SECRET_KEY,
    DEBUG, a developer's settings) leaks in: only what the test passes.
    """
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=BASE_DIR,
        env={
            "PATH": os.environ.get("PATH", ""),
            "DJANGO_SETTINGS_MODULE": "icu.settings",
            "ICU_ENV_FILE": os.devnull,
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def settings_of(**env: str) -> dict:
    result = run_settings(PRINT_SETTINGS, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.django_db
def test_sqlite_runs_in_wal_mode_with_immediate_transactions() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("SQLite-only settings")
    options = connection.settings_dict["OPTIONS"]
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        journal_mode = cursor.fetchone()[0]
        cursor.execute("PRAGMA busy_timeout")
        busy_timeout = cursor.fetchone()[0]
        cursor.execute("PRAGMA synchronous")
        synchronous = cursor.fetchone()[0]

    assert journal_mode == "wal"
    assert busy_timeout == 20_000  # milliseconds: SQLITE_BUSY_TIMEOUT's default 20 s
    assert synchronous == 1  # NORMAL
    assert options["transaction_mode"] == "IMMEDIATE"
    assert options["timeout"] == 20


@pytest.mark.parametrize("debug", [{"DEBUG": "false"}, {}])
def test_missing_secret_key_without_debug_is_refused(debug: dict) -> None:
    result = run_settings("import django; django.setup()", **debug)

    assert result.returncode == 1
    assert "django.core.exceptions.ImproperlyConfigured: SECRET_KEY is not set." in result.stderr


def test_debug_without_secret_key_uses_the_development_key() -> None:
    found = settings_of(DEBUG="true")

    assert found["DEBUG"] is True
    assert found["SECRET_KEY"] == "insecure-development-key-do-not-use-in-production"


@pytest.mark.parametrize(
    ("prefix", "normalised", "patients_url"),
    [
        ("/v1", "v1/", "/v1/patients/"),
        ("v1", "v1/", "/v1/patients/"),
        ("/v1/", "v1/", "/v1/patients/"),
        ("", "", "/patients/"),
    ],
)
def test_api_prefix_normalisation(prefix: str, normalised: str, patients_url: str) -> None:
    found = settings_of(SECRET_KEY="s", API_PREFIX=prefix)

    assert found["API_PREFIX"] == normalised
    assert found["patients_url"] == patients_url


def test_api_prefix_default() -> None:
    found = settings_of(SECRET_KEY="s")

    assert found["API_PREFIX"] == "api/"
    assert found["patients_url"] == "/api/patients/"


def test_env_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / "test.env"
    env_file.write_text(
        "SECRET_KEY=secret-from-the-file\n"
        "API_PREFIX=/from-file\n"
        "DEBUG=true\n"
        "KAFKA_TOPIC=topic-from-the-file\n"
        "LOG_LEVEL=DEBUG\n"
    )

    found = settings_of(ICU_ENV_FILE=str(env_file), DEBUG="false", KAFKA_TOPIC="topic-from-env")

    assert found == {
        "API_PREFIX": "from-file/",  # from the file
        "patients_url": "/from-file/patients/",
        "DEBUG": False,  # the environment wins
        "SECRET_KEY": "secret-from-the-file",  # from the file: no ImproperlyConfigured
        "KAFKA_TOPIC": "topic-from-env",  # the environment wins
        "LOG_LEVEL": "DEBUG",  # from the file
    }
