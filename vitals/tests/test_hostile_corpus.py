"""The hostile input corpus (tests/hostile/): every case through the parser, then all of them
through the real pipeline.

The corpus is data, not code: `tests/hostile/cases.json` holds each case's Kafka key and what
must happen to it, `tests/hostile/values/<case>.bin` its value, byte for byte (see the README
there), loaded by hostile_corpus.py. It is the one source of truth of these cases:
test_contract.py adds them to its BAD and GOOD_CASES (as `hostile/<case>`), so they also go
through its schema agreement tests.

End to end, each hostile message is produced between two valid readings, all in one
partition, and the real `consume_vitals` command runs as a child process until idle: the valid
readings are stored exactly once, each hostile one is in the DLQ exactly once with its reason,
original bytes and source offset, the duplicates are skipped, and the consumer never stops.
"""

import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Message

from core.kafka import producer_create
from patients.models import Patient
from testing.broker import KafkaTopics
from testing.database import database_url
from testing.processes import json_lines, report_figure, start_manage
from vitals.consumer import (
    DLQ_DETAIL,
    DLQ_MAX_VALUE_BYTES,
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_REASON,
    DLQ_TOPIC,
    DLQ_TRUNCATED,
)
from vitals.contract import (
    CONSUMER_REASONS,
    MAX_VALUE_BYTES,
    REASONS,
    Reading,
    reading_parse,
    reading_to_message,
)
from vitals.errors import InvalidReading
from vitals.models import PatientMetric
from vitals.tests.hostile_corpus import (
    CONFLICTING,
    CORPUS,
    CORPUS_DIR,
    CORPUS_NOW,
    DUPLICATES,
    REJECTED,
    STORED,
    HostileCase,
)


def _parse(case: HostileCase, now: datetime) -> Reading:
    return reading_parse(key=case.key, value=case.value, now=now)


# --- The corpus, case by case, through the parser ------------------------------------------


@pytest.mark.parametrize("clock", ["corpus-now", "real-clock"])
@pytest.mark.parametrize("case", REJECTED.values(), ids=REJECTED.keys())
def test_hostile_message_is_rejected_with_its_reason(case: HostileCase, clock: str):
    now = CORPUS_NOW if clock == "corpus-now" else datetime.now(tz=UTC)
    with pytest.raises(InvalidReading) as caught:
        _parse(case, now)

    assert caught.value.reason == case.reason, caught.value.message
    assert case.detail in caught.value.message
    # Short whatever the value: it goes into a DLQ header and a log line.
    assert len(caught.value.message) <= 300


@pytest.mark.parametrize("clock", ["corpus-now", "real-clock"])
@pytest.mark.parametrize("case", STORED.values(), ids=STORED.keys())
def test_hostile_but_valid_message_is_accepted_verbatim(case: HostileCase, clock: str):
    now = CORPUS_NOW if clock == "corpus-now" else datetime.now(tz=UTC)
    reading = _parse(case, now)

    assert {name: getattr(reading, name) for name in case.stored} == case.stored


@pytest.mark.parametrize(
    "case", [*DUPLICATES.values(), *CONFLICTING.values()], ids=[*DUPLICATES, *CONFLICTING]
)
def test_duplicate_is_a_valid_reading_of_the_same_patient_and_time(case: HostileCase):
    """The parser accepts it: telling it from the first copy is the consumer's (the unique
    (patient, measured_at), then its values against the stored ones)."""
    reading = _parse(case, CORPUS_NOW)
    original = _parse(CORPUS[case.duplicate_of or case.conflicting_duplicate_of], CORPUS_NOW)

    assert (reading.patient_uuid, reading.measured_at) == (
        original.patient_uuid,
        original.measured_at,
    )
    assert (_row(reading) == _row(original)) == (case.duplicate_of is not None)


def test_corpus_covers_every_parser_reason_and_the_valid_hostile_kinds():
    assert len(CORPUS) >= 40
    assert {case.reason for case in REJECTED.values()} == REASONS - CONSUMER_REASONS
    assert len(STORED) >= 2
    assert len(DUPLICATES) >= 1
    assert len(CONFLICTING) >= 1
    # The DLQ truncates what is larger than a Kafka message may be: one case must be.
    assert any(len(case.value or b"") > DLQ_MAX_VALUE_BYTES for case in CORPUS.values())


def test_corpus_files_are_exactly_the_manifests():
    """One value file per case (tombstones have none), none left over, none too big to keep
    in the repository: large payloads are made by `fill`."""
    files = {path.name for path in (CORPUS_DIR / "values").iterdir()}
    with_value = {name for name, case in CORPUS.items() if case.value is not None}

    assert files == {f"{name}.bin" for name in with_value}
    assert max(path.stat().st_size for path in (CORPUS_DIR / "values").iterdir()) <= (
        MAX_VALUE_BYTES
    )
    assert len(CORPUS["one-megabyte"].value) == 1024 * 1024


# --- The corpus through the real pipeline -----------------------------------------------------


def _neighbour(index: int, now: datetime) -> tuple[bytes, bytes]:
    """A valid reading: five patients, one second apart, ten minutes ago."""
    name = f"neighbour-{index % 5}"
    return reading_to_message(
        Reading(
            patient_uuid=uuid.uuid5(uuid.NAMESPACE_DNS, name),
            patient_name=name,
            measured_at=now - timedelta(minutes=10) + timedelta(seconds=index),
            pulse=60 + index % 40,
            resp_rate=16,
            systolic=118,
            diastolic=76,
            spo2=97,
            temperature=37.1,
        )
    )


def _row(reading: Reading) -> tuple:
    return (
        reading.patient_uuid,
        reading.measured_at,
        reading.pulse,
        reading.resp_rate,
        reading.systolic,
        reading.diastolic,
        reading.spo2,
        reading.temperature,
    )


def _produce_in_order(kafka: KafkaTopics, messages: list[tuple[bytes | None, bytes | None]]):
    """Produce into partition 0, in this order; return each message's offset."""
    # The 1 MiB case is over librdkafka's default 1 000 000-byte limit (Tansu takes it).
    producer = producer_create(**{"message.max.bytes": 2 * 1024 * 1024})
    offsets: list[int | None] = [None] * len(messages)
    errors: list[KafkaError] = []

    def on_delivery_of(index: int):
        def on_delivery(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                errors.append(error)
            else:
                offsets[index] = message.offset()

        return on_delivery

    for index, (key, value) in enumerate(messages):
        producer.produce(
            kafka.topic, key=key, value=value, partition=0, on_delivery=on_delivery_of(index)
        )
        producer.poll(0)
    assert producer.flush(20) == 0
    assert not errors, errors
    assert None not in offsets
    assert offsets == sorted(offsets)
    return offsets


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_hostile_corpus_through_the_real_consumer(kafka: KafkaTopics, tmp_path: Path):
    now = datetime.now(tz=UTC).replace(microsecond=0)
    names = list(CORPUS)
    # neighbour 0, case 0, neighbour 1, case 1, ..., case n-1, neighbour n.
    messages: list[tuple[bytes | None, bytes | None]] = [_neighbour(0, now)]
    for index, name in enumerate(names, start=1):
        messages += [(CORPUS[name].key, CORPUS[name].value), _neighbour(index, now)]
    offsets = _produce_in_order(kafka, messages)
    offset_of = {name: offsets[2 * i + 1] for i, name in enumerate(names)}

    log = tmp_path / "consumer.log"
    started = time.monotonic()
    process = start_manage(
        "consume_vitals",
        "--exit-on-idle",
        "1.5",
        "--batch-timeout",
        "0.1",
        # Several batches: the duplicates are skipped across batches, by the database.
        "--batch-size",
        "16",
        log=log,
        DATABASE_URL=database_url(),
        **kafka.env(),
    )
    try:
        exit_code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    consumer_seconds = time.monotonic() - started
    output = log.read_text(errors="replace")
    assert exit_code == 0, output

    # Every valid reading exactly once: the neighbours and the valid hostile cases.
    expected_rows = {_row(reading_parse(key=k, value=v)) for k, v in messages[::2]}
    expected_rows |= {_row(reading_parse(key=c.key, value=c.value)) for c in STORED.values()}
    rows = list(
        PatientMetric.objects.values_list(
            "patient__uuid",
            "measured_at",
            "pulse",
            "resp_rate",
            "systolic",
            "diastolic",
            "spo2",
            "temperature",
        )
    )
    assert len(rows) == len(expected_rows) == len(messages[::2]) + len(STORED)
    assert set(rows) == expected_rows
    # Hostile names verbatim (the first copy's: a duplicate renames nothing), the table intact.
    for case in STORED.values():
        patient = Patient.objects.get(uuid=uuid.UUID(case.key.decode()))
        assert patient.name == case.stored["patient_name"]
    assert Patient.objects.count() == 5 + len(STORED)

    # Every rejected message in the DLQ exactly once, as it came, saying why and from where.
    dlq = kafka.read(kafka.dlq_topic)
    by_offset = {offset: name for name, offset in offset_of.items()}
    dlq_names = []
    for message in dlq:
        headers = dict(message.headers())
        assert headers[DLQ_TOPIC] == kafka.topic.encode()
        assert headers[DLQ_PARTITION] == b"0"
        case = CORPUS[by_offset[int(headers[DLQ_OFFSET])]]
        dlq_names.append(case.name)
        if case.conflicting_duplicate_of:
            assert headers[DLQ_REASON] == b"conflicting_duplicate"
            assert "other values" in headers[DLQ_DETAIL].decode()
        else:
            assert headers[DLQ_REASON] == case.reason.encode(), case.name
            assert case.detail in headers[DLQ_DETAIL].decode(), case.name
        assert message.key() == case.key, case.name
        if case.value is not None and len(case.value) > DLQ_MAX_VALUE_BYTES:
            assert headers[DLQ_TRUNCATED] == str(len(case.value)).encode()
            assert message.value() == case.value[:DLQ_MAX_VALUE_BYTES]
        else:
            assert DLQ_TRUNCATED not in headers, case.name
            assert message.value() == case.value, case.name
    assert sorted(dlq_names) == sorted([*REJECTED, *CONFLICTING])

    # The consumer never stopped or retried, and its totals say what happened.
    lines = json_lines(output)
    assert not [line for line in lines if line["level"] in ("ERROR", "CRITICAL")], output
    [stopped] = [line for line in lines if line["message"] == "consumer stopped"]
    by_reason = Counter(case.reason for case in REJECTED.values())
    by_reason["conflicting_duplicate"] = len(CONFLICTING)
    assert stopped["consumed"] == len(messages)
    assert stopped["stored"] == len(expected_rows)
    assert stopped["duplicates"] == len(DUPLICATES)
    assert stopped["invalid"] == len(REJECTED) + len(CONFLICTING)
    assert stopped["invalid_by_reason"] == dict(by_reason)
    assert stopped["retries"] == 0
    # Poison messages do not hold the partition: all of it is committed.
    assert kafka.committed()[0] == offsets[-1] + 1

    report_figure(
        "hostile corpus",
        f"{len(CORPUS)} cases between {len(messages) - len(CORPUS)} valid readings: "
        f"{len(REJECTED)} to the DLQ, {len(STORED)} stored verbatim, {len(DUPLICATES)} skipped "
        f"as duplicates; consumer run {consumer_seconds:.1f}s, exit 0",
    )
    report_figure(
        "hostile corpus DLQ'd by reason",
        ", ".join(f"{reason} {count}" for reason, count in sorted(by_reason.items())),
    )
