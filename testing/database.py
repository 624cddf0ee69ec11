"""The test database: which tests reach it, and its URL for the commands run as child
processes."""

from urllib.parse import quote, urlencode

import pytest
from django.conf import settings as django_settings
from django.db import connection

# Fixtures through which a test reaches the database (directly, by a fixture that needs it, or
# by giving a database to a child process).
DATABASE_FIXTURES = frozenset(
    {
        "db",
        "transactional_db",
        "django_db_reset_sequences",
        "django_db_serialized_rollback",
        "empty_database_url",
        "postgresql_server",
    }
)


def uses_database(item: pytest.Item) -> bool:
    return item.get_closest_marker("django_db") is not None or bool(
        DATABASE_FIXTURES & set(getattr(item, "fixturenames", ()))
    )


def runs_on_postgresql(item: pytest.Item) -> bool:
    """Whether the PostgreSQL pass runs a test: those that reach the database, but those marked
    `engine_neutral`, whose database is only where their data lives while what they try out is
    elsewhere (a browser, process faults against the broker, the URLconf's permissions, make
    run's processes), and whose engine-specific parts other tests run on both engines."""
    return uses_database(item) and item.get_closest_marker("engine_neutral") is None


def database_url(name: str | None = None) -> str:
    """DATABASE_URL of the database the tests use, for the commands run as child processes:
    the test database of either engine (or the database `name` on the same PostgreSQL server).
    Built from the live connection settings, so it names what this session really uses."""
    config = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{name or config['NAME']}"
    assert connection.vendor == "postgresql", f"no URL for {connection.vendor} databases"
    assert config["HOST"] != django_settings.TEST_DB_PLACEHOLDER_HOST, (
        "the throwaway PostgreSQL server is not started yet: call database_url() from a test "
        "with database access"
    )
    user = quote(config["USER"] or "", safe="")
    password = f":{quote(str(config['PASSWORD']), safe='')}" if config["PASSWORD"] else ""
    host = quote(config["HOST"] or "", safe="")  # a socket directory is a path: %2F...
    port = f":{config['PORT']}" if config["PORT"] else ""
    options = {k: v for k, v in config["OPTIONS"].items() if isinstance(v, str | int)}
    query = f"?{urlencode(options)}" if options else ""
    return f"postgres://{user}{password}@{host}{port}/{quote(name or config['NAME'])}{query}"
