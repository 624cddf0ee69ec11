"""`manage.py migrate` started several times at once on a fresh database (`make run` twice,
several containers): the starts wait for each other, none fails, the schema is whole."""

import re
import subprocess
import sys
import time

import pytest
from django.db import connection
from django.db.migrations.loader import MigrationLoader

from testing.processes import BASE_DIR, report_figure, start_manage, subprocess_env, wait_for_log

STARTS = 3


def migrations_count() -> int:
    """How many migrations the project has (every installed app's), as `migrate` applies."""
    return len(MigrationLoader(None, ignore_no_migrations=True).disk_migrations)


def applied_count(url: str) -> int:
    """Rows of django_migrations in the database at `url`, read by a child process (the test's
    own connection is to the test database)."""
    code = (
        "from django.db import connection\n"
        "with connection.cursor() as c:\n"
        "    c.execute('SELECT COUNT(*) FROM django_migrations')\n"
        "    print(c.fetchone()[0])\n"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
        cwd=BASE_DIR,
        env=subprocess_env(DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(result.stdout)


HOLD_LOCK = (
    "import sys\n"
    "from core.management.commands.migrate import migrate_lock\n"
    "with migrate_lock(alias='default', report=print):\n"
    "    print('lock held', flush=True)\n"
    "    sys.stdin.read()\n"
)
WAITING = re.compile(
    r"^Another migrate holds the (?:file|advisory) lock on the database; waiting for it\.$"
    r"(?:\n.*)*?\nWaited ([0-9.]+) s for the other migrate\.$",
    re.MULTILINE,
)


@pytest.mark.django_db
def test_concurrent_migrates_on_a_fresh_database_wait_for_each_other_and_all_succeed(
    empty_database_url, tmp_path
):
    """Three starts at once: held at the lock (by a process that takes it as a migrate would)
    until all three wait there, so that they then race for it at the same moment."""
    holder = subprocess.Popen(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", HOLD_LOCK],
        cwd=BASE_DIR,
        env=subprocess_env(DATABASE_URL=empty_database_url),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert "lock held" in holder.stdout.readline()
        logs = [tmp_path / f"migrate-{i}.log" for i in range(STARTS)]
        processes = [
            start_manage("migrate", "--noinput", log=log, DATABASE_URL=empty_database_url)
            for log in logs
        ]
        for log, process in zip(logs, processes, strict=True):
            wait_for_log(log, "waiting for it.", process, timeout=60)
        released = time.monotonic()
    finally:
        holder.communicate("", timeout=30)  # end of input: the holder lets go of the lock
    for process in processes:
        process.wait(timeout=240)
    elapsed = time.monotonic() - released
    outputs = [log.read_text() for log in logs]

    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output
        assert "already exists" not in output, output
    assert applied_count(empty_database_url) == migrations_count()
    # One applied the migrations; the others waited for it, then found nothing to do.
    applied = [output for output in outputs if re.search(r"Applying \w+\.0001_initial", output)]
    assert len(applied) == 1, outputs
    assert sum("No migrations to apply." in output for output in outputs) == STARTS - 1, outputs
    waits = sorted(float(WAITING.search(output)[1]) for output in outputs)
    report_figure(
        f"concurrent migrate ({connection.vendor})",
        f"{STARTS} released at once, all done {elapsed:.1f} s later; "
        f"waits at the lock, holder's time included: {waits} s",
    )
