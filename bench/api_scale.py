"""API at scale: 10 million readings over 1,000 patients, then the two reads a central station
makes all day, through Django's test client, against the same queries in raw SQL.

- a patient's last hour: `GET /api/patients/{uuid}/metrics/?since=<1 h ago>` (its first page,
  100 readings); raw: the patient by uuid, then the page (LIMIT 101, as the cursor paginator
  asks);
- the ward: `GET /api/patients/?ordering=-news2` (first page, 50 patients, with their latest
  reading, NEWS2 and open alarms); raw: the count, the page joined to the latest readings, the
  page's open alarms;
- a patient poll of the central station's patient page (the patient, then its last hour), with
  the access log recording it against the same poll with the access log's hook switched off.
The database is filled by a fast bulk path (raw executemany on SQLite, COPY on PostgreSQL), one
reading per patient per second, time-interleaved as a ward writes them, with the indexes in
place; NEWS2 scored by the project's own function; 10% of the patients with an open alarm.
"""

import argparse
import io
import json
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from bench.common import Figure, World, django_setup, emit, percentile, progress, run_child

CHUNK = 20_000


def generate(*, readings: int, patients: int) -> None:
    from django.db import connection, transaction
    from django.db.models import OuterRef, Subquery

    from patients.models import Patient
    from vitals.models import Alarm, PatientMetric
    from vitals.news2 import news2_score
    from vitals.tile_services import patient_tiles_rebuild

    per_patient = readings // patients
    end = datetime.now(tz=UTC).replace(microsecond=0)
    start = end - timedelta(seconds=per_patient - 1)
    Patient.objects.bulk_create(
        Patient(uuid=uuid.UUID(int=i + 1), name=f"bed-{i + 1:04d}") for i in range(patients)
    )
    ids = list(Patient.objects.order_by("id").values_list("id", flat=True))
    rng = random.Random(7)
    # A random walk per patient around its own baseline: values move like a monitor's.
    state = {pid: [rng.gauss(80, 12), rng.gauss(16, 3), rng.gauss(125, 15), rng.gauss(96, 2),
                   rng.gauss(37, 0.5)] for pid in ids}  # fmt: skip

    @lru_cache(maxsize=200_000)
    def score(resp: int, spo2: int, systolic: int, pulse: int, temp: float):
        s = news2_score(resp_rate=resp, spo2=spo2, on_oxygen=False, systolic=systolic,
                        pulse=pulse, consciousness="A", temperature=temp)  # fmt: skip
        # As the consumer stores them: the sub-scores and the missing parameters (none).
        return s.score, s.risk, json.dumps(s.subscores), "[]"

    columns = ["patient_id", "measured_at", "pulse", "resp_rate", "systolic", "diastolic",
               "map", "spo2", "temperature", "etco2", "on_oxygen", "consciousness", "artefact",
               "news2_score", "news2_risk", "spo2_scale", "news2_subscores", "news2_missing",
               "received_at", "sent_at"]  # fmt: skip
    assert set(columns) == {f.column for f in PatientMetric._meta.concrete_fields} - {"id"}
    sqlite = connection.vendor == "sqlite"

    # Normal noise drawn once: 50 million gauss() calls would take longer than the writes.
    noise = [rng.gauss(0, 1) for _ in range(100_003)]
    cursor_at = 0
    last: list[tuple] = []  # the newest step's rows: each patient's latest_signs

    def rows(step: int):
        nonlocal cursor_at
        at = start + timedelta(seconds=step)
        at_db = at.replace(tzinfo=None).isoformat(" ") if sqlite else at
        out = []
        for pid in ids:
            v = state[pid]
            n = cursor_at = (cursor_at + 5) % 99_998
            # A step of noise, pulled back 1% towards the baseline: no walk wanders off.
            v[0] += noise[n] * 1.5 + (80 - v[0]) * 0.01
            v[1] += noise[n + 1] * 0.4 + (16 - v[1]) * 0.01
            v[2] += noise[n + 2] * 2 + (125 - v[2]) * 0.01
            v[3] += noise[n + 3] * 0.3 + (96 - v[3]) * 0.01
            v[4] += noise[n + 4] * 0.02 + (37 - v[4]) * 0.01
            pulse, resp, sbp = round(v[0]), max(4, round(v[1])), round(v[2])
            spo2, temp = min(100, round(v[3])), round(v[4], 1)
            news2, risk, subscores, missing = score(resp, spo2, sbp, pulse, temp)
            # Mean arterial pressure from the cuff's two halves; no capnograph (etco2 null).
            out.append((pid, at_db, pulse, resp, sbp, sbp - 40, sbp - 27, spo2, temp, None, False,
                        "A", "", news2, risk, 1, subscores, missing, at_db, at_db))  # fmt: skip
        last[:] = out
        return out

    table = PatientMetric._meta.db_table
    started = time.monotonic()
    steps_per_chunk = max(1, CHUNK // patients)
    with connection.cursor() as cursor:
        if sqlite:
            cursor.execute("PRAGMA cache_size=-400000")  # 400 MB: the index pages stay hot
        for first in range(0, per_patient, steps_per_chunk):
            # A transaction per chunk: in autocommit SQLite would commit every row.
            transaction.set_autocommit(False)
            batch = [
                r
                for step in range(first, min(per_patient, first + steps_per_chunk))
                for r in rows(step)
            ]
            if sqlite:
                placeholders = ", ".join(["%s"] * len(columns))
                cursor.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})",
                    batch,
                )
            else:
                with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in batch:
                        copy.write_row(row)
            transaction.commit()
            transaction.set_autocommit(True)
            done = (first + steps_per_chunk) * patients
            if first // steps_per_chunk % 25 == 0:
                rate = done / (time.monotonic() - started)
                progress(
                    f"api_scale: {min(done, readings):,} of {readings:,} readings ({rate:,.0f}/s)"
                )
    # Each patient's latest reading: the last one written (readings were written in order).
    newest = PatientMetric.objects.filter(patient_id=OuterRef("pk")).order_by("-pk").values("pk")
    Patient.objects.filter(pk__in=ids).update(latest_metric=Subquery(newest[:1]))
    # Each patient's newest values, as the consumer keeps them (Patient.latest_signs).
    keys = {"pulse": 2, "resp_rate": 3, "systolic": 4, "diastolic": 5, "map": 6, "spo2": 7,
            "temperature": 8, "on_oxygen": 10, "consciousness": 11}  # fmt: skip
    measured = end.isoformat()
    for row in last:
        signs = {key: {"value": row[i], "measured_at": measured} for key, i in keys.items()}
        Patient.objects.filter(pk=row[0]).update(latest_signs=signs)
    Alarm.objects.bulk_create(
        Alarm(patient_id=pid, kind="pulse_high", priority="medium", value=125, threshold=120,
              message="Pulse high: 125 /min (> 120)", raised_at=end)
        for pid in ids[::10]
    )  # fmt: skip
    # The ward's snapshot, as the consumer keeps it (one tile a patient, vitals/tile_services).
    patient_tiles_rebuild()
    if not sqlite:
        cursor = connection.cursor()
        cursor.execute(f"ANALYZE {table}")
    stored, seconds = PatientMetric.objects.count(), time.monotonic() - started
    progress(f"api_scale: {stored:,} readings stored in {seconds:.0f} s")


def _timed(function, repeat: int) -> list[float]:
    """Milliseconds of each of `repeat` calls of function(i). A call returns a check (a
    function or None), run after its time is taken: the answer is checked, not timed (the
    raw SQL's rows are not decoded either)."""
    times = []
    for i in range(repeat):
        started = time.perf_counter()
        check = function(i)
        times.append((time.perf_counter() - started) * 1000)
        if check is not None:
            check()
    return times


class Wsgi:
    """GET requests made to the project's WSGI application as gunicorn's sync worker makes
    them (icu.wsgi: Django's WSGIHandler, every middleware, the request signals and the
    database connection's reuse and health check, CONN_MAX_AGE, as in production), with a
    viewer's token. Not Django's test Client: besides its own work per request (cookies,
    copies, templates), it and its handler connect a weak receiver to a request signal on
    every request and so leave three weakref.finalize objects behind each one, never freed:
    the full collections walking them were the API's p99 (issue 20), which no server pays."""

    def __init__(self, *, token: str) -> None:
        from django.core.wsgi import get_wsgi_application

        self.application = get_wsgi_application()
        self.token = token

    def get(self, path: str, params: dict[str, str] | None = None) -> tuple[int, bytes]:
        """(status, body) of GET `path`?`params`."""
        from urllib.parse import urlencode

        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": path,
            "QUERY_STRING": urlencode(params or {}),
            "SCRIPT_NAME": "",
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "localhost",
            "HTTP_AUTHORIZATION": f"Token {self.token}",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        status = []
        response = self.application(environ, lambda line, headers: status.append(line))
        try:
            body = b"".join(response)
        finally:
            response.close()  # request_finished, as a server closes it
        return int(status[0].split()[0]), body


def _answer(status: int, body: bytes, results: int):
    """A check of an answer of the API: 200 and `results` entries."""

    def check() -> None:
        assert status == 200 and len(json.loads(body)["results"]) == results, body[:300]

    return check


def measure(*, repeat: int, engine: str) -> list[Figure]:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from rest_framework.authtoken.models import Token

    from core.permissions import VIEWER, user_role_assign
    from core.startup import worker_ready
    from patients.models import Patient
    from vitals.models import PatientMetric

    # A viewer, as a central station signs in (core/permissions.py): a superuser's permission
    # checks would skip the role's permissions that every real request reads.
    user = get_user_model().objects.create_user("bench-api", password=None)
    user_role_assign(user=user, role=VIEWER)
    client = Wsgi(token=Token.objects.create(user=user).key)
    patients = list(Patient.objects.values_list("id", "uuid"))
    newest = PatientMetric.objects.order_by("-measured_at").values_list("measured_at", flat=True)[0]
    since = newest - timedelta(hours=1)
    rng = random.Random(3)
    picks = [rng.choice(patients) for _ in range(repeat)]
    prefix = f"/{settings.API_PREFIX}"
    reading_columns = ", ".join(f.column for f in PatientMetric._meta.concrete_fields)

    def api_metrics(i: int):
        status, body = client.get(
            f"{prefix}patients/{picks[i][1]}/metrics/", {"since": since.isoformat()}
        )
        return _answer(status, body, 100)

    def raw_metrics(i: int) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id, name FROM patients_patient WHERE uuid = %s",
                [picks[i][1].hex if connection.vendor == "sqlite" else picks[i][1]],
            )
            ((pid, _),) = cursor.fetchall()
            cursor.execute(
                f"SELECT {reading_columns} FROM vitals_patientmetric WHERE patient_id = %s "
                "AND measured_at >= %s ORDER BY measured_at DESC LIMIT 101",
                [pid, connection.ops.adapt_datetimefield_value(since)],
            )
            assert len(cursor.fetchall()) == 101

    joined_columns = ", ".join("m." + c for c in reading_columns.split(", "))

    def api_ward(i: int):
        return _answer(*client.get(f"{prefix}patients/", {"ordering": "-news2"}), 50)

    def raw_ward(i: int) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM patients_patient")
            cursor.execute(
                f"SELECT p.id, p.uuid, p.name, {joined_columns} FROM patients_patient p "
                "LEFT JOIN vitals_patientmetric m ON m.id = p.latest_metric_id "
                "ORDER BY m.news2_score DESC NULLS LAST, p.name LIMIT 50"
            )
            page = cursor.fetchall()
            ids = [row[0] for row in page]
            cursor.execute(
                "SELECT * FROM vitals_alarm WHERE state IN ('active', 'acknowledged') "
                f"AND patient_id IN ({', '.join(['%s'] * len(ids))}) ORDER BY raised_at DESC",
                ids,
            )
            cursor.fetchall()
            assert len(page) == 50

    # The central station's patient page polls the patient and its readings every 2 s: with
    # the access log (access/) recording each read, and without it (the views' hook a no-op),
    # and with every poll the first of its window (its row written: upper bound, a new
    # window's poll).
    import vitals.patient_apis
    from access.services import patient_access_forget, patient_access_record

    def poll(i: int):
        patient_uuid = picks[i][1]
        status, body = client.get(f"{prefix}patients/{patient_uuid}/")
        check = api_metrics(i)

        def both() -> None:
            assert status == 200, body[:300]
            check()

        return both

    def poll_off(i: int):
        vitals.patient_apis.patient_access_record = lambda **kwargs: None
        try:
            return poll(i)
        finally:
            vitals.patient_apis.patient_access_record = patient_access_record

    def poll_first(i: int):
        patient_access_forget()
        return poll(i)

    readings = PatientMetric.objects.count()
    figures = []
    worker_ready()  # as a web worker once it has loaded the application (gunicorn.conf.py)
    for i in range(repeat):  # every patient polled once: their rows of this window written
        poll(i)()
    on_ms, off_ms, first_ms = [], [], []
    for _ in range(4):
        on_ms += _timed(poll, repeat // 4)
        off_ms += _timed(poll_off, repeat // 4)
        first_ms += _timed(poll_first, repeat // 4)
    for name, values in (
        ("patient poll (detail + readings), access log on", on_ms),
        ("patient poll, first of its window (row written)", first_ms),
    ):
        figures.append(
            Figure(
                "api_scale",
                f"{name} p50",
                percentile(values, 50),
                "ms",
                reference="access log off p50",
                reference_value=percentile(off_ms, 50),
                engine=engine,
                details={"readings": readings, "requests": len(values)},
            )
        )
    for name, api, raw in (("patient's last hour (100 readings)", api_metrics, raw_metrics),
                           ("ward list, by NEWS2 (50 patients)", api_ward, raw_ward)):  # fmt: skip
        api(0)(), raw(0)  # warm caches and connections alike
        # Interleaved rounds: a noisy neighbour hits both alike.
        api_ms, raw_ms = [], []
        for _ in range(4):
            api_ms += _timed(api, repeat // 4)
            raw_ms += _timed(raw, repeat // 4)
        for q in (50, 99):
            figures.append(
                Figure(
                    "api_scale",
                    f"{name} p{q}",
                    percentile(api_ms, q),
                    "ms",
                    reference=f"raw SQL p{q}",
                    reference_value=percentile(raw_ms, q),
                    target="<= 3" if q == 99 else "",
                    engine=engine,
                    details={"readings": readings, "requests": len(api_ms)},
                )
            )
    return figures


def run(
    world: World, *, engines: list[str], readings: int, patients: int, repeat: int
) -> list[Figure]:
    figures = []
    for engine in engines:
        url = world.database(engine, f"api_scale_{engine}")
        env = world.env(url)
        progress(
            f"api_scale on {engine}: generating {readings:,} readings for {patients:,} patients"
        )
        run_child(
            "bench.api_scale",
            "generate",
            "--readings",
            str(readings),
            "--patients",
            str(patients),
            env=env,
        )
        figures += run_child(
            "bench.api_scale", "measure", "--repeat", str(repeat), "--engine", engine, env=env
        )
        world.drop(engine, f"api_scale_{engine}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description="API at scale (run by `python -m bench`).")
    parser.add_argument("what", choices=["generate", "measure"])
    parser.add_argument("--readings", type=int, default=10_000_000)
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--engine", default="sqlite")
    args = parser.parse_args()
    django_setup()
    if args.what == "generate":
        generate(readings=args.readings, patients=args.patients)
        emit([])
    else:
        emit(measure(repeat=args.repeat, engine=args.engine))


if __name__ == "__main__":
    main()
