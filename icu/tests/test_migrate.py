"""`manage.py migrate` started several times at once on a fresh database (`make run` twice,
several containers): the starts wait for each other, none fails, the schema is whole."""

import re
import subprocess
import sys
import time

import pytest
from django.db import connection
from django.db.migrations.loader import MigrationLoader

from conftest import BASE_DIR, report_figure, subprocess_env

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
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=BASE_DIR,
        env=subprocess_env(DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(result.stdout.split()[-1])  # after the shell's own "N objects imported" line


@pytest.mark.django_db
def test_concurrent_migrates_on_a_fresh_database_wait_for_each_other_and_all_succeed(
    empty_database_url,
):
    started = time.monotonic()
    processes = [
        subprocess.Popen(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=BASE_DIR,
            env=subprocess_env(DATABASE_URL=empty_database_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(STARTS)
    ]
    outputs = [process.communicate(timeout=240)[0] for process in processes]
    elapsed = time.monotonic() - started

    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output
        assert "already exists" not in output, output
    assert applied_count(empty_database_url) == migrations_count()
    # One applied the migrations; the others waited for it, then found nothing to do.
    applied = [output for output in outputs if re.search(r"Applying \w+\.0001_initial", output)]
    assert len(applied) == 1, outputs
    assert sum("No migrations to apply." in output for output in outputs) == STARTS - 1, outputs
    # Started together, at least one found the lock taken and said how long it waited.
    waits = [
        float(match[1])
        for output in outputs
        if (
            match := re.search(
                r"^Another migrate holds the (?:file|advisory) lock on the database; waiting for "
                r"it\.\n(?:.*\n)*?Waited ([0-9.]+) s for the other migrate\.$",
                output,
                re.MULTILINE,
            )
        )
    ]
    assert waits, outputs
    report_figure(
        f"concurrent migrate ({connection.vendor})",
        f"{STARTS} at once in {elapsed:.1f} s, the others waited {waits} s",
    )
