"""End to end through the real broker (Tansu) and the real database.

`transactional_db`: the workers call close_old_connections() as they would in production,
which must not be able to roll back a test-wide transaction, and subprocess tests must see
committed rows.
"""

import json
import logging
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection

from core.kafka import consumer_create, producer_create
from patients.models import Patient
from testing.broker import KafkaTopics
from testing.database import database_url
from testing.devservers import PostgresServer, free_port
from testing.processes import BASE_DIR, json_lines, start_manage, subprocess_env, wait_for_log
from vitals import consumer as consumer_module
from vitals.consumer import DLQ_OFFSET, DLQ_PARTITION, DLQ_REASON, DLQ_TOPIC, VitalsConsumer
from vitals.contract import Reading, reading_parse, reading_to_message
from vitals.models import PatientMetric

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

NOW = datetime.now(tz=UTC).replace(microsecond=0)


def valid_message(name: str = "bob", seconds: int = 0, pulse: int = 72) -> tuple[bytes, bytes]:
    patient_uuid = uuid.uuid5(uuid.NAMESPACE_DNS, name)
    return reading_to_message(
        Reading(
            patient_uuid=patient_uuid,
            patient_name=name,
            measured_at=NOW - timedelta(minutes=10) + timedelta(seconds=seconds),
            pulse=pulse,
            resp_rate=16,
            systolic=118,
            diastolic=76,
            spo2=97,
            temperature=37.1,
        )
    )


def db_rows() -> set[tuple]:
    return set(
        PatientMetric.objects.values_list(
            "patient__uuid",
            "patient__name",
            "measured_at",
            "pulse",
            "resp_rate",
            "systolic",
            "diastolic",
            "spo2",
            "temperature",
        )
    )


def rows_of(messages) -> set[tuple]:
    rows = set()
    for message in messages:
        r = reading_parse(key=message.key(), value=message.value())
        rows.add(
            (
                r.patient_uuid,
                r.patient_name,
                r.measured_at,
                r.pulse,
                r.resp_rate,
                r.systolic,
                r.diastolic,
                r.spo2,
                r.temperature,
            )
        )
    return rows


def end_offsets(kafka: KafkaTopics) -> dict[int, int]:
    ends = dict.fromkeys(range(3), 0)
    for message in kafka.read():
        ends[message.partition()] = max(ends[message.partition()], message.offset() + 1)
    return ends


def consume(**options) -> None:
    call_command("consume_vitals", exit_on_idle=1.5, batch_timeout=0.1, **options)


def test_emulated_readings_are_stored_exactly_once_and_offsets_committed(kafka: KafkaTopics):
    call_command("run_patient", name=["alice", "bob", "carol"], count=7, interval=0, seed=11)
    produced = kafka.read()
    assert len(produced) == 21
    # Keyed by patient uuid: all of a patient's readings in one partition, in order.
    by_key: dict[bytes, set[int]] = {}
    for message in produced:
        by_key.setdefault(message.key(), set()).add(message.partition())
    assert len(by_key) == 3
    assert all(len(partitions) == 1 for partitions in by_key.values())

    consume()

    assert db_rows() == rows_of(produced)
    assert PatientMetric.objects.count() == 21
    assert sorted(Patient.objects.values_list("name", flat=True)) == ["alice", "bob", "carol"]
    for patient in Patient.objects.all():
        assert patient.latest_metric == patient.metrics.latest()
    assert {p: o for p, o in kafka.committed().items() if o >= 0} == {
        p: o for p, o in end_offsets(kafka).items() if o > 0
    }


def test_replayed_messages_are_not_stored_twice(kafka: KafkaTopics, caplog):
    messages = [valid_message("bob", s, 60 + s) for s in range(10)]
    kafka.produce(messages)
    consume()
    first = db_rows()
    assert len(first) == 10

    # The same readings again (a producer retry, a replay from an old offset) plus one new,
    # and one of the same patient and time as a stored one but another pulse: not a replay.
    conflicting = valid_message("bob", 3, 140)
    kafka.produce([*messages, valid_message("bob", 99, 130), conflicting])
    caplog.clear()
    caplog.set_level(logging.INFO, logger="vitals")
    consume()

    assert PatientMetric.objects.count() == 11
    # The stored reading stays; the conflicting one is in the DLQ, saying so.
    third = PatientMetric.objects.get(
        measured_at=NOW - timedelta(minutes=10) + timedelta(seconds=3)
    )
    assert third.pulse == 63
    [dlq] = kafka.read(kafka.dlq_topic)
    headers = dict(dlq.headers())
    assert headers[DLQ_REASON] == b"conflicting_duplicate"
    assert (dlq.key(), dlq.value()) == conflicting
    assert int(headers[DLQ_OFFSET]) == 21
    assert db_rows() - first == {
        (
            uuid.uuid5(uuid.NAMESPACE_DNS, "bob"),
            "bob",
            NOW - timedelta(minutes=10) + timedelta(seconds=99),
            130,
            16,
            118,
            76,
            97,
            37.1,
        )
    }
    stopped = [r for r in caplog.records if r.getMessage() == "consumer stopped"]
    assert [(r.consumed, r.stored, r.duplicates, r.invalid) for r in stopped] == [(12, 1, 10, 1)]
    assert stopped[0].invalid_by_reason == {"conflicting_duplicate": 1}


BAD_MESSAGES = [
    (b"not json at all", "invalid_json"),
    (json.dumps({"schema_version": 1}).encode(), "missing_field"),
    (b'{"schema_version": 3}', "unsupported_schema_version"),
    (b"\xff\xfe\x00garbage", "invalid_encoding"),
]


def test_mixed_batch_stores_valid_and_sends_invalid_to_dlq_with_reasons(kafka: KafkaTopics):
    good = [valid_message("ann", s) for s in range(3)]
    key = good[0][0]
    mismatched_key = (str(uuid.uuid4()).encode(), good[0][1])
    unknown_field = json.loads(good[1][1]) | {"heart_rhythm": "AF"}
    kafka.produce(
        [
            good[0],
            *((key, value) for value, _ in BAD_MESSAGES),
            good[1],
            mismatched_key,
            (key, json.dumps(unknown_field).encode()),
            (key, None),
            good[2],
            good[0],  # an exact copy in the same batch: silent
            valid_message("ann", 1, pulse=150),  # good[1]'s time, another pulse
            (None, valid_message("ann", 7)[1]),  # no key: no order among the patient's readings
            (b"", valid_message("ann", 8)[1]),  # an empty key is none
        ]
    )

    consume()

    assert db_rows() == rows_of([_Msg(k, v) for k, v in good])
    dlq = kafka.read(kafka.dlq_topic)
    reasons = [dict(m.headers())[DLQ_REASON].decode() for m in dlq]
    # Sorted: the mismatched key lands in another partition, so DLQ order is not defined.
    assert sorted(reasons) == sorted(
        [
            *(reason for _, reason in BAD_MESSAGES),
            "key_mismatch",
            "unknown_field",
            "empty_message",
            "conflicting_duplicate",
            "missing_key",
            "missing_key",
        ]
    )
    # The original key and value travel unchanged, with where they came from.
    source = {(m.partition(), m.offset()): m for m in kafka.read()}
    for message in dlq:
        headers = dict(message.headers())
        assert headers[DLQ_TOPIC].decode() == kafka.topic
        original = source[(int(headers[DLQ_PARTITION]), int(headers[DLQ_OFFSET]))]
        assert (message.key(), message.value()) == (original.key(), original.value())
    # Poison messages do not hold the partition: everything is committed.
    assert sum(o for o in kafka.committed().values() if o > 0) == 14


class _Msg:
    """The two methods of a Kafka message that rows_of() needs."""

    def __init__(self, key: bytes, value: bytes) -> None:
        self._key, self._value = key, value

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value


def _worker(kafka: KafkaTopics, **kw) -> VitalsConsumer:
    consumer = consumer_create(group_id=kafka.group_id)
    worker = VitalsConsumer(
        consumer=consumer,
        producer=producer_create(),
        dlq_topic=kafka.dlq_topic,
        batch_timeout=0.1,
        **kw,
    )
    consumer.subscribe([kafka.topic], on_assign=worker.on_assign, on_revoke=worker.on_revoke)
    return worker


def _drive(workers: list[VitalsConsumer], until, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "condition not reached in time"
        for worker in workers:
            worker.process_batch()


def test_consumers_in_one_group_share_the_partitions(kafka: KafkaTopics):
    first, second = _worker(kafka), _worker(kafka)
    try:
        _drive(
            [first, second],
            lambda: (
                first.assigned and second.assigned and len(first.assigned | second.assigned) == 3
            ),
        )
        assert not first.assigned & second.assigned

        kafka.produce([valid_message(f"p{i}", s) for i in range(12) for s in range(5)])
        _drive([first, second], lambda: PatientMetric.objects.count() == 60)
        _drive([first, second], lambda: first.totals.consumed + second.totals.consumed >= 60, 5)
    finally:
        first.close()
        second.close()

    assert first.totals.consumed > 0
    assert second.totals.consumed > 0
    assert first.totals.consumed + second.totals.consumed == 60
    assert first.totals.duplicates + second.totals.duplicates == 0
    assert Patient.objects.count() == 12


def test_database_outage_commits_nothing_and_retries_the_same_batch(kafka, monkeypatch):
    """The store fails as a database that is down or locked makes it fail (any engine; the
    real outage of a PostgreSQL server is the next test)."""
    kafka.produce([valid_message("dan", s) for s in range(8)])
    real_store = consumer_module.reading_bulk_store
    outages = []

    def flaky_store(**kwargs):
        if len(outages) < 2:
            outages.append(kafka.committed())
            raise OperationalError("database is locked")
        return real_store(**kwargs)

    monkeypatch.setattr(consumer_module, "reading_bulk_store", flaky_store)
    worker = _worker(kafka, backoff_initial=0.01, backoff_max=0.02)
    try:
        _drive([worker], lambda: worker.totals.stored == 8)
        assert worker.totals.retries == 2
        assert worker.totals.consumed == 8  # the failed attempts are not counted as consumed
    finally:
        worker.close()

    # While the database was down nothing was committed.
    assert all(o < 0 for snapshot in outages for o in snapshot.values())
    assert PatientMetric.objects.count() == 8
    assert sum(o for o in kafka.committed().values() if o > 0) == 8


def wait_until(condition, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout}s"
        time.sleep(0.2)


@pytest.mark.skipif(
    not settings.TEST_DB_THROWAWAY_POSTGRESQL,
    reason="stops and restarts the session's own PostgreSQL server "
    "(ICU_TEST_DB_ENGINE=postgresql without DATABASE_URL); an outage of SQLite, a file, is "
    "simulated by the test above",
)
def test_postgresql_outage_commits_nothing_then_the_consumer_reconnects_and_catches_up(
    kafka: KafkaTopics, postgresql_server: PostgresServer, tmp_path
):
    """The server really goes away under the running consumer (the command, as deployed): the
    consumer's connection dies, reconnecting is refused; nothing is committed while it is
    down, and once it is back every reading is stored exactly once."""
    log = tmp_path / "consumer.log"
    process = start_manage(
        "consume_vitals",
        "--batch-timeout",
        "0.1",
        log=log,
        DATABASE_URL=database_url(),
        **kafka.env(),
    )

    def committed() -> int:
        return sum(o for o in kafka.committed().values() if o > 0)

    try:
        wait_for_log(log, "partitions assigned", process, timeout=30)
        kafka.produce([valid_message("olga", s) for s in range(10)])
        wait_until(lambda: PatientMetric.objects.count() == 10, what="10 readings stored")
        wait_until(lambda: committed() == 10, what="10 offsets committed")

        postgresql_server.stop()
        try:
            kafka.produce([valid_message("olga", s) for s in range(10, 20)])
            wait_until(
                lambda: log.read_text().count("batch not stored, will retry") >= 2,
                what="two failed attempts",
            )
            assert process.poll() is None, log.read_text()
            assert committed() == 10  # the batch that could not be stored is not committed
        finally:
            postgresql_server.start()
        connection.close()  # the test's own connection died with the server too

        wait_until(lambda: PatientMetric.objects.count() == 20, what="20 readings stored")
        wait_until(lambda: committed() == 20, what="20 offsets committed")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()

    lines = json_lines(log.read_text())
    failures = [line for line in lines if line["message"] == "batch not stored, will retry"]
    assert all(line["reason"].startswith("database unavailable: ") for line in failures)
    [stopped] = [line for line in lines if line["message"] == "consumer stopped"]
    assert (stopped["consumed"], stopped["stored"], stopped["duplicates"]) == (20, 20, 0)
    assert stopped["retries"] == len(failures) >= 2
    assert db_rows() == rows_of(kafka.read())


def test_consumer_sigterm_finishes_commits_and_exits_cleanly(kafka: KafkaTopics, tmp_path):
    kafka.produce([valid_message("eve", s) for s in range(20)])
    log = tmp_path / "consumer.log"
    process = start_manage(
        "consume_vitals",
        "--batch-timeout",
        "0.1",
        log=log,
        DATABASE_URL=database_url(),
        **kafka.env(),
    )
    try:
        wait_for_log(log, "partitions assigned", process, timeout=30)
        deadline = time.monotonic() + 20
        while PatientMetric.objects.count() < 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()

    lines = json_lines(log.read_text())
    stopped = [line for line in lines if line["message"] == "consumer stopped"]
    assert len(stopped) == 1
    assert (stopped[0]["stored"], stopped[0]["duplicates"], stopped[0]["invalid"]) == (20, 0, 0)
    assert {"timestamp", "level", "module", "function", "line"} <= stopped[0].keys()
    assert PatientMetric.objects.count() == 20
    assert sum(o for o in kafka.committed().values() if o > 0) == 20


def test_emulator_sigterm_flushes_every_reading(kafka: KafkaTopics, tmp_path):
    log = tmp_path / "emulator.log"
    process = start_manage(
        "run_patient",
        "--patients",
        "10",
        "--interval",
        "0.2",
        log=log,
        **kafka.env(),
    )
    try:
        wait_for_log(log, '"emulating patients"', process, timeout=20)
        time.sleep(1.5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()

    stopped = [
        line for line in json_lines(log.read_text()) if line["message"] == "emulator stopped"
    ]
    assert len(stopped) == 1
    summary = stopped[0]
    assert summary["produced"] >= 30
    assert (summary["delivered"], summary["failed"], summary["undelivered"]) == (
        summary["produced"],
        0,
        0,
    )
    assert len(kafka.read()) == summary["produced"]


def test_emulator_without_broker_exits_with_one_clear_line():
    port = free_port()
    result = subprocess.run(
        [sys.executable, "manage.py", "run_patient", "--name", "bob", "--broker-timeout", "1"],
        cwd=BASE_DIR,
        env=subprocess_env(KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"CommandError: Cannot reach the Kafka broker at 127.0.0.1:{port} within 1s; "
        "start one with `python manage.py run_broker` (or `make run`)."
    ]


def test_missing_topic_is_reported_by_both_commands(kafka: KafkaTopics):
    with pytest.raises(CommandError, match="has no topic no-such-topic; create it"):
        call_command("run_patient", name=["bob"], count=1, topic="no-such-topic")
    with pytest.raises(CommandError, match="has no topic no-such-topic; create it"):
        call_command("consume_vitals", topic="no-such-topic", broker_timeout=2)


def test_a_message_with_a_1_mb_header_is_cut_into_the_dlq_and_the_readings_behind_it_stored(
    kafka: KafkaTopics, caplog
):
    """An invalid value with one 999,800-byte header: the broker takes it from a producer with
    librdkafka's default limits, but a DLQ copy with the dlq.* headers added would be over
    message.max.bytes. It goes to the DLQ cut, saying so, and the consumer goes on."""
    producer = producer_create()  # librdkafka's default message.max.bytes: 1,000,000
    readings = [valid_message("hal", s) for s in range(6)]
    poison = [("trace", b"t" * 999_800)]
    for key, value in readings[:3]:
        producer.produce(kafka.topic, key=key, value=value, partition=0)
    producer.produce(
        kafka.topic, key=readings[0][0], value=b"not json", partition=0, headers=poison
    )
    for key, value in readings[3:]:
        producer.produce(kafka.topic, key=key, value=value, partition=0)
    assert producer.flush(20) == 0
    caplog.set_level(logging.INFO, logger="vitals")

    consume()  # returns: it did not stop on the message

    assert db_rows() == rows_of([_Msg(k, v) for k, v in readings])
    assert kafka.committed()[0] == 7  # past the message and the readings behind it
    [dlq] = kafka.read(kafka.dlq_topic)
    headers = dlq.headers()
    names = [name for name, _ in headers]
    assert names == [
        "trace",
        DLQ_REASON,
        "dlq.detail",
        DLQ_TOPIC,
        DLQ_PARTITION,
        DLQ_OFFSET,
        "dlq.failed_at",
        "dlq.headers.truncated_from",
        "dlq.headers.cut",
        "dlq.headers.dropped",
    ]
    found = dict(headers)
    assert (found[DLQ_REASON], found[DLQ_OFFSET], found[DLQ_PARTITION]) == (
        b"invalid_json",
        b"3",
        b"0",
    )
    # The header's size as a record header (name, value, length varints counted at 5 bytes).
    assert found["dlq.headers.truncated_from"] == str(5 + 999_800 + 10).encode()
    assert (found["dlq.headers.cut"], found["dlq.headers.dropped"]) == (b"1", b"0")
    assert 990_000 < len(found["trace"]) < 999_800
    assert set(found["trace"]) == {ord("t")}
    assert (dlq.key(), dlq.value()) == (readings[0][0], b"not json")
    assert (
        len(dlq.key()) + len(dlq.value()) + sum(len(n) + len(v) + 10 for n, v in headers)
        < 1_000_000
    )
    stopped = [r for r in caplog.records if r.getMessage() == "consumer stopped"]
    assert [(r.stored, r.invalid, r.retries) for r in stopped] == [(6, 1, 0)]


def test_an_impostor_name_is_stored_under_the_uuid_logged_counted_and_shown(
    kafka: KafkaTopics, tmp_path, api_client
):
    """Readings with Alice's uuid and another name, through the broker and the real consumer:
    stored under Alice, each batch's mismatch logged with both names, counted in the metric,
    one identity row for the name however many readings carry it, shown by the API."""
    from patients.models import PatientNameConflict
    from vitals.tests.test_metrics import scrape, value

    alice = uuid.uuid5(uuid.NAMESPACE_DNS, "Alice")

    def message(name: str, seconds: int) -> tuple[bytes, bytes]:
        key, value = valid_message("Alice", seconds)
        return key, json.dumps({**json.loads(value), "patient_name": name}).encode()

    port, log = free_port(), tmp_path / "consumer.log"
    consumer = start_manage(
        "consume_vitals",
        *("--batch-timeout", "0.1", "--batch-size", "2", "--metrics-port", str(port)),
        log=log,
        DATABASE_URL=database_url(),
        **kafka.env(),
    )
    try:
        wait_for_log(log, "serving metrics", consumer, timeout=30)
        names = ["Alice", "Mallory Impostor", "Alice", "Mallory Impostor", "Mallory Impostor"]
        kafka.produce([message(name, i) for i, name in enumerate(names)])
        wait_until(lambda: PatientMetric.objects.count() == 5, what="five readings stored")
        wait_until(
            lambda: value(scrape(port), "icu_consumer_name_mismatch_total") == 3,
            what="three mismatches counted",
        )
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(timeout=20) == 0
    finally:
        if consumer.poll() is None:
            consumer.kill()

    assert list(Patient.objects.values_list("uuid", "name")) == [(alice, "Alice")]
    assert PatientMetric.objects.filter(patient__uuid=alice).count() == 5
    lines = [
        line
        for line in json_lines(log.read_text())
        if line["message"].startswith("patient name differs")
    ]
    assert {line["level"] for line in lines} == {"WARNING"}
    assert {(line["patient_uuid"], line["patient_name"], line["name_seen"]) for line in lines} == {
        (str(alice), "Alice", "Mallory Impostor")
    }
    assert sum(line["readings"] for line in lines) == 3  # batches of 2: at least 2 lines
    [conflict] = PatientNameConflict.objects.all()
    assert (conflict.patient.uuid, conflict.name, conflict.count, conflict.resolved_at) == (
        alice,
        "Mallory Impostor",
        3,
        None,
    )
    [shown] = api_client.get(f"/api/patients/{alice}/").json()["name_conflicts"]
    assert (shown["name"], shown["count"]) == ("Mallory Impostor", 3)
    assert shown["first_seen_at"] <= shown["last_seen_at"]


def v2_message(name: str, seconds: int, **signs) -> tuple[bytes, bytes]:
    """A contract version 2 message: only the signs given (None is sent as null)."""
    patient_uuid = str(uuid.uuid5(uuid.NAMESPACE_DNS, name))
    at = NOW - timedelta(minutes=10) + timedelta(seconds=seconds)
    body = {
        "schema_version": 2,
        "patient_uuid": patient_uuid,
        "patient_name": name,
        "timestamp": at.isoformat(),
    }
    return patient_uuid.encode(), json.dumps(body | signs).encode()


SIGN_COLUMNS = ("pulse", "resp_rate", "systolic", "diastolic", "map", "spo2", "temperature")


def test_version_1_and_version_2_readings_side_by_side_through_the_broker(kafka, api_client):
    """Issue 17: full version 1 readings (a hand-made monitor and the emulator's
    --schema-version 1) and partial version 2 readings in the same topic, the same batch:
    each stored as measured (null = not measured, MAP computed from the blood pressure when
    not sent), NEWS2 from each parameter's newest valid value, limit alarms judged sign by sign
    as they arrive, each sign's newest value kept for the tiles, and the API saying the same."""
    call_command("run_patient", name=["carol"], count=2, interval=0, seed=5, schema_version=1)
    kafka.produce(
        [
            valid_message("alice", 0),  # version 1: every sign; 118/76 -> MAP 90
            v2_message(
                "bob",
                0,
                pulse=80,
                resp_rate=18,
                bp="118/76",
                map=88,
                spo2=96,
                temperature=37.4,
                etco2=40,
            ),
            v2_message("bob", 60, pulse=82, spo2=95),
            # A probe off the finger: the SpO2 sent with it is not a measurement.
            v2_message("bob", 120, pulse=84, spo2=93, artefact="spo2_probe_off"),
            v2_message("bob", 420, pulse=86, spo2=94, etco2=None),  # resp rate now 7 min old
            v2_message("bob", 480, bp="84/50"),  # MAP computed: 61
            v2_message("bob", 500, pulse=88, spo2=94),  # no blood pressure: its counts stay
            v2_message("bob", 540, bp="84/50"),  # the second low BP: alarms (delay 2)
            valid_message("alice", 60),
        ]
    )
    consume()

    alice, bob, carol = (Patient.objects.get(name=n) for n in ("alice", "bob", "carol"))
    assert [
        tuple(getattr(m, c) for c in (*SIGN_COLUMNS, "etco2"))
        for m in alice.metrics.order_by("measured_at")
    ] == [(72, 16, 118, 76, 90, 97, 37.1, None)] * 2
    assert all(m.news2.complete for m in alice.metrics.all())
    # The emulator's version 1: every sign in every reading, MAP from the blood pressure.
    carols = list(carol.metrics.all())
    assert len(carols) == 2
    for m in carols:
        assert None not in [getattr(m, c) for c in SIGN_COLUMNS]
        assert m.map == (m.systolic + 2 * m.diastolic + 1) // 3
        assert m.etco2 is None

    rows = [
        (
            round((m.measured_at - NOW + timedelta(minutes=10)).total_seconds()),
            *(getattr(m, c) for c in (*SIGN_COLUMNS, "etco2")),
            m.artefact,
            m.news2_missing,
        )
        for m in bob.metrics.order_by("measured_at")
    ]
    assert rows == [
        (0, 80, 18, 118, 76, 88, 96, 37.4, 40, "", []),
        (60, 82, None, None, None, None, 95, None, None, "", []),
        (120, 84, None, None, None, None, None, None, None, "spo2_probe_off", []),
        (420, 86, None, None, None, None, 94, None, None, "", ["resp_rate"]),
        (480, None, None, 84, 50, 61, None, None, None, "", ["resp_rate"]),
        (500, 88, None, None, None, None, 94, None, None, "", ["resp_rate"]),
        (540, None, None, 84, 50, 61, None, None, None, "", ["resp_rate"]),
    ]

    def at(seconds: int) -> str:
        return (NOW - timedelta(minutes=10) + timedelta(seconds=seconds)).isoformat()

    bob.refresh_from_db()
    assert {k: (v["value"], v["measured_at"]) for k, v in bob.latest_signs.items()} == {
        "pulse": (88, at(500)),
        "resp_rate": (18, at(0)),
        "systolic": (84, at(540)),
        "diastolic": (50, at(540)),
        "map": (61, at(540)),
        "spo2": (94, at(500)),
        "temperature": (37.4, at(0)),
        "etco2": (40, at(0)),
        "consciousness": ("A", at(540)),
        "on_oxygen": (False, at(540)),
    }

    def since(moment) -> int:
        return round((moment - NOW + timedelta(minutes=10)).total_seconds())

    assert sorted(
        (a.kind, a.priority, a.state, since(a.raised_at), a.message) for a in bob.alarms.all()
    ) == [
        # Counted at 480 and 540 s; the reading between them, without a blood pressure, is no
        # count either way.
        ("map_low", "medium", "active", 540, "MAP low: 61 mmHg (< 65)"),
        # Incomplete, a lower bound that already triggers (systolic 84 scores 3), twice.
        (
            "news2",
            "medium",
            "active",
            500,
            "NEWS2 4 or more (low-medium risk; incomplete: no valid Resp. rate)",
        ),
        # No respiratory rate since 0 s: beyond its 5 min at 420 s and 480 s.
        ("sign_missing", "low", "active", 480, "No valid Resp. rate: sensor off?"),
        # At once; the SpO2 at 420 s resolved it (the SpO2 it made missing is not counted twice).
        ("spo2_probe_off", "low", "resolved", 120, "SpO2 probe off: no oximetry"),
        ("systolic_low", "medium", "active", 540, "Systolic BP low: 84 mmHg (< 90)"),
    ]

    newest = api_client.get(f"/api/patients/{bob.uuid}/metrics/").json()["results"][0]
    assert {k: newest[k] for k in ("pulse", "resp_rate", "bp", "map", "spo2", "etco2")} == {
        "pulse": None,
        "resp_rate": None,
        "bp": "84/50",
        "map": 61,
        "spo2": None,
        "etco2": None,
    }
    assert (newest["news2"]["complete"], newest["news2"]["missing"]) == (False, ["resp_rate"])
    assert newest["news2"]["subscores"]["resp_rate"] is None
    listed = api_client.get(f"/api/patients/{bob.uuid}/").json()
    assert listed["latest_signs"] == bob.latest_signs
    assert listed["latest_metric"]["measured_at"] == newest["measured_at"]
