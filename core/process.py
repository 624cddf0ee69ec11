"""What every long-running command shares: stopping cleanly on SIGINT and SIGTERM."""

import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """Yield an Event set by the first SIGINT or SIGTERM; the previous handlers come back after.

    Workers check the event between steps, so that the step in progress (a batch, a flush)
    finishes before they exit. Outside the main thread (as under some test runners) signals
    cannot be handled and the event is only set by the caller.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def die_with_parent() -> None:
    """`preexec_fn` for child processes: SIGTERM the child if this process dies, even by
    SIGKILL, so that no orphan broker keeps holding its port (Linux; a no-op elsewhere)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def process_stop(
    process: subprocess.Popen, timeout: float = 15.0, *, signum: int = signal.SIGTERM
) -> None:
    """SIGTERM a child (or `signum`) and wait for it to finish what it is doing; SIGKILL it
    after `timeout`."""
    if process.poll() is not None:
        return
    process.send_signal(signum)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
