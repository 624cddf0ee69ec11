"""Throwaway servers for the tests and the benchmarks (not used by the application).

`PostgresServer` runs a PostgreSQL cluster of its own in a temporary directory on a free loopback
port, as the caller's child; testing/fixtures.py and bench/ start one each.
"""

import ctypes
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg


class DevServerError(RuntimeError):
    """A throwaway server could not be created or started; the message says why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgresql_bindir() -> Path:
    """Where the PostgreSQL server's programs are: the newest of Debian's
    /usr/lib/postgresql/<version>/bin (not on PATH), else PATH."""
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda pg_ctl: int(re.sub(r"\D", "", pg_ctl.parent.parent.name) or 0),
    )
    if debian:
        return debian[-1].parent
    if on_path := shutil.which("pg_ctl"):
        return Path(on_path).parent
    raise DevServerError(
        "The PostgreSQL server (initdb, pg_ctl) is not installed; `make test` and `make bench` "
        "install it (apt-get install postgresql)."
    )


def _dies_with_parent(sig: int):
    """A `preexec_fn`: the kernel sends the child `sig` when its parent dies without tearing down
    (e.g. pytest-timeout's os._exit), so that it does not outlive it (Linux)."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork

    def preexec() -> None:
        prctl(1, sig)  # PR_SET_PDEATHSIG

    return preexec


@dataclass
class PostgresServer:
    """A PostgreSQL server of our own: a new cluster in a temporary directory,
    listening on a free 127.0.0.1 port and on a unix socket in that directory, trust
    authentication, no fsync. `postgres` runs in the foreground as the caller's child (no pg_ctl),
    so that it dies with its parent. PostgreSQL refuses to run as root: as root, initdb and the
    server run as the `postgres` system user (which Debian's package creates), owner of the
    directory."""

    bindir: Path
    root: Path
    port: int = 0
    process: subprocess.Popen | None = None

    SUPERUSER = "postgres"
    # Where a run that did not get to clean up (killed) is recognised, and by whom.
    TEMP_PREFIX = "icu-test-postgresql-"
    OWNER_FILE = "owner.pid"

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        return self.root / "postgresql.log"

    @staticmethod
    def run_as() -> dict:
        """Popen arguments that run a program as the `postgres` user when we are root."""
        if os.geteuid() != 0:
            return {}
        owner = pwd.getpwnam("postgres")
        return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}

    @classmethod
    def create(cls) -> "PostgresServer":
        cls.remove_abandoned()
        bindir = postgresql_bindir()
        root = Path(tempfile.mkdtemp(prefix=cls.TEMP_PREFIX))
        (root / cls.OWNER_FILE).write_text(str(os.getpid()))
        server = cls(bindir=bindir, root=root)
        if run_as := cls.run_as():
            os.chown(root, run_as["user"], run_as["group"])
        try:
            result = subprocess.run(
                [
                    str(bindir / "initdb"),
                    f"--pgdata={server.datadir}",
                    f"--username={cls.SUPERUSER}",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ],
                cwd=root,
                **cls.run_as(),
                env={**os.environ, "LC_ALL": "C.UTF-8"},
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if result.returncode != 0:
                raise DevServerError(f"initdb failed:\n{result.stdout}{result.stderr}")
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return server

    @classmethod
    def remove_abandoned(cls) -> None:
        """Remove the directories of earlier runs that died before their teardown (their
        servers died with them)."""
        for root in Path(tempfile.gettempdir()).glob(f"{cls.TEMP_PREFIX}*"):
            try:
                os.kill(int((root / cls.OWNER_FILE).read_text()), 0)
            except ProcessLookupError:
                shutil.rmtree(root, ignore_errors=True)
            except (OSError, ValueError):
                pass  # being created, or another user's

    def start(self, timeout: float = 60) -> None:
        """Start the server and wait until it accepts connections: on a free port the first
        time, on the same port after stop()."""
        attempts = 1 if self.port else 3  # another process may take the free port first
        for attempt in range(attempts):
            port = self.port or free_port()
            with self.logfile.open("ab") as log:
                process = subprocess.Popen(
                    [
                        str(self.bindir / "postgres"),
                        "-D",
                        str(self.datadir),
                        "-p",
                        str(port),
                        "-k",
                        str(self.root),
                        "-c",
                        "listen_addresses=127.0.0.1",
                        "-F",  # fsync off
                        "-c",
                        "synchronous_commit=off",
                        "-c",
                        "full_page_writes=off",
                    ],
                    cwd=self.root,
                    **self.run_as(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_dies_with_parent(signal.SIGQUIT),  # immediate shutdown
                )
            deadline = time.monotonic() + timeout
            while process.poll() is None and time.monotonic() < deadline:
                try:
                    psycopg.connect(
                        host="127.0.0.1", port=port, user=self.SUPERUSER, dbname="postgres"
                    ).close()
                except psycopg.OperationalError:
                    time.sleep(0.1)
                else:
                    self.port, self.process = port, process
                    return
            if process.poll() is None:
                process.kill()
                process.wait()
            if attempt == attempts - 1:
                log_text = self.logfile.read_text(errors="replace")[-3000:]
                raise DevServerError(f"PostgreSQL did not start on port {port}:\n{log_text}")

    def stop(self) -> None:
        """Stop the server, ending every session (fast shutdown)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):  # fast, immediate, kill
            process.send_signal(sig)
            try:
                process.wait(timeout=30)
                return
            except subprocess.TimeoutExpired:
                continue

    def remove(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
