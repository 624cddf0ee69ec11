"""Settings for the test suite: the project settings with test-only defaults.

The environment still wins, so `DATABASE_URL=postgres://... pytest` runs the suite on PostgreSQL.
"""

import os
from pathlib import Path

# A developer's .env (DATABASE_URL, broker address...) must not leak into the suite.
os.environ.setdefault("ICU_ENV_FILE", os.devnull)
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("LOG_LEVEL", "WARNING")
# The test client and the e2e tests speak plain HTTP (production redirects to HTTPS, checked by
# test_deploy_settings).
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
# No collectstatic before the tests: unhashed static file names (test_deployment checks the
# production storage on its own).
os.environ.setdefault(
    "STATICFILES_BACKEND", "django.contrib.staticfiles.storage.StaticFilesStorage"
)

from icu.settings import *  # noqa: F403

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
