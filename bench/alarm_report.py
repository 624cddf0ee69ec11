"""The alarm-burden report at scale: 1,000,000 alarms over a 32-bed unit (about 156 days of a
unit at some 200 alarms per bed-day, 4-day stays back to back), then the report through the API
(`GET /api/units/{code}/alarm-report/`, Django's test client) over its default window (the last
7 days) and over 30 days, median of a few runs, against its budget of 1 s; and against the raw
SQL of one of its figures (the alarms by kind, with the admission join) as the reference ratio.

The database is filled by a fast bulk path (raw executemany on SQLite, COPY on PostgreSQL),
with the indexes in place: the alarms of a stay spread over it, of several kinds and priorities,
60% acknowledged after 5 s to 10 min, a quarter resolving by themselves within 30 s.
"""

import argparse
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

from bench.common import Figure, World, django_setup, emit, progress, run_child

BEDS = 32
STAY_DAYS = 4
PER_BED_DAY = 200
CHUNK = 20_000
KINDS = (
    ("spo2_low", "medium", 30),
    ("pulse_high", "medium", 15),
    ("systolic_low", "medium", 8),
    ("resp_rate_high", "medium", 8),
    ("news2", "high", 4),
    ("spo2_probe_off", "low", 15),
    ("sign_missing", "low", 10),
    ("no_data", "low", 6),
    ("clock_skew", "low", 4),
)


def generate(*, alarms: int) -> None:
    from django.db import connection, transaction

    from patients.models import Patient
    from units.models import Admission, Bed, Unit
    from vitals.models import Alarm

    sqlite = connection.vendor == "sqlite"
    days = alarms / (BEDS * PER_BED_DAY)
    end = datetime.now(tz=UTC).replace(microsecond=0)
    start = end - timedelta(days=days)
    unit = Unit.objects.create(code="icu-bench", name="Bench ICU")
    beds = Bed.objects.bulk_create(
        Bed(unit=unit, label=str(i + 1), position=i + 1) for i in range(BEDS)
    )
    # Back-to-back stays of STAY_DAYS per bed, staggered; the last of each bed still open.
    stays = []
    for b, bed in enumerate(beds):
        at = start - timedelta(days=STAY_DAYS * b / BEDS)
        while at < end:
            leaves = at + timedelta(days=STAY_DAYS)
            stays.append((bed, at, leaves if leaves < end else None))
            at = leaves
    patients = Patient.objects.bulk_create(
        Patient(uuid=uuid.UUID(int=i + 1), name=f"stay-{i + 1:05d}") for i in range(len(stays))
    )
    Admission.objects.bulk_create(
        Admission(patient=p, bed=bed, admitted_at=at, discharged_at=leaves,
                  end_reason="discharge" if leaves else "")
        for p, (bed, at, leaves) in zip(patients, stays, strict=True)
    )  # fmt: skip

    columns = ["patient_id", "kind", "priority", "state", "message", "value", "threshold",
               "raised_at", "activated_at", "escalated_at", "acknowledged_at",
               "acknowledged_by_id", "acknowledged_priority", "acknowledged_message",
               "resolved_at", "created_at"]  # fmt: skip
    assert set(columns) == {f.column for f in Alarm._meta.concrete_fields} - {"id"}
    rng = random.Random(11)
    weighted = [(kind, priority) for kind, priority, weight in KINDS for _ in range(weight)]

    def db(at: datetime | None):
        if at is None:
            return None
        return at.replace(tzinfo=None).isoformat(" ") if sqlite else at

    def rows():
        made = 0
        # Alarms per stay in proportion to its length within [start, end).
        total_seconds = sum(
            ((leaves or end) - max(at, start)).total_seconds() for _, at, leaves in stays
        )
        for patient, (_, at, leaves) in zip(patients, stays, strict=True):
            begin, finish = max(at, start), leaves or end
            span = (finish - begin).total_seconds()
            if span <= 0:
                continue
            count = round(alarms * span / total_seconds)
            for _ in range(min(count, alarms - made)):
                raised = begin + timedelta(seconds=rng.random() * (span - 700))
                kind, priority = rng.choice(weighted)
                roll = rng.random()
                acked = resolved = None
                if roll < 0.25:  # resolves by itself within 30 s
                    resolved = raised + timedelta(seconds=rng.uniform(2, 30))
                elif roll < 0.85:  # acknowledged, then resolved
                    acked = raised + timedelta(seconds=rng.lognormvariate(3.5, 1.0) % 600 + 5)
                    resolved = acked + timedelta(seconds=rng.uniform(10, 600))
                else:  # resolves by itself, later
                    resolved = raised + timedelta(seconds=rng.uniform(31, 900))
                yield (patient.pk, kind, priority, "resolved", kind, 1.0, None, db(raised),
                       db(raised), None, db(acked), None, priority if acked else "",
                       kind if acked else "", db(resolved), db(raised))  # fmt: skip
                made += 1

    table = Alarm._meta.db_table
    started = time.monotonic()
    with connection.cursor() as cursor:
        batch, written = [], 0
        for row in rows():
            batch.append(row)
            if len(batch) == CHUNK:
                written += _write(cursor, table, columns, batch, sqlite=sqlite)
                batch = []
                if written % (CHUNK * 10) == 0:
                    progress(f"alarm_report: {written:,} of {alarms:,} alarms")
        written += _write(cursor, table, columns, batch, sqlite=sqlite)
        if not sqlite:
            cursor.execute(f"ANALYZE {table}")
            cursor.execute("ANALYZE units_admission")
        else:
            cursor.execute("ANALYZE")
    transaction.set_autocommit(True)
    progress(
        f"alarm_report: {written:,} alarms over {len(stays):,} stays in "
        f"{time.monotonic() - started:.0f} s"
    )


def _write(cursor, table: str, columns: list[str], batch: list[tuple], *, sqlite: bool) -> int:
    from django.db import transaction

    if not batch:
        return 0
    # A transaction per chunk: in autocommit SQLite would commit every row.
    transaction.set_autocommit(False)
    if sqlite:
        placeholders = ", ".join(["%s"] * len(columns))
        cursor.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", batch
        )
    else:
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in batch:
                copy.write_row(row)
    transaction.commit()
    transaction.set_autocommit(True)
    return len(batch)


# The reference: the report's by-kind figure as one hand-written query.
RAW_BY_KIND = """
SELECT a.kind, COUNT(*) FROM vitals_alarm a
JOIN units_admission ad ON ad.patient_id = a.patient_id
JOIN units_bed b ON b.id = ad.bed_id
WHERE b.unit_id = %s AND ad.admitted_at <= a.raised_at
  AND (ad.discharged_at IS NULL OR ad.discharged_at > a.raised_at)
  AND a.raised_at >= %s AND a.raised_at < %s
GROUP BY a.kind
"""


def measure(*, repeat: int, engine: str) -> list[Figure]:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from rest_framework.authtoken.models import Token

    from units.models import Unit
    from vitals.models import Alarm

    user = get_user_model().objects.create_superuser("bench-report", password=None)
    client = Client(
        HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}"
    )
    unit = Unit.objects.get(code="icu-bench")
    url = f"/{settings.API_PREFIX}units/{unit.code}/alarm-report/"
    stored = Alarm.objects.count()
    figures = []
    for days in (7, 30):
        until = datetime.now(tz=UTC)
        since = until - timedelta(days=days)
        window = {"since": since.isoformat(), "until": until.isoformat()}
        params = [unit.pk, *(connection.ops.adapt_datetimefield_value(t) for t in (since, until))]

        def api(window: dict = window) -> int:
            response = client.get(url, window)
            assert response.status_code == 200, response.content[:300]
            return response.json()["alarms"]["total"]

        def raw(params: list = params) -> int:
            with connection.cursor() as cursor:
                cursor.execute(RAW_BY_KIND, params)
                return sum(count for _, count in cursor.fetchall())

        assert api() == raw()  # warm both, and the same alarms counted
        api_ms, raw_ms = [], []
        for _ in range(repeat):  # interleaved: a noisy neighbour hits both alike
            started = time.perf_counter()
            in_window = api()
            api_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            raw()
            raw_ms.append((time.perf_counter() - started) * 1000)
        details = {"alarms": stored, "in_window": in_window, "runs": repeat}
        name = f"report over {days} days ({in_window:,} of {stored:,} alarms) p50"
        figures.append(
            Figure("alarm_report", name, statistics.median(api_ms), "ms", target="<= 1000",
                   engine=engine, details=details)
        )  # fmt: skip
        figures.append(
            Figure("alarm_report", f"report over {days} days p50, vs one figure",
                   statistics.median(api_ms), "ms", reference="raw SQL by kind p50",
                   reference_value=statistics.median(raw_ms), engine=engine, details=details)
        )  # fmt: skip
    return figures


def run(world: World, *, engines: list[str], alarms: int, repeat: int) -> list[Figure]:
    figures = []
    for engine in engines:
        url = world.database(engine, f"alarm_report_{engine}")
        env = world.env(url)
        progress(f"alarm_report on {engine}: generating {alarms:,} alarms over {BEDS} beds")
        run_child("bench.alarm_report", "generate", "--alarms", str(alarms), env=env)
        figures += run_child(
            "bench.alarm_report", "measure", "--repeat", str(repeat), "--engine", engine, env=env
        )
        world.drop(engine, f"alarm_report_{engine}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description="Alarm report (run by `python -m bench`).")
    parser.add_argument("what", choices=["generate", "measure"])
    parser.add_argument("--alarms", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--engine", default="sqlite")
    args = parser.parse_args()
    django_setup()
    if args.what == "generate":
        generate(alarms=args.alarms)
        emit([])
    else:
        emit(measure(repeat=args.repeat, engine=args.engine))


if __name__ == "__main__":
    main()
