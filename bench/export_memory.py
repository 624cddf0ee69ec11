"""Exports of a million readings through the real worker, and the worker's memory meanwhile.

    python -m bench.export_memory                      # 1,000,000 readings, CSV and FHIR
    python -m bench.export_memory --readings 100000    # a quicker look
    python -m bench.export_memory --formats csv

A throwaway SQLite database (a temporary directory, migrated here) gets one patient with
`--readings` readings, written in bulk (raw executemany, 5 s apart, varied values, one in 20 an
artefact). Then `manage.py db_worker` runs as a child process, as in production, and each
format is exported through `export_request` (the API's service) while this process samples the
worker's resident memory (VmRSS, /proc/<pid>/status) every 50 ms. Prints progress on stderr,
then the figures as one JSON object and one line each on stdout. Everything is deleted at the
end (a FHIR export of a million readings is about 5 GB).

The worker's memory must stay flat: the readings come from a database cursor a chunk at a time
and go to the file entry by entry. `peak - start` is the figure to watch.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import BASE_DIR, child_env, manage, progress, rss_mib, wait_for_log

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def settings_env(directory: Path) -> dict[str, str]:
    """The settings of this process and of the worker: the throwaway database and MEDIA_ROOT,
    production-like (DEBUG off: no query log growing in memory)."""
    return child_env(
        DATABASE_URL=f"sqlite:///{directory / 'bench.sqlite3'}",
        MEDIA_ROOT=str(directory / "media"),
        STATICFILES_BACKEND="django.contrib.staticfiles.storage.StaticFilesStorage",
    )


def readings_insert(patient_id: int, count: int) -> float:
    """`count` readings of one patient in one transaction, by raw executemany; seconds taken."""
    from django.db import connection, transaction

    adapt = connection.ops.adapt_datetimefield_value
    rng = random.Random(7)
    started = time.monotonic()

    def rows():
        for n in range(count):
            measured = T0 + timedelta(seconds=5 * n, milliseconds=rng.randrange(1000))
            artefact = "spo2_probe_off" if n % 20 == 19 else ""
            score = None if artefact else rng.randrange(0, 12)
            yield (
                patient_id,
                adapt(measured),
                rng.randrange(50, 140),
                rng.randrange(10, 30),
                rng.randrange(100, 160),
                rng.randrange(55, 95),
                0 if artefact else rng.randrange(85, 100),
                round(rng.uniform(35.5, 39.5), 1),
                n % 3 == 0,
                "A",
                artefact,
                score,
                None if score is None else ("low" if score < 5 else "medium"),
                1,
                adapt(measured + timedelta(milliseconds=300)),
                "[]" if score is not None else '["spo2"]',
            )

    sql = (
        "INSERT INTO vitals_patientmetric (patient_id, measured_at, pulse, resp_rate, systolic, "
        "diastolic, spo2, temperature, on_oxygen, consciousness, artefact, news2_score, "
        "news2_risk, spo2_scale, received_at, news2_missing) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        raw = cursor.cursor  # the sqlite3 cursor: no per-row wrapping
        batch: list[tuple] = []
        for done, row in enumerate(rows(), start=1):
            batch.append(row)
            if len(batch) == 50_000:
                raw.executemany(sql, batch)
                batch.clear()
                if done % 200_000 == 0:
                    progress(f"  {done:,} readings written")
        if batch:
            raw.executemany(sql, batch)
    return time.monotonic() - started


def worker_start(env: dict[str, str], log: Path) -> subprocess.Popen:
    process = manage("db_worker", "--no-reload", "--no-startup-delay", "--interval", "0.1",
                     log=log, env=env)  # fmt: skip
    wait_for_log(log, "Starting worker", process, timeout=60)
    return process


def export_measure(*, user, patient, format: str, worker: subprocess.Popen, media: Path) -> dict:
    """Ask for one export, sample the worker until it is done; the figures."""
    from exports.models import Export
    from exports.services import export_request

    rss_start = rss_mib(worker.pid)
    requested = time.monotonic()
    export = export_request(user=user, patient=patient, format=format)
    part = media / f"exports/{export.id}.{export.extension}.part"
    samples: list[tuple[int, float]] = []  # (bytes written so far, RSS)
    status, last_report = "pending", 0.0
    while status in ("pending", "running"):
        time.sleep(0.05)
        size = part.stat().st_size if part.exists() else 0
        samples.append((size, rss_mib(worker.pid)))
        status = Export.objects.values_list("status", flat=True).get(pk=export.pk)
        if time.monotonic() - last_report > 5:
            last_report = time.monotonic()
            progress(
                f"  {format}: {status}, {size / 1e6:,.0f} MB written, RSS {samples[-1][1]:.1f} MB"
            )
        if time.monotonic() - requested > 900:
            raise RuntimeError(f"{format} export not done after 15 minutes")
    wall = time.monotonic() - requested
    export.refresh_from_db()
    if export.status != "success":
        raise RuntimeError(f"{format} export failed: {export.error}")
    rss_end = rss_mib(worker.pid)
    size = Path(export.result.path).stat().st_size
    seconds = (export.finished_at - export.started_at).total_seconds()
    # RSS at each tenth of the file written: flat, or growing with the export?
    by_tenth = []
    for tenth in range(1, 11):
        reached = [rss for written, rss in samples if written >= size * tenth / 10]
        by_tenth.append(round(reached[0], 1) if reached else round(rss_end, 1))
    figures = {
        "rows": export.row_count,
        "seconds": round(seconds, 2),
        "seconds_request_to_success": round(wall, 2),
        "rows_per_second": round(export.row_count / seconds),
        "file_mb": round(size / 1e6, 1),
        "rss_mb_start": round(rss_start, 1),
        "rss_mb_peak": round(max([rss_start, rss_end, *(rss for _, rss in samples)]), 1),
        "rss_mb_end": round(rss_end, 1),
        "rss_mb_at_each_tenth_of_the_file": by_tenth,
        "samples": len(samples),
    }
    figures["rss_mb_growth"] = round(figures["rss_mb_peak"] - rss_start, 1)
    Path(export.result.path).unlink()  # gigabytes: gone before the next format
    return figures


def run(world, *, engines: list[str], readings: int) -> list:
    """For `python -m bench`: this module as a child process (it makes its own SQLite database
    and worker); the worker's memory at the end of each export against its start."""
    from bench.common import Figure

    result = subprocess.run(
        [sys.executable, "-m", "bench.export_memory", "--readings", str(readings)],
        cwd=BASE_DIR, env=child_env(), stdout=subprocess.PIPE, text=True, timeout=900,
        check=True,
    )  # fmt: skip
    results, _ = json.JSONDecoder().raw_decode(result.stdout)
    figures = []
    for format in ("csv", "fhir"):
        r = results[format]
        details = {k: v for k, v in r.items() if k != "rss_mb_at_each_tenth_of_the_file"}
        details["rss_mb_at_each_tenth"] = r["rss_mb_at_each_tenth_of_the_file"]
        figures += [
            Figure("export", f"{format} export of {readings:,}: worker RSS peak", r["rss_mb_peak"],
                   "MB", reference="RSS at its start", reference_value=r["rss_mb_start"],
                   target="<= 1.1", engine="sqlite", details=details),
            Figure("export", f"{format} export of {readings:,}: speed", r["rows_per_second"],
                   "readings/s", engine="sqlite", details=details),
        ]  # fmt: skip
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.export_memory",
        description=__doc__.split("\n\n")[0],
        epilog="examples:\n  python -m bench.export_memory\n"
        "  python -m bench.export_memory --readings 100000 --formats csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--readings", type=int, default=1_000_000, help="default 1,000,000")
    parser.add_argument(
        "--formats", default="csv,fhir", help="comma-separated: csv, fhir (default both)"
    )
    options = parser.parse_args(argv)
    formats = [f for f in options.formats.split(",") if f]

    directory = Path(tempfile.mkdtemp(prefix="icu-bench-export-"))
    env = settings_env(directory)
    os.environ.update(env)
    worker = None
    try:
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django.core.management import call_command

        from patients.models import Patient

        progress(f"database {env['DATABASE_URL']}: migrating")
        call_command("migrate", verbosity=0)
        user = get_user_model().objects.create_user("bench")
        patient = Patient.objects.create(name="bench")
        progress(f"writing {options.readings:,} readings")
        insert_seconds = readings_insert(patient.id, options.readings)
        progress(f"  done in {insert_seconds:.1f} s; starting the worker (manage.py db_worker)")
        worker = worker_start(env, directory / "worker.log")
        results: dict = {
            "readings": options.readings,
            "insert_seconds": round(insert_seconds, 1),
            "worker_pid": worker.pid,
        }
        for format in formats:
            progress(f"exporting as {format}")
            results[format] = export_measure(
                user=user, patient=patient, format=format, worker=worker, media=directory / "media"
            )
            progress(f"  {format}: {results[format]}")
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        shutil.rmtree(directory, ignore_errors=True)

    print(json.dumps(results, indent=2))
    for format in formats:
        r = results[format]
        print(
            f"{format}: {r['rows']:,} readings in {r['seconds']} s ({r['rows_per_second']:,}/s), "
            f"{r['file_mb']:,} MB; worker RSS {r['rss_mb_start']} MB at the start, peak "
            f"{r['rss_mb_peak']} MB (+{r['rss_mb_growth']} MB), {r['rss_mb_end']} MB at the end"
        )
        tenths = r["rss_mb_at_each_tenth_of_the_file"]
        print(f"{format}: worker RSS (MB) at each tenth of the file: {tenths}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
