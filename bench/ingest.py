"""Ingest throughput: `consume_vitals` against what a database insert costs on its own.

Two workloads, each measured the same way:
- steady: the emulator's physiology, a mixed ward, so that alarms are raised as in a real ward;
- churn: every sign drawn independently per reading, across the NEWS2 bands and the alarm
  limits (pulse 55-110, resp 12-22, systolic 95-150 with diastolic 30-50 below, SpO2 92-100,
  temperature 36.0-38.4; issue 20): alarms raised, re-prioritized and resolved all the time,
  as with artefacts, movement, a patient hovering at a limit.
The same readings go through:
- the real pipeline: produced to a new topic of the real broker, then `manage.py
  consume_vitals` (a child process) until every one is stored; timed from the partitions'
  assignment (not the process start and group join, reported apart) to the last row;
- (a) the floor: raw `sqlite3.executemany` of the same rows, or PostgreSQL `COPY`;
- (b) Django `bulk_create` of the same rows, already built, no Kafka;
- (c) a naive consumer: per message parse, `Patient.objects.get_or_create`, `save()`, on a
  sample.
Each into a fresh copy of the same migrated database, 1,000 rows per transaction (the
consumer's batch size) for (a) and (b), a transaction per reading for (c), as naive code does.

Run alone: python -m bench ingest   (or: python -m bench --help)
"""

import argparse
import json
import pickle
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import (
    Figure,
    World,
    django_setup,
    emit,
    json_log_lines,
    manage,
    progress,
    run_child,
    stop,
    topic_env,
    wait_for_log,
)

BATCH = 1000


WORKLOADS = ("steady", "churn")


def generate(*, out: Path, patients: int, per_patient: int, seed: int, workload: str) -> None:
    if workload == "churn":
        generate_churn(out=out, patients=patients, per_patient=per_patient, seed=seed)
    else:
        generate_steady(out=out, patients=patients, per_patient=per_patient, seed=seed)


def generate_churn(*, out: Path, patients: int, per_patient: int, seed: int) -> None:
    """The alarm-churn messages (contract version 2): `per_patient` readings of each patient
    one second apart, ending now, each sign drawn independently of the last reading."""
    import random

    from vitals.contract import Reading, reading_to_message

    rng = random.Random(seed)
    ward = [(uuid.UUID(int=rng.getrandbits(128), version=4), f"Churn {i}") for i in range(patients)]
    start = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(seconds=per_patient)
    messages = []
    for step in range(per_patient):
        measured_at = start + timedelta(seconds=step)
        for patient_uuid, name in ward:
            systolic = rng.randint(95, 150)
            reading = Reading(
                patient_uuid=patient_uuid,
                patient_name=name,
                measured_at=measured_at,
                pulse=rng.randint(55, 110),
                resp_rate=rng.randint(12, 22),
                systolic=systolic,
                diastolic=systolic - rng.randint(30, 50),
                spo2=rng.randint(92, 100),
                temperature=round(rng.uniform(36.0, 38.4), 1),
                schema_version=2,
            )
            messages.append(reading_to_message(reading))
    out.write_bytes(pickle.dumps(messages))


def generate_steady(*, out: Path, patients: int, per_patient: int, seed: int) -> None:
    """The messages, as the emulator makes them: `per_patient` readings of each patient one
    second apart, ending now, the physiology advancing 30 s per reading (so that the
    deteriorating patients of the mixed ward deteriorate within the run)."""
    from vitals.contract import reading_to_message
    from vitals.emulation import emulators_build

    emulators = emulators_build(
        names=[],
        patients=patients,
        patient_uuid=None,
        scenario="random",
        seed=seed,
        artefacts=True,
    )
    start = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(seconds=per_patient)
    messages = []
    for step in range(per_patient):
        measured_at = start + timedelta(seconds=step)
        messages += [reading_to_message(e.reading(measured_at, 30.0)) for e in emulators]
        if step % 50 == 49:
            progress(f"generated {len(messages):,} readings")
    out.write_bytes(pickle.dumps(messages))


def _messages(path: Path) -> list[tuple[bytes, bytes]]:
    return pickle.loads(path.read_bytes())  # noqa: S301 (our own file, written just before)


def _rows(messages: list[tuple[bytes, bytes]]):
    """The PatientMetric objects the messages make (patients created first), as the consumer
    would store them: parsed, NEWS2 scored. Not timed: the references start from rows."""
    from django.conf import settings
    from django.utils import timezone

    from patients.services import patient_bulk_get_or_create
    from vitals.contract import reading_parse
    from vitals.services import _reading

    now = datetime.now(tz=UTC) + timedelta(minutes=1)
    readings = [reading_parse(key=k, value=v, now=now) for k, v in messages]
    patients = patient_bulk_get_or_create(
        names_by_uuid={r.patient_uuid: r.patient_name for r in readings}
    )
    received_at = timezone.now()
    # Each patient's newest values, for NEWS2 (the storage service keeps them the same way).
    latest: dict = {uuid: {} for uuid in patients}
    validity = settings.SIGN_VALIDITY
    return [
        _reading(r, patients[r.patient_uuid], received_at, latest[r.patient_uuid], validity)
        for r in readings
    ]


def _batches(items: list, size: int = BATCH):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def measure_floor(data: Path, engine: str) -> list[Figure]:
    """(a) Raw executemany (SQLite) or COPY (PostgreSQL) of the rows, outside Django."""
    from django.db import connection

    from vitals.models import PatientMetric

    rows = _rows(_messages(data))
    columns = [f for f in PatientMetric._meta.concrete_fields if not f.primary_key]
    names = ", ".join(f'"{f.column}"' for f in columns)
    table = PatientMetric._meta.db_table
    settings = connection.settings_dict
    if engine == "sqlite":
        import sqlite3

        values = [
            [f.get_db_prep_save(getattr(m, f.attname), connection) for f in columns] for m in rows
        ]
        connection.close()
        db = sqlite3.connect(settings["NAME"], isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"
        started = time.perf_counter()
        for batch in _batches(values):
            db.execute("BEGIN IMMEDIATE")
            db.executemany(sql, batch)
            db.execute("COMMIT")
        seconds = time.perf_counter() - started
        stored = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        label = "raw sqlite3 executemany"
    else:
        import psycopg
        from django.db.models import JSONField
        from psycopg.types.json import Jsonb

        # COPY takes a JSON column's value as Jsonb (a dict it cannot adapt by itself).
        json_columns = [i for i, f in enumerate(columns) if isinstance(f, JSONField)]
        values = [[getattr(m, f.attname) for f in columns] for m in rows]
        for row in values:
            for i in json_columns:
                row[i] = None if row[i] is None else Jsonb(row[i])
        connection.close()
        with psycopg.connect(
            host=settings["HOST"],
            port=settings["PORT"],
            user=settings["USER"],
            dbname=settings["NAME"],
        ) as db:
            started = time.perf_counter()
            for batch in _batches(values):
                with (
                    db.transaction(),
                    db.cursor() as cursor,
                    cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy,
                ):
                    for row in batch:
                        copy.write_row(row)
            seconds = time.perf_counter() - started
            stored = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        label = "PostgreSQL COPY"
    assert stored == len(rows), (stored, len(rows))
    return [_rate("floor", label, len(rows), seconds, engine)]


def measure_bulk_create(data: Path, engine: str) -> list[Figure]:
    """(b) Django bulk_create of the rows, already built, a transaction per 1,000."""
    from django.db import transaction

    from vitals.models import PatientMetric

    rows = _rows(_messages(data))
    started = time.perf_counter()
    for batch in _batches(rows):
        with transaction.atomic():
            PatientMetric.objects.bulk_create(batch)
    seconds = time.perf_counter() - started
    assert PatientMetric.objects.count() == len(rows)
    return [_rate("bulk_create", "Django bulk_create", len(rows), seconds, engine)]


def measure_naive(data: Path, engine: str, sample: int) -> list[Figure]:
    """(c) What a first consumer looks like: per message, parse, get_or_create, save."""
    from django.conf import settings
    from django.utils import timezone

    from patients.models import Patient
    from vitals.contract import reading_parse
    from vitals.models import PatientMetric
    from vitals.services import _reading

    messages = _messages(data)[:sample]
    now = datetime.now(tz=UTC) + timedelta(minutes=1)
    latest: dict = {}
    validity = settings.SIGN_VALIDITY
    started = time.perf_counter()
    for key, value in messages:
        reading = reading_parse(key=key, value=value, now=now)
        patient, _ = Patient.objects.get_or_create(
            uuid=reading.patient_uuid, defaults={"name": reading.patient_name}
        )
        newest = latest.setdefault(patient.pk, {})
        _reading(reading, patient, timezone.now(), newest, validity).save()
    seconds = time.perf_counter() - started
    assert PatientMetric.objects.count() == len(messages)
    return [_rate("naive", "naive per-message ORM save", len(messages), seconds, engine)]


def readings_stored(total: int) -> int:
    """How many readings the table holds, for a poller waiting for `total`: while the highest
    id is below `total`, that id (an upper bound: ids are unique, from 1 in the benchmark's
    new table; one look-up of the primary key's index), else the exact count. Counting the
    whole table ten times a second, on a new connection each time, cost PostgreSQL a
    backend's start and a scan of up to 120,000 rows a poll, on the cores the consumer and
    its database share. The connection is kept: each query is its own transaction
    (autocommit), so it sees every commit."""
    from django.db.models import Max

    from vitals.models import PatientMetric

    top = PatientMetric.objects.aggregate(top=Max("pk"))["top"] or 0
    return top if top < total else PatientMetric.objects.count()


def measure_consumer(data: Path, engine: str, workdir: Path) -> list[Figure]:
    """The real pipeline: produce every message to a new topic, then run `consume_vitals`
    until the table holds them all."""

    from core.kafka import producer_create, topics_ensure

    messages = _messages(data)
    topic = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    topics_ensure(topics={topic: 6})
    producer = producer_create(**{"linger.ms": 20, "queue.buffering.max.messages": 1_000_000})
    started = time.perf_counter()
    for key, value in messages:
        # Sent as it was measured (the Kafka timestamp is the reading's own): monitors with
        # right clocks, not a ward of clocks minutes slow (each would raise clock_skew).
        sent = datetime.fromisoformat(json.loads(value)["timestamp"]).timestamp()
        producer.produce(topic, key=key, value=value, timestamp=round(sent * 1000))
        producer.poll(0)
    assert producer.flush(60) == 0
    produce_seconds = time.perf_counter() - started
    progress(f"produced {len(messages):,} readings in {produce_seconds:.1f} s; consuming")

    log = workdir / f"consumer-{engine}.log"
    started_wall = time.time()
    process = manage("consume_vitals", log=log, env=topic_env(topic))
    try:
        wait_for_log(log, "partitions assigned", process, timeout=60)
        stored, last_report = 0, time.monotonic()
        deadline = time.monotonic() + 600
        while stored < len(messages) and time.monotonic() < deadline:
            time.sleep(0.1)
            stored = readings_stored(len(messages))
            if time.monotonic() - last_report > 5:
                progress(f"consumer stored {stored:,} of {len(messages):,}")
                last_report = time.monotonic()
        done_wall = time.time()
    finally:
        stop(process)
    lines = json_log_lines(log)
    assigned = min(
        datetime.fromisoformat(line["timestamp"]).timestamp()
        for line in lines
        if line.get("message") == "partitions assigned"
    )
    assert stored == len(messages), f"stored {stored} of {len(messages)}"
    totals = [line for line in lines if line.get("message") == "consumer totals"]
    seconds = done_wall - assigned
    figure = _rate("consumer", "consume_vitals", len(messages), seconds, engine)
    figure.details = {
        "produce_seconds": round(produce_seconds, 2),
        "produce_per_s": round(len(messages) / produce_seconds),
        "start_to_assignment_s": round(assigned - started_wall, 2),
        "totals": {
            k: totals[-1].get(k)
            for k in ("stored", "duplicates", "invalid", "alarm_events", "batches")
        }
        if totals
        else {},
    }
    return [figure]


def _rate(name: str, label: str, rows: int, seconds: float, engine: str) -> Figure:
    return Figure(
        benchmark="ingest",
        figure=label,
        value=rows / seconds,
        unit="rows/s",
        engine=engine,
        details={"rows": rows, "seconds": round(seconds, 3), "measurement": name},
    )


# --- orchestration (in the `python -m bench` process) ---------------------------------------


def run(
    world: World,
    *,
    engines: list[str],
    patients: int,
    per_patient: int,
    sample: int,
    churn_patients: int,
    churn_per_patient: int,
) -> list[Figure]:
    sizes = {"steady": (patients, per_patient), "churn": (churn_patients, churn_per_patient)}
    data = {}
    for workload, (n, per) in sizes.items():
        data[workload] = world.workdir / f"ingest-{workload}.pickle"
        env = world.env(world.database("sqlite", f"ingest-generate-{workload}"))
        progress(f"ingest: generating {n * per:,} {workload} readings for {n:,} patients")
        run_child(
            "bench.ingest",
            "generate",
            "--workload",
            workload,
            "--data",
            str(data[workload]),
            "--patients",
            str(n),
            "--per-patient",
            str(per),
            env=env,
        )
    figures = []
    for engine in engines:
        consumers = {}
        for workload in WORKLOADS:
            # The naive consumer is measured once, on the steady workload (a sample).
            names = ("floor", "bulk_create", "naive", "consumer")
            if workload == "churn":
                names = ("floor", "bulk_create", "consumer")
            measured = {}
            for name in names:
                progress(f"ingest {workload} on {engine}: {name}")
                url = world.database(engine, f"ingest_{workload}_{name}")
                (fig,) = run_child(
                    "bench.ingest",
                    name,
                    "--data",
                    str(data[workload]),
                    "--engine",
                    engine,
                    "--sample",
                    str(sample),
                    "--workdir",
                    str(world.workdir),
                    env=world.env(url),
                )
                measured[name] = fig
                progress(f"  {fig.figure}: {fig.value:,.0f} rows/s")
            consumer = consumers[workload] = measured["consumer"]
            label = "consume_vitals" + (" (alarm churn)" if workload == "churn" else "")
            targets = (("bulk_create", ">= 1.0"), ("naive", ">= 20"), ("floor", ""))
            for ref, target in targets:
                if ref not in measured:
                    continue
                r = measured[ref]
                figures.append(
                    Figure(
                        benchmark="ingest",
                        figure=label,
                        value=consumer.value,
                        unit="rows/s",
                        reference=r.figure,
                        reference_value=r.value,
                        target=target,
                        engine=engine,
                        details={
                            "workload": workload,
                            "consumer": consumer.details,
                            "reference": r.details,
                        },
                    )
                )
        # Alarm churn must not cost the consumer much more than steady values (issue 20: the
        # churn workload stored 0.36x the steady one's rate before).
        figures.append(
            Figure(
                benchmark="ingest",
                figure="consume_vitals (alarm churn)",
                value=consumers["churn"].value,
                unit="rows/s",
                reference="consume_vitals (steady)",
                reference_value=consumers["steady"].value,
                target=">= 0.8",
                engine=engine,
                details={"workload": "churn"},
            )
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description="One ingest measurement (run by `python -m bench`)."
    )
    parser.add_argument("what", choices=["generate", "floor", "bulk_create", "naive", "consumer"])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--workload", choices=WORKLOADS, default="steady")
    parser.add_argument("--engine", default="sqlite")
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--per-patient", type=int, default=200)
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--workdir", type=Path, default=Path("."))
    args = parser.parse_args()
    django_setup()
    if args.what == "generate":
        generate(
            out=args.data,
            patients=args.patients,
            per_patient=args.per_patient,
            seed=1,
            workload=args.workload,
        )
        emit([])
    elif args.what == "floor":
        emit(measure_floor(args.data, args.engine))
    elif args.what == "bulk_create":
        emit(measure_bulk_create(args.data, args.engine))
    elif args.what == "naive":
        emit(measure_naive(args.data, args.engine, args.sample))
    else:
        emit(measure_consumer(args.data, args.engine, args.workdir))


if __name__ == "__main__":
    main()
