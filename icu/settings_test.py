"""Settings for the test suite: the project settings with test-only defaults.

`ICU_TEST_DB_ENGINE` chooses the database engine of the run (`make test` runs the suite once
with each):

- `sqlite` (the default): a SQLite file, `var/test-db.sqlite3` or `ICU_TEST_DB`;
- `postgresql`: a throwaway PostgreSQL server that testing/fixtures.py starts for the session (in a
  temporary directory, on a free loopback port) and removes at the end. Until it has started,
  the address below is a placeholder that cannot resolve.

The environment still wins: `ICU_TEST_DB_ENGINE=postgresql DATABASE_URL=postgres://...` runs the
suite on an existing server instead (Django creates and drops a `test_` database on it).
The suite checks that the database it runs on is of the engine `ICU_TEST_DB_ENGINE` names.
"""

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

# A developer's .env (DATABASE_URL, broker address...) must not leak into the suite.
os.environ.setdefault("ICU_ENV_FILE", os.devnull)
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("LOG_LEVEL", "WARNING")
# Throttling (DRF): generous rates, the suite makes many requests a minute as one client
# (vitals/tests/test_access_control.py lowers them to see a 429).
os.environ.setdefault("THROTTLE_ANON", "100000/min")
os.environ.setdefault("THROTTLE_USER", "100000/min")
# Every consumer joining a group waits half the session timeout on the development broker
# (Tansu holds the join for more members): 1 s instead of 3 s, some 50 joins in a run. Also how
# soon a killed consumer's partitions move (vitals/tests/test_faults.py). Heartbeats come from
# librdkafka's own threads, every 333 ms: a busy Python process does not miss them.
os.environ.setdefault("KAFKA_SESSION_TIMEOUT_MS", "2000")
# The test client and the e2e tests speak plain HTTP (production redirects to HTTPS; see
# icu/tests/test_health.py and test_production_server.py).
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
# No collectstatic before the tests: unhashed static file names (the production storage is
# tested on its own, with a real collectstatic).
os.environ.setdefault(
    "STATICFILES_BACKEND", "django.contrib.staticfiles.storage.StaticFilesStorage"
)

TEST_DB_ENGINE = os.environ.get("ICU_TEST_DB_ENGINE") or "sqlite"
if TEST_DB_ENGINE not in ("sqlite", "postgresql"):
    raise ImproperlyConfigured(
        f"ICU_TEST_DB_ENGINE={TEST_DB_ENGINE!r}: use 'sqlite' (the default) or 'postgresql'."
    )
# True when testing/fixtures.py starts (and fills in the address of) a PostgreSQL server of its own.
TEST_DB_THROWAWAY_POSTGRESQL = TEST_DB_ENGINE == "postgresql" and not os.environ.get("DATABASE_URL")
TEST_DB_PLACEHOLDER_HOST = "throwaway-postgresql-not-started-yet.invalid"

# The placeholder goes through DATABASE_URL, so that the production settings' own PostgreSQL
# branch (persistent, health-checked connections) is what the suite runs on. Not left in the
# environment: a child process must be given the test database's URL (testing/database.py).
if TEST_DB_THROWAWAY_POSTGRESQL:
    os.environ["DATABASE_URL"] = f"postgres://postgres@{TEST_DB_PLACEHOLDER_HOST}:5432/icu"
try:
    from icu.settings import *  # noqa: F403
finally:
    if TEST_DB_THROWAWAY_POSTGRESQL:
        del os.environ["DATABASE_URL"]

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# WhiteNoise warns at every start when STATIC_ROOT is missing.
Path(STATIC_ROOT).mkdir(parents=True, exist_ok=True)  # noqa: F405

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, not the in-memory default: end-to-end tests run the real commands as
    # subprocesses, which must see the test database. ICU_TEST_DB names another file, so that
    # two test runs in one checkout do not share (and wreck) one database.
    (BASE_DIR / "var").mkdir(exist_ok=True)  # noqa: F405
    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": os.environ.get("ICU_TEST_DB", str(BASE_DIR / "var" / "test-db.sqlite3"))  # noqa: F405
    }
