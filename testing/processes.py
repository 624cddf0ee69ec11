"""Child processes of the tests: `manage.py` commands started with the test settings, their
logs waited on and read; and the figures tests measure for the README."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.process import die_with_parent

BASE_DIR = Path(__file__).resolve().parent.parent

# Figures that tests measure for the README (scenario evidence); printed after the run.
FIGURES: list[tuple[str, str]] = []


def report_figure(name: str, value: str) -> None:
    FIGURES.append((name, value))


def subprocess_env(**overrides: str) -> dict[str, str]:
    """Environment for running `manage.py` commands as child processes of the tests."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "icu.settings_test",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        **overrides,
    }


def start_manage(
    *args: str, log: Path, prefix: tuple[str, ...] = (), **env: str
) -> subprocess.Popen:
    """Start `python manage.py <args>` as a child process, its output going to `log`; it is
    sent SIGTERM if pytest dies without stopping it (e.g. pytest-timeout's os._exit).
    `prefix`: a command that runs it (e.g. setpriv, to drop capabilities)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [*prefix, sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=subprocess_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )


def wait_for_log(path: Path, text: str, process: subprocess.Popen, timeout: float) -> str:
    """Wait until `text` appears in a child's log file; fail with the log if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text(errors="replace") if path.exists() else ""
        if text in content:
            return content
        if process.poll() is not None:
            break
        time.sleep(0.1)
    content = path.read_text(errors="replace") if path.exists() else ""
    pytest.fail(f"{text!r} not in the log within {timeout}s (exit {process.poll()}):\n{content}")


def json_lines(text: str) -> list[dict]:
    """The JSON log lines in a child's output (other lines, e.g. the broker's own, skipped)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]
