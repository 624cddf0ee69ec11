"""What every benchmark needs: the real broker, throwaway databases, child processes, and
measurements of them (/proc, percentiles), plus the result rows the table is made of.

Each benchmark runs the project's real commands as child processes (`manage.py
consume_vitals`, `run_patient`, gunicorn) against the embedded broker and a database of its
own, and measures its reference in the same run: the machines are shared and noisy, so a figure
means something only as a ratio against a reference taken minutes apart on the same machine.
"""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg

from testing.devservers import PostgresServer, free_port

BASE_DIR = Path(__file__).resolve().parent.parent
ENGINES = ("sqlite", "postgresql")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass
class Figure:
    """One line of the results table: a measured value, and its reference in the same run."""

    benchmark: str
    figure: str
    value: float
    unit: str
    reference: str = ""
    reference_value: float | None = None
    # The ratio is value / reference_value; `target` says which way is good: ">= 0.75" or
    # "<= 3". A figure with an absolute target (a latency budget) has no reference.
    target: str = ""
    engine: str = ""
    details: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.reference_value in (None, 0):
            return None
        return self.value / self.reference_value

    @property
    def met(self) -> bool | None:
        """Whether the target is met: on the ratio when there is a reference, else on the
        value itself."""
        if not self.target:
            return None
        op, bound = self.target.split()
        measured = self.ratio if self.reference_value is not None else self.value
        if measured is None:
            return None
        return measured >= float(bound) if op == ">=" else measured <= float(bound)

    def to_json(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "met": self.met}


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries the results of a child benchmark)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by the nearest-rank method: a value that was measured."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100)
    return ordered[int(rank) - 1]


# --- /proc -----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def rss_mib(pid: int) -> float:
    """A process's resident memory now."""
    resident_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return resident_pages * PAGE_KIB / 1024


# --- child processes -------------------------------------------------------------------------


def child_env(**overrides: str) -> dict[str, str]:
    """Production-like settings for the project's commands: DEBUG off (Django keeps no query
    log), JSON logs at INFO, no developer .env."""
    env = {
        **os.environ,
        "ICU_ENV_FILE": os.devnull,
        "DJANGO_SETTINGS_MODULE": "icu.settings",
        "DEBUG": "false",
        "SECRET_KEY": "benchmark-secret-key-not-for-production",
        "SECURE_SSL_REDIRECT": "false",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(BASE_DIR),
        # The benchmarks are one client asking fast, which production rightly throttles.
        "THROTTLE_USER": "10000000/min",
        "THROTTLE_ANON": "10000000/min",
    }
    env.pop("DATABASE_URL", None)
    env.update(overrides)
    return env


def topic_env(topic: str) -> dict[str, str]:
    """This process's environment with the commands pointed at `topic` and topics and a group
    of its own, so that measurements never read each other's messages."""
    return {
        **os.environ,
        "KAFKA_TOPIC": topic,
        "KAFKA_DLQ_TOPIC": f"{topic}.dlq",
        "KAFKA_ALARMS_TOPIC": f"{topic}.alarms",
        "KAFKA_GROUP_ID": f"{topic}-group",
    }


def manage(*args: str, log: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start `python manage.py <args>`, its output going to `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen, timeout: float = 30) -> int:
    """SIGTERM, then SIGKILL if it does not go; its exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def wait_for_log(log: Path, text: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise RuntimeError(f"{text!r} never appeared in {log}:\n{tail}")


def json_log_lines(log: Path) -> list[dict]:
    lines = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


def run_child(module: str, *args: str, env: dict[str, str], timeout: float = 900) -> list[Figure]:
    """Run `python -m <module> <args>` (one measurement, in a process of its own so that each
    has a clean interpreter and its own database settings) and read the figures it prints as
    JSON on its last stdout line; its progress goes straight to our stderr."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed with status {result.returncode}")
    return [Figure(**row) for row in json.loads(result.stdout.strip().splitlines()[-1])]


def emit(figures: list[Figure]) -> None:
    """What a child measurement prints last: its figures, one JSON line."""
    print(json.dumps([asdict(f) for f in figures]))


# --- the world a benchmark runs in -----------------------------------------------------------


@dataclass
class World:
    """The broker, the PostgreSQL server (when asked for) and a work directory."""

    workdir: Path
    bootstrap: str
    postgres: PostgresServer | None
    _templates: dict[str, str] = field(default_factory=dict)

    def env(self, database_url: str, **overrides: str) -> dict[str, str]:
        return child_env(
            DATABASE_URL=database_url, KAFKA_BOOTSTRAP_SERVERS=self.bootstrap, **overrides
        )

    def database(self, engine: str, name: str) -> str:
        """DATABASE_URL of a new database named `name`, migrated: a copy of a template that
        is migrated once per engine (a file copy for SQLite, CREATE DATABASE ... TEMPLATE on
        PostgreSQL), so that each measurement starts from the same empty schema."""
        template = self._templates.get(engine) or self._template(engine)
        if engine == "sqlite":
            path = self.workdir / f"{name}.sqlite3"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            shutil.copyfile(template, path)
            return f"sqlite:///{path}"
        with self._admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.postgres_url(name)

    def drop(self, engine: str, name: str) -> None:
        """Remove a database made by `database()` (the big ones take gigabytes)."""
        if engine == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.workdir / name}.sqlite3{suffix}").unlink(missing_ok=True)
            return
        with self._admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def postgres_url(self, name: str) -> str:
        assert self.postgres is not None, "this run has no PostgreSQL server"
        return f"postgres://{PostgresServer.SUPERUSER}@127.0.0.1:{self.postgres.port}/{name}"

    def _admin(self) -> psycopg.Connection:
        return psycopg.connect(self.postgres_url("postgres"), autocommit=True)

    def _template(self, engine: str) -> str:
        progress(f"migrating a template {engine} database")
        if engine == "sqlite":
            path = self.workdir / "template.sqlite3"
            url = f"sqlite:///{path}"
        else:
            with self._admin() as admin:
                admin.execute('CREATE DATABASE "icu_template"')
            url, path = self.postgres_url("icu_template"), "icu_template"
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=BASE_DIR,
            env=child_env(DATABASE_URL=url),
            check=True,
        )
        if engine == "sqlite":
            # A copy must not need the WAL of the original.
            with sqlite3.connect(path) as db:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._templates[engine] = str(path)
        return str(path)


@contextmanager
def world(workdir: Path, *, postgresql: bool) -> Iterator[World]:
    """Start the broker (our own `run_broker`) and, when asked, a throwaway PostgreSQL
    server; stop both at the end whatever happens."""
    workdir.mkdir(parents=True, exist_ok=True)
    bootstrap = f"127.0.0.1:{free_port()}"
    log = workdir / "broker.log"
    progress(f"starting the broker on {bootstrap}")
    broker = manage(
        "run_broker", log=log, env=child_env(KAFKA_BOOTSTRAP_SERVERS=bootstrap, LOG_LEVEL="INFO")
    )
    postgres = None
    try:
        wait_for_log(log, "broker ready", broker, timeout=30)
        if postgresql:
            progress("starting a throwaway PostgreSQL server")
            postgres = PostgresServer.create()
            postgres.start()
        yield World(workdir=workdir, bootstrap=bootstrap, postgres=postgres)
    finally:
        if postgres is not None:
            postgres.remove()
        stop(broker)


def topic_create(bootstrap: str, name: str, partitions: int = 6) -> None:
    """A new topic on the benchmark's broker (from a process without Django settings)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(timeout=30)


def django_setup() -> None:
    """Set Django up in a child measurement (settings from the environment child_env made)."""
    import django

    sys.path.insert(0, str(BASE_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "icu.settings")
    django.setup()
