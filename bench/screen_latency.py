"""Reading to screen: how long from a reading's production until the central station shows it,
with 64 beds at 1 Hz through the real emulator, broker, consumer and web server, the ward open
in headless Chromium.

The emulator stamps each reading with the time it produces it (measured_at, ms since the
epoch); a MutationObserver in the page notes, for each tile, the moment (performance.timeOrigin
+ performance.now(), the same machine's clock) its `data-measured-at` changes, which the ward
sets in the same synchronous render that writes the tile's values. The delay is the one
between the two. With polling, readings that arrive faster than the page polls are never shown
(a newer one replaces them): the figures count the readings shown and how many were produced.

Each mode runs in its own child process on a new database, with the servers docker-compose.yml
runs: `poll`, the page polling the API every WARD_POLL_SECONDS (2 s, the default) from gunicorn's
sync workers, as before issue 20's push; `push`, the page told of each change by its stream
(ward/events.py) from the push process (gunicorn's asgi worker, WARD_EVENTS_PORT) beside them,
polling the same API only as the fallback. Both report what the page cost the servers: its
API requests a second and their CPU.
"""

import argparse
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from bench.common import (
    BASE_DIR,
    Figure,
    World,
    cpu_seconds,
    django_setup,
    emit,
    manage,
    percentile,
    progress,
    run_child,
    stop,
    topic_create,
    topic_env,
    wait_for_log,
)

UNIT = "bench"
USER = ("bench", "bench-screen-password-1")
MODES = ("poll", "push")

# Runs in the page before its own scripts: each tile's reading change, timed.
OBSERVER = """
window.__shown = [];
performance.setResourceTimingBufferSize(100000);
new MutationObserver((records) => {
  const at = performance.timeOrigin + performance.now();
  for (const r of records) {
    const now = r.target.dataset.measuredAt;
    if (now && now !== r.oldValue) window.__shown.push([r.target.dataset.uuid, now, at]);
  }
}).observe(document, {subtree: true, attributes: true, attributeOldValue: true,
                      attributeFilter: ["data-measured-at"]});
"""


def gunicorn(*arguments: str, port: int, log: Path, env: dict) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", *arguments],
            cwd=BASE_DIR,
            env={**env, "GUNICORN_BIND": f"127.0.0.1:{port}"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def worker_pids(pid: int) -> list[int]:
    """gunicorn's workers: the master's children."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in children.read_text().split()] if children.exists() else []


def browser_start():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from ward.tests.conftest import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument("--window-size=1920,1080")
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


def measure(
    *, mode: str, beds: int, warm_up: float, window: float, topic: str, workdir: Path, port: int
) -> list[Figure]:
    import os

    from django.contrib.auth import get_user_model
    from selenium.webdriver.common.by import By

    from units.models import Bed, Unit

    unit = Unit.objects.create(code=UNIT, name="Bench unit")
    Bed.objects.bulk_create(Bed(unit=unit, position=i, label=str(i)) for i in range(1, beds + 1))
    get_user_model().objects.create_superuser(USER[0], password=USER[1])
    env = {**topic_env(topic), "AUTO_ADMIT": "true", "DEFAULT_UNIT": UNIT}
    web_env = {
        **os.environ,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false",
        "STATIC_ROOT": str(workdir / "static"),
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / f"prometheus-{mode}"),
    }
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        cwd=BASE_DIR, env=web_env, check=True,
    )  # fmt: skip
    names = ("consumer", "web", "push", "emu")
    logs = {name: workdir / f"screen-{mode}-{name}.log" for name in names}
    consumer = manage("consume_vitals", log=logs["consumer"], env=env)
    # As docker-compose.yml runs them: the API on gunicorn's sync workers, and for `push` the
    # stream from gunicorn's asgi worker beside it, on the port the pages are told of.
    push = None
    if mode == "push":
        push_env = {
            **web_env,
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / "prometheus-push"),
            # The pages' origin (the web server's), which the stream lets in exactly.
            "CSRF_TRUSTED_ORIGINS": f"http://127.0.0.1:{port}",
        }
        push = gunicorn(
            "--worker-class", "asgi", "--workers", "1", "icu.asgi",
            port=port + 1, log=logs["push"], env=push_env,
        )  # fmt: skip
        web_env["WARD_EVENTS_PORT"] = str(port + 1)
    web = gunicorn("icu.wsgi", port=port, log=logs["web"], env=web_env)
    emulator = None
    browser = None
    try:
        wait_for_log(logs["consumer"], "partitions assigned", consumer, 60)
        emulator = manage(
            "run_patient", "--patients", str(beds), "--interval", "1", "--scenario", "random",
            "--seed", "3", log=logs["emu"], env=env,
        )  # fmt: skip
        wait_for_log(logs["web"], "Booting worker", web, 60)
        if push is not None:
            wait_for_log(logs["push"], "Booting worker", push, 60)
        browser = browser_start()
        browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": OBSERVER})
        base = f"http://127.0.0.1:{port}"
        browser.get(f"{base}/login/?next=/")
        browser.find_element(By.ID, "id_username").send_keys(USER[0])
        browser.find_element(By.ID, "id_password").send_keys(USER[1])
        browser.find_element(By.CSS_SELECTOR, ".login-card button[type=submit]").click()
        time.sleep(0.5)
        browser.get(f"{base}/?unit={UNIT}")
        progress(f"screen_latency ({mode}): warming up {warm_up:g} s, then {window:g} s")
        time.sleep(warm_up)
        browser.execute_script("window.__shown.length = 0; window.__t0 = performance.now()")
        started = time.time()
        servers = [server for server in (web, push) if server is not None]
        workers = [pid for s in servers for pid in (s.pid, *worker_pids(s.pid))]
        cpu_before = sum(cpu_seconds(pid) for pid in workers)
        time.sleep(window)
        shown = browser.execute_script("return window.__shown")
        web_cores = (sum(cpu_seconds(pid) for pid in workers) - cpu_before) / window
        requests = browser.execute_script(
            "return performance.getEntriesByType('resource')"
            ".filter((e) => e.name.includes('/api/') && e.startTime >= window.__t0).length"
        )
        connection = browser.execute_script("return document.body.dataset.connection")
    finally:
        if browser is not None:
            browser.quit()
        for process in (emulator, push, web, consumer):
            if process is not None:
                stop(process)
    delays = [at - datetime.fromisoformat(measured).timestamp() * 1000 for _, measured, at in shown]
    if not delays:
        raise RuntimeError(f"no reading reached the screen ({mode}; the page was {connection})")
    produced = beds * window
    details = {
        "mode": mode,
        "beds": beds,
        "window_s": window,
        "readings_produced": produced,
        "readings_shown": len(delays),
        "connection": connection,
        "started": started,
        # What the page cost the server during the window: its API requests a second and the
        # web server's CPU.
        "api_requests_per_s": round(requests / window, 2),
        "web_cpu_cores": round(web_cores, 3),
    }
    label = {"poll": "polling every 2 s", "push": "pushed"}[mode]
    return [
        Figure("screen_latency", f"reading to screen p50, {label}", percentile(delays, 50), "ms",
               details=details),
        Figure("screen_latency", f"reading to screen p99, {label}", percentile(delays, 99), "ms",
               target="<= 1000" if mode == "push" else "", details=details),
        Figure("screen_latency", f"readings shown of produced, {label}", len(delays) / produced,
               "of produced", details=details),
        Figure("screen_latency", f"web server CPU, one ward page, {label}", web_cores, "cores",
               details=details),
    ]  # fmt: skip


def run(
    world: World, *, engines: list[str], beds: int, warm_up: float, window: float,
    modes: tuple[str, ...] = MODES,
) -> list[Figure]:  # fmt: skip
    from testing.devservers import free_port

    figures = []
    for engine in engines:
        for mode in modes:
            topic = f"bench-screen-{engine}-{mode}"
            topic_create(world.bootstrap, topic)
            url = world.database(engine, f"screen_{engine}_{mode}")
            progress(f"screen_latency on {engine}, {mode}: {beds} beds at 1 Hz")
            for figure in run_child(
                "bench.screen_latency", "--mode", mode, "--beds", str(beds),
                "--warm-up", str(warm_up), "--window", str(window), "--topic", topic,
                "--workdir", str(world.workdir), "--port", str(port_pair(free_port)),
                env=world.env(url),
            ):  # fmt: skip
                figure.engine = engine
                figures.append(figure)
    return figures


def port_pair(free_port) -> int:
    """A free port whose next one is free too (the web server's and the push process's)."""
    import socket

    while True:
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


def main() -> None:
    parser = argparse.ArgumentParser(
        description="One reading-to-screen measurement (run by `python -m bench`)."
    )
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--beds", type=int, default=64)
    parser.add_argument("--warm-up", type=float, default=10)
    parser.add_argument("--window", type=float, default=30)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    django_setup()
    figures = measure(mode=args.mode, beds=args.beds, warm_up=args.warm_up, window=args.window,
                      topic=args.topic, workdir=args.workdir, port=args.port)  # fmt: skip
    emit(figures)


if __name__ == "__main__":
    main()
