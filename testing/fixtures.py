"""The pytest plugin of the fixtures shared by every app's tests (registered by the root
conftest.py): the database, the real broker, per-test topics, API clients.

The database is SQLite, or with `ICU_TEST_DB_ENGINE=postgresql` a throwaway PostgreSQL server
started once per session (`postgresql_server`); see icu/settings_test.py. Child processes are
pointed at the test database with `database_url()`.

The broker is the embedded Tansu, started once per session by our own `run_broker` command on
a free loopback port. Each test that uses Kafka gets topics and a consumer group of its own,
so tests never see each other's messages.
"""

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.conf import LazySettings
from django.conf import settings as django_settings
from django.db import connection
from rest_framework.test import APIClient

from core.kafka import topics_ensure
from core.process import process_stop
from testing.broker import KafkaTopics
from testing.clients import token_client
from testing.database import database_url, runs_on_postgresql
from testing.devservers import DevServerError, PostgresServer, free_port
from testing.processes import FIGURES, start_manage, wait_for_log


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the PostgreSQL pass of `make test`, only the tests that reach the database run: the
    others (NEWS2, the parser, the emulator, the settings...) cannot answer differently on
    another engine, and the SQLite pass has run them. ICU_TEST_ALL=1 runs everything."""
    if django_settings.TEST_DB_ENGINE != "postgresql" or os.environ.get("ICU_TEST_ALL"):
        return
    kept = [item for item in items if runs_on_postgresql(item)]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if not runs_on_postgresql(i)])
        items[:] = kept


def pytest_terminal_summary(terminalreporter) -> None:
    if FIGURES:
        terminalreporter.section("measured figures")
        for name, value in FIGURES:
            terminalreporter.write_line(f"{name}: {value}")


# --- The database ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[PostgresServer | None]:
    """The session's throwaway PostgreSQL server (ICU_TEST_DB_ENGINE=postgresql), stopped and
    removed at the end; None when the session runs on SQLite or on a server of DATABASE_URL."""
    if not django_settings.TEST_DB_THROWAWAY_POSTGRESQL:
        yield None
        return
    try:
        server = PostgresServer.create()
    except DevServerError as exc:
        pytest.fail(f"ICU_TEST_DB_ENGINE=postgresql: {exc}", pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    django_db_modify_db_settings_parallel_suffix: None,
    postgresql_server: PostgresServer | None,
) -> None:
    """pytest-django's hook before it creates the test database: point the settings at the
    throwaway PostgreSQL server, now that it runs and its port is known."""
    if postgresql_server is None:
        return
    config = django_settings.DATABASES["default"]
    assert config["HOST"] == django_settings.TEST_DB_PLACEHOLDER_HOST
    config.update(
        HOST="127.0.0.1",
        PORT=str(postgresql_server.port),
        USER=PostgresServer.SUPERUSER,
        PASSWORD="",
    )


@pytest.fixture
def empty_database_url(tmp_path: Path, django_db_modify_db_settings: None) -> Iterator[str]:
    """DATABASE_URL of a new, empty database of the session's engine, for a child process that
    migrates its own: a file for SQLite, a database on the session's server for PostgreSQL."""
    if connection.vendor == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.sqlite3'}"
        return
    name = f"icu_empty_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url("postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(name)
    finally:
        with psycopg.connect(database_url("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


# --- The broker ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Kafka-protocol broker for the whole session: `manage.py run_broker`."""
    bootstrap = f"127.0.0.1:{free_port()}"
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    process = start_manage("run_broker", log=log, KAFKA_BOOTSTRAP_SERVERS=bootstrap)
    try:
        wait_for_log(log, "broker ready", process, timeout=30)
        yield bootstrap
    finally:
        process_stop(process)


@pytest.fixture
def kafka(kafka_broker: str, settings: LazySettings) -> KafkaTopics:
    """Fresh topics and consumer group for one test, set in Django settings."""
    suffix = uuid.uuid4().hex[:10]
    topics = KafkaTopics(
        bootstrap=kafka_broker,
        topic=f"vitals-{suffix}",
        dlq_topic=f"vitals-{suffix}.dlq",
        alarms_topic=f"alarms-{suffix}",
        group_id=f"group-{suffix}",
    )
    settings.KAFKA_BOOTSTRAP_SERVERS = kafka_broker
    settings.KAFKA_TOPIC = topics.topic
    settings.KAFKA_DLQ_TOPIC = topics.dlq_topic
    settings.KAFKA_ALARMS_TOPIC = topics.alarms_topic
    settings.KAFKA_GROUP_ID = topics.group_id
    topics_ensure(topics={topics.topic: 3, topics.dlq_topic: 1, topics.alarms_topic: 1})
    return topics


@pytest.fixture(autouse=True)
def _access_log_forgotten() -> Iterator[None]:
    """Each test starts with no access-log counts pending in this process (access/services.py
    keeps them in memory between requests; ids and usernames repeat from test to test)."""
    from access.services import patient_access_forget

    patient_access_forget()
    yield
    patient_access_forget()


@pytest.fixture
def roles() -> dict:
    """The role groups by name (core/permissions.py). The migration vitals/0004_roles creates
    them, but a transactional test's flush empties every table: ensured again here."""
    from core.permissions import role_groups_ensure

    return role_groups_ensure()


@pytest.fixture
def user(django_user_model, roles):
    """The clinician "nurse": reads everything, acknowledges alarms, changes alarm limits."""
    nurse = django_user_model.objects.create_user(username="nurse", password="correct-horse-9")
    nurse.groups.add(roles["clinician"])
    return nurse


@pytest.fixture
def api_client(user) -> APIClient:
    """The clinician "nurse", by token."""
    return token_client(user)


@pytest.fixture
def clinician_client(api_client) -> APIClient:
    return api_client


@pytest.fixture
def viewer(django_user_model, roles):
    """The viewer "observer": reads everything, changes nothing."""
    observer = django_user_model.objects.create_user(username="observer", password="x" * 16)
    observer.groups.add(roles["viewer"])
    return observer


@pytest.fixture
def viewer_client(viewer) -> APIClient:
    return token_client(viewer)


@pytest.fixture
def staff_user(django_user_model):
    """The staff superuser "chief": everything, the admin, the audit trail and /metrics."""
    return django_user_model.objects.create_superuser(username="chief", password="x" * 16)


@pytest.fixture
def staff_client(staff_user) -> APIClient:
    return token_client(staff_user)


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()
