"""A consumer that cannot write the database says so: its own /readyz (on --metrics-port)
answers 503 with the reason while it retries, 200 once it writes again."""

import json
import shutil
import sqlite3
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import OperationalError, connection

from core.process import process_stop
from testing.devservers import free_port
from testing.processes import start_manage, wait_for_log
from vitals import consumer as consumer_module
from vitals.tests.fakes import worker_create
from vitals.tests.test_metrics import message

READONLY = "attempt to write a readonly database"
# Root ignores file permissions through these two capabilities: without them it meets a
# read-only file as anyone does.
WITHOUT_DAC_OVERRIDE = (
    "setpriv",
    "--inh-caps=-all",
    "--bounding-set=-dac_override,-dac_read_search",
)


def readiness(worker) -> tuple[bool, dict]:
    return worker.health.readiness()


@pytest.mark.django_db
def test_a_consumer_whose_writes_fail_is_not_ready_with_the_reason_until_one_succeeds(
    monkeypatch,
):
    start = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(minutes=10)
    worker, consumer, _ = worker_create()
    consumer.add([message("ivy", start + timedelta(seconds=s)) for s in range(3)])
    real_store = consumer_module.reading_bulk_store
    failures = [OperationalError(READONLY), OperationalError(READONLY)]

    def store(**kwargs):
        if failures:
            raise failures.pop(0)
        return real_store(**kwargs)

    monkeypatch.setattr(consumer_module, "reading_bulk_store", store)
    assert readiness(worker) == (
        True,
        {"status": "ready", "checks": {"database_write": {"ok": True}}},
    )

    before = datetime.now(tz=UTC)
    worker.process_batch()
    worker.process_batch()

    ready, body = readiness(worker)
    assert not ready
    check = body["checks"]["database_write"]
    since = datetime.fromisoformat(check.pop("since"))
    assert before <= since <= datetime.now(tz=UTC)
    assert body == {
        "status": "not_ready",
        "checks": {
            "database_write": {
                "ok": False,
                "error": f"database cannot be written: {READONLY}",
                "attempts": 2,
            }
        },
    }

    assert worker.process_batch() == 3  # written this time
    assert worker.totals.stored == 3
    assert readiness(worker) == (
        True,
        {"status": "ready", "checks": {"database_write": {"ok": True}}},
    )


@pytest.mark.django_db
def test_an_idle_consumer_probes_that_it_can_write(monkeypatch):
    worker, _, _ = worker_create(write_probe_interval=0)

    def refuse() -> None:
        raise OperationalError(READONLY)

    monkeypatch.setattr(consumer_module, "database_write_check", refuse)
    assert worker.process_batch() == 0
    ready, body = readiness(worker)
    assert (ready, body["checks"]["database_write"]["error"]) == (
        False,
        f"database cannot be written: {READONLY}",
    )

    monkeypatch.undo()
    assert worker.process_batch() == 0
    assert readiness(worker)[0]


# --- the command, against a database file it may not write ----------------------------------
def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_status(url: str, status: int, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        code, body = get(url)
        if code == status:
            return body
        assert time.monotonic() < deadline, (code, body)
        time.sleep(0.2)


def database_files(path: Path) -> list[Path]:
    return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]


@pytest.mark.e2e
@pytest.mark.engine_neutral
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux's setpriv")
@pytest.mark.django_db
def test_consume_vitals_reports_a_database_it_cannot_write_on_its_readyz(kafka, tmp_path):
    """The SQLite file (and its -wal, -shm) made read-only under a consumer run without the
    capability to override file permissions (root has it, and would write anyway)."""
    if connection.vendor != "sqlite":
        pytest.skip("file permissions are SQLite's; a read-only PostgreSQL is tested on the web")
    # A migrated database of the consumer's own: a copy of the test database's schema.
    copy = tmp_path / "consumer.sqlite3"
    with (
        sqlite3.connect(settings.DATABASES["default"]["NAME"]) as source,
        sqlite3.connect(copy) as target,
    ):
        source.backup(target)
    for path in database_files(copy):
        path.chmod(0o444)
    port = free_port()
    log = tmp_path / "consumer.log"
    started = datetime.now(tz=UTC)
    start = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(minutes=1)
    kafka.produce([message("rory", start + timedelta(seconds=s)) for s in range(5)])

    process = start_manage(
        "consume_vitals",
        "--metrics-port",
        str(port),
        log=log,
        DATABASE_URL=f"sqlite:///{copy}",
        prefix=WITHOUT_DAC_OVERRIDE,
        **kafka.env(),
    )
    try:
        wait_for_log(log, "serving metrics", process, timeout=30)
        readyz = f"http://127.0.0.1:{port}/readyz"
        assert get(f"http://127.0.0.1:{port}/healthz") == (200, {"status": "ok"})
        body = wait_status(readyz, 503)
        check = body["checks"]["database_write"]
        assert (body["status"], check["ok"], check["error"]) == (
            "not_ready",
            False,
            f"database cannot be written: {READONLY}",
        )
        assert check["attempts"] >= 1  # retried with backoff meanwhile
        assert datetime.fromisoformat(check["since"]) >= started
        assert (
            "icu_consumer_batches_retried_total"
            in urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        )

        for path in database_files(copy):
            path.chmod(0o644)
        assert wait_status(readyz, 200) == {
            "status": "ready",
            "checks": {"database_write": {"ok": True}},
        }
        wait_for_log(log, "database written again", process, timeout=10)
    finally:
        process_stop(process)
    with sqlite3.connect(copy) as db:
        assert db.execute("SELECT count(*) FROM vitals_patientmetric").fetchone() == (5,)
