"""Django's `migrate`, safe to start several times at once on one database.

`make run` twice, or several containers starting together, each ran `migrate` on the same fresh
database and raced to create the same tables: all but one failed ("table ... already exists").
This command takes a lock on the database for its whole run; a second one waits (saying so),
then finds nothing left to apply. It overrides Django's command because the project's apps come
first in Django's search for a command: `manage.py migrate` is always this one, whoever calls it
(`make run`, docker-compose's `migrate` service, the test database's creation).
"""

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.core.management.commands.migrate import Command as DjangoMigrateCommand
from django.db import DEFAULT_DB_ALIAS, connections

# pg_advisory_lock's key: any fixed 64-bit number, the same for every migrate of the project.
ADVISORY_LOCK_KEY = 0x1C0_317_6A7E  # "ICU migrate"


class Command(DjangoMigrateCommand):
    help = DjangoMigrateCommand.help + " Concurrent runs on one database wait for each other."

    def handle(self, *args, **options):
        with migrate_lock(alias=options["database"] or DEFAULT_DB_ALIAS, report=self.stdout.write):
            return super().handle(*args, **options)


@contextmanager
def migrate_lock(*, alias: str, report) -> Iterator[None]:
    """Hold the database's migrate lock: an exclusive lock on a file beside a SQLite database
    (`<file>.migrate-lock`; in-memory databases need none), a session advisory lock on its own
    connection for PostgreSQL. `report` gets a line when the lock is busy and how long it
    waited."""
    connection = connections[alias]
    if connection.vendor == "sqlite":
        if connection.is_in_memory_db():
            yield
            return
        path = Path(connection.settings_dict["NAME"])
        with (
            path.with_name(f"{path.name}.migrate-lock").open("a") as file,
            _lock_waiting(
                try_lock=lambda: _flock(file=file, block=False),
                lock=lambda: _flock(file=file, block=True),
                kind="file",
                report=report,
            ),
        ):
            yield
        return
    if connection.vendor == "postgresql":
        # A connection of its own: the lock lives as long as it, whatever `migrate` does with
        # the default one, and goes with it if this process dies.
        lock_connection = connections.create_connection(alias)
        try:
            with lock_connection.cursor() as cursor:

                def try_lock() -> bool:
                    cursor.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_LOCK_KEY])
                    return cursor.fetchone()[0]

                def lock() -> bool:
                    cursor.execute("SELECT pg_advisory_lock(%s)", [ADVISORY_LOCK_KEY])
                    return True

                with _lock_waiting(try_lock=try_lock, lock=lock, kind="advisory", report=report):
                    try:
                        yield
                    finally:
                        cursor.execute("SELECT pg_advisory_unlock(%s)", [ADVISORY_LOCK_KEY])
        finally:
            lock_connection.close()
        return
    yield  # other engines: not supported by the project; Django's behaviour


def _flock(*, file, block: bool) -> bool:
    try:
        fcntl.flock(file, fcntl.LOCK_EX if block else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextmanager
def _lock_waiting(*, try_lock, lock, kind: str, report) -> Iterator[None]:
    if not try_lock():
        report(f"Another migrate holds the {kind} lock on the database; waiting for it.")
        started = time.monotonic()
        lock()
        report(f"Waited {time.monotonic() - started:.1f} s for the other migrate.")
    yield
