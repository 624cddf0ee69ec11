"""/healthz and /readyz against a real broker and the real database, which go away and return."""

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.db import connection, connections
from django.test import Client

from core import health
from core.process import process_stop
from testing.devservers import free_port
from testing.processes import start_manage, wait_for_log
from vitals.models import ConsumerStall
from vitals.services import consumer_stall_clear, consumer_stall_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def fresh_admin() -> Iterator[None]:
    """The probe's cached admin client belongs to one bootstrap address: drop it around tests
    that point the settings at another broker."""
    health._admin = None
    yield
    health._admin = None


def ready(client: Client) -> tuple[int, dict]:
    response = client.get("/readyz")
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]
    return response.status_code, response.json()


def wait_ready(client: Client, status: int, timeout: float = 20.0) -> dict:
    """Poll /readyz until it answers `status` (the broker client reconnects with a backoff)."""
    deadline = time.monotonic() + timeout
    while True:
        code, body = ready(client)
        if code == status or time.monotonic() > deadline:
            assert code == status, body
            return body
        time.sleep(0.25)


def test_healthz_answers_anyone_without_touching_database_or_broker(
    client: Client, django_assert_num_queries
) -> None:
    with django_assert_num_queries(0):
        response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["X-Request-ID"]
    assert client.post("/healthz").status_code == 405


def test_readyz_is_200_when_database_and_broker_answer(
    client: Client, kafka_broker: str, settings, fresh_admin
) -> None:
    settings.KAFKA_BOOTSTRAP_SERVERS = kafka_broker

    code, body = ready(client)

    assert code == 200
    assert body["status"] == "ready"
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "database": True,
        "database_write": True,
        "broker": True,
        "consumer": True,
    }
    assert all(check["latency_ms"] >= 0 for check in body["checks"].values())


def test_readyz_is_503_with_partition_and_offset_while_a_consumer_is_held_at_a_message(
    client: Client, kafka_broker: str, settings, fresh_admin
) -> None:
    """The consumer (another process) records where the DLQ holds it; the vitals app's
    registered check reads it."""
    settings.KAFKA_BOOTSTRAP_SERVERS = kafka_broker
    consumer_stall_record(topic="vitals", partition=2, offset=41, error="MSG_SIZE_TOO_LARGE")
    consumer_stall_record(topic="vitals", partition=2, offset=41, error="_MSG_TIMED_OUT")

    code, body = ready(client)

    assert code == 503
    assert body["status"] == "not_ready"
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "database": True,
        "database_write": True,
        "broker": True,
        "consumer": False,
    }
    consumer = body["checks"]["consumer"]
    assert consumer["error"] == ("consumer held at 1 partition(s): the DLQ does not take a message")
    [stall] = consumer["stalls"]
    since = ConsumerStall.objects.get().since
    assert stall == {
        "topic": "vitals",
        "partition": 2,
        "offset": 41,
        "since": since.isoformat(),
        "attempts": 2,
        "error": "_MSG_TIMED_OUT",
    }

    assert consumer_stall_clear(topic="vitals", partitions=[2]) == 1
    code, body = ready(client)
    assert (code, body["status"], body["checks"]["consumer"]["ok"]) == (200, "ready", True)


@pytest.mark.e2e
def test_readyz_follows_the_broker_going_away_and_coming_back(
    client: Client, settings, tmp_path, fresh_admin
) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    settings.KAFKA_BOOTSTRAP_SERVERS = bootstrap

    def start_broker(log_name: str):
        log = tmp_path / log_name
        process = start_manage("run_broker", log=log, KAFKA_BOOTSTRAP_SERVERS=bootstrap)
        wait_for_log(log, "broker ready", process, timeout=30)
        return process

    broker = start_broker("first.log")
    try:
        assert wait_ready(client, 200)["checks"]["broker"]["ok"] is True
        process_stop(broker)

        body = wait_ready(client, 503)
        assert body["status"] == "not_ready"
        assert body["checks"]["database"]["ok"] is True
        assert body["checks"]["broker"]["ok"] is False
        assert body["checks"]["broker"]["error"] == (
            f"Cannot reach the Kafka broker at {bootstrap} within 2s; start one with "
            "`python manage.py run_broker` (or `make run`)."
        )

        broker = start_broker("second.log")
        assert wait_ready(client, 200)["status"] == "ready"
    finally:
        process_stop(broker)


@pytest.mark.django_db(transaction=True)
def test_readyz_follows_the_database_going_away_and_coming_back(
    client: Client, kafka_broker: str, settings, tmp_path, fresh_admin, postgresql_server
) -> None:
    """The database goes away for real: on the session's own PostgreSQL server, the server is
    stopped and started again; on SQLite (a file, nothing to stop), the connection is pointed
    at a file in a directory that does not exist. A transactional test: closing the
    connection would end a test's wrapping transaction."""
    settings.KAFKA_BOOTSTRAP_SERVERS = kafka_broker
    connection = connections["default"]
    saved = dict(connection.settings_dict)
    connection.close()
    if postgresql_server is not None:
        postgresql_server.stop()
    elif connection.vendor == "sqlite":
        connection.settings_dict["NAME"] = str(tmp_path / "gone" / "db.sqlite3")
    else:  # a server of DATABASE_URL, not ours to stop: a port nobody listens on
        connection.settings_dict["PORT"] = str(free_port())
    try:
        code, body = ready(client)
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
        if postgresql_server is not None:
            postgresql_server.start()

    assert code == 503
    assert body["status"] == "not_ready"
    assert body["checks"]["broker"]["ok"] is True
    assert body["checks"]["database"]["ok"] is False
    assert body["checks"]["database"]["error"]

    code, body = ready(client)
    assert code == 200
    assert body["checks"]["database"]["ok"] is True


def test_health_endpoints_are_not_redirected_to_https(client: Client, settings) -> None:
    settings.SECURE_SSL_REDIRECT = True

    assert client.get("/healthz").status_code == 200
    assert client.get("/api/patients/").status_code == 301


@contextmanager
def database_read_only() -> Iterator[str]:
    """The database refuses writes to the web's connection, as a read-only file (SQLite:
    `PRAGMA query_only`, which fails writes as a read-only file does) or a server that went
    read-only (PostgreSQL: a standby, `default_transaction_read_only`) would; yields the error
    a write meets."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA query_only = ON")
            error = "attempt to write a readonly database"
        else:
            cursor.execute("SET default_transaction_read_only = on")
            error = "cannot execute UPDATE in a read-only transaction"
    try:
        yield error
    finally:
        with connection.cursor() as cursor:
            if connection.vendor == "sqlite":
                cursor.execute("PRAGMA query_only = OFF")
            else:
                cursor.execute("SET default_transaction_read_only = off")


@pytest.mark.django_db(transaction=True)
def test_readyz_is_503_with_the_reason_while_the_database_cannot_be_written(
    client: Client, kafka_broker: str, settings, fresh_admin
) -> None:
    settings.KAFKA_BOOTSTRAP_SERVERS = kafka_broker
    assert ready(client)[0] == 200

    with database_read_only() as error:
        code, body = ready(client)

    assert code == 503
    assert body["status"] == "not_ready"
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "database": True,  # it answers a read
        "database_write": False,
        "broker": True,
        "consumer": True,
    }
    assert body["checks"]["database_write"]["error"] == f"database cannot be written: {error}"
    # Nothing was written by the probe, and the database takes writes again.
    code, body = ready(client)
    assert (code, body["checks"]["database_write"]) == (
        200,
        {"ok": True, "latency_ms": body["checks"]["database_write"]["latency_ms"]},
    )
