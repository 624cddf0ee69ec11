"""The production web server for real: `check --deploy`, `collectstatic` with the hashed storage,
gunicorn (gunicorn.conf.py, as the Docker image runs it) with production settings, WhiteNoise
serving the static files, HTTPS redirects and headers, and the health checks behind them."""

import http.client
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from django.test import override_settings

from core.process import process_stop
from testing.database import database_url
from testing.devservers import free_port
from testing.processes import BASE_DIR, report_figure

PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "icu.settings",
    "ICU_ENV_FILE": os.devnull,
    "DEBUG": "false",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "127.0.0.1,icu.example.org",
    "LOG_FORMAT": "json",
}


def production_env(**extra: str) -> dict[str, str]:
    """Only what a deployment sets: nothing of the test run's own environment leaks in."""
    return {"PATH": os.environ.get("PATH", ""), **PRODUCTION_ENV, **extra}


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=production_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_deploy_is_clean_with_production_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "System check identified no issues (1 silenced)."


def test_check_deploy_does_complain_about_debug():
    """The check is real: the same command flags a debug deployment."""
    result = manage("check", "--deploy", "--fail-level", "WARNING", DEBUG="true")

    assert result.returncode == 1
    assert "security.W018" in result.stderr  # DEBUG on in deployment


def test_gunicorn_stops_at_a_bad_setting_with_one_line_and_exit_status_2():
    """In the master, before any worker boots (core/startup.py): not a traceback per worker."""
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "icu.wsgi"],
        cwd=BASE_DIR,
        env=production_env(LOG_LEVEL="LOUD", GUNICORN_BIND=f"127.0.0.1:{free_port()}"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert (result.returncode, result.stdout, result.stderr) == (
        2,
        "",
        "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL (got 'LOUD').\n",
    )


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def get(url: str, data: bytes | None = None, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """GET `url`, or POST `data` to it."""
    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 (our URLs)
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@contextmanager
def gunicorn_serving(
    tmp_path: Path, kafka_broker: str, *arguments: str
) -> Iterator[tuple[str, Path, Path]]:
    """gunicorn (gunicorn.conf.py and `arguments`: options, then the application) with the
    production settings and collected static files, until /healthz answers; its URL, the static
    root and its log file."""
    static_root = tmp_path / "static"
    collected = manage("collectstatic", "--noinput", STATIC_ROOT=str(static_root))
    assert collected.returncode == 0, collected.stderr
    port = free_port()
    log = tmp_path / "gunicorn.log"
    env = production_env(
        STATIC_ROOT=str(static_root),
        DATABASE_URL=database_url(),
        KAFKA_BOOTSTRAP_SERVERS=kafka_broker,
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS="2",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
        TRUST_X_FORWARDED_PROTO="true",
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", *arguments],
            cwd=BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if get(f"{url}/healthz")[0] == 200:
                break
        except OSError:
            pass
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    try:
        yield url, static_root, log
    finally:
        process_stop(process)


@pytest.fixture
def gunicorn(
    tmp_path: Path, kafka_broker: str, transactional_db
) -> Iterator[tuple[str, Path, Path]]:
    """gunicorn as the Docker image's `web` runs it; yields its URL, the static root and its
    log file."""
    with gunicorn_serving(tmp_path, kafka_broker, "icu.wsgi") as (url, static_root, log):
        yield url, static_root, log
    # gunicorn's own lines come out in the project's JSON format.
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(line["message"].startswith("Booting worker") for line in lines)


@pytest.mark.e2e
def test_gunicorn_serves_health_static_files_and_redirects_to_https(
    gunicorn: tuple[str, Path, Path],
):
    url, static_root, log = gunicorn
    status, _, body = get(f"{url}/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    status, _, body = get(f"{url}/readyz")
    assert status == 200
    assert json.loads(body)["status"] == "ready"

    # Hashed, compressed static files, cached for ever, straight from the app (WhiteNoise).
    manifest = json.loads((static_root / "staticfiles.json").read_text())
    hashed = manifest["paths"]["admin/css/base.css"]
    assert hashed != "admin/css/base.css"
    status, headers, body = get(
        f"{url}/static/{hashed}", **{"Accept-Encoding": "gzip", "X-Forwarded-Proto": "https"}
    )
    assert status == 200
    assert headers["Cache-Control"] == "max-age=315360000, public, immutable"
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"].startswith("text/css")

    # The central station's pages load their modules by hashed names (an import map), uPlot's
    # among them, each served from the app for ever.
    status, _, body = get(f"{url}/login/", **{"X-Forwarded-Proto": "https"})
    assert status == 200
    referenced = set(re.findall(r'"/static/([^"]+)"', body.decode()))
    station = {
        manifest["paths"][name]
        for name in (
            "ward/css/ward.css",
            "ward/js/api.js",
            "ward/js/common.js",
            "ward/vendor/uplot/uPlot.esm.js",
        )
    }
    assert station <= referenced
    for name in station:
        status, headers, _ = get(f"{url}/static/{name}", **{"X-Forwarded-Proto": "https"})
        assert (status, headers["Cache-Control"]) == (200, "max-age=315360000, public, immutable")

    # Plain HTTP: every other page redirects to HTTPS.
    status, headers, _ = get(f"{url}/api/patients/")
    assert status == 301
    assert headers["Location"] == "https://127.0.0.1:" + url.rsplit(":", 1)[1] + ("/api/patients/")
    # Behind the TLS proxy (X-Forwarded-Proto: https): the API answers, with HSTS.
    status, headers, body = get(f"{url}/api/patients/", **{"X-Forwarded-Proto": "https"})
    assert status == 401
    assert json.loads(body)["error"]["code"] == "not_authenticated"
    assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "same-origin"
    # Secure cookies: the login page's CSRF cookie is marked Secure.
    status, headers, _ = get(f"{url}/admin/login/", **{"X-Forwarded-Proto": "https"})
    assert status == 200
    assert "Secure" in headers["Set-Cookie"]
    # A failed login is logged (core.auth) with the peer's address: gunicorn.conf.py trusts no
    # proxy's X-Forwarded-For (TRUSTED_PROXIES=0). Never with the password.
    status, _, _ = get(
        f"{url}/api/auth/token/",
        json.dumps({"username": "chief", "password": "wrong-pass-123"}).encode(),
        **{
            "Content-Type": "application/json",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-For": "203.0.113.9",
        },
    )
    assert status == 400
    logged = log.read_text()
    logins = [
        (line["level"], line["door"], line["username"], line["client_address"], line["outcome"])
        for line in map(json.loads, filter(lambda text: text.startswith("{"), logged.splitlines()))
        if line["logger"] == "core.auth"
    ]
    assert logins == [("WARNING", "api:token", "chief", "127.0.0.1", "failure")]
    assert "wrong-pass-123" not in logged
    # An unknown host is refused.
    status, _, _ = get(f"{url}/healthz", Host="evil.example.com")
    assert status == 400


def raw_request(url: str, head: str, *, body: int = 0, chunked: bool = False) -> tuple[int, bytes]:
    """Send `head` (request line and headers) and, from another thread, `body` bytes (in
    chunks if `chunked`) while reading the answer; its status and body. The server may answer
    and close before the body is through: that is the point."""
    host, port = url.removeprefix("http://").rsplit(":", 1)

    def stream(sock: socket.socket) -> None:
        piece = b"x" * 65536
        try:
            for _ in range(body // len(piece)):
                sock.sendall(b"10000\r\n" + piece + b"\r\n" if chunked else piece)
            sock.sendall(b"0\r\n\r\n" if chunked else b"")
        except OSError:
            pass  # the server answered and closed: the rest is not wanted

    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        sender = threading.Thread(target=stream, args=(sock,), daemon=True)
        sender.start()
        response = http.client.HTTPResponse(sock)
        try:
            response.begin()
            answer = response.status, response.read()
        finally:
            response.close()
        sender.join(timeout=10)
    return answer


def workers_rss_kb(log: Path) -> int:
    """The resident memory of gunicorn's workers (their pids from its log), added up."""
    pids = re.findall(r"Booting worker with pid: (\d+)", log.read_text())
    total = 0
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()
        total += int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))
    return total


@pytest.mark.e2e
def test_gunicorn_refuses_oversized_requests_unread_and_without_a_traceback(
    gunicorn: tuple[str, Path, Path], tmp_path: Path
):
    url, _, log = gunicorn
    token = "POST /api/auth/token/ HTTP/1.1\nHost: 127.0.0.1\nX-Forwarded-Proto: https\n"
    json_body = "Content-Type: application/json\nConnection: close\n"
    too_large = f"{token}{json_body}Content-Length: {100 * 2**20}\n"
    # Warm up (either of the two workers may answer): the first requests import the API's
    # modules, the first 413 its own.
    for _ in range(4):
        assert raw_request(url, f"{token}{json_body}Content-Length: 0\n")[0] == 400
        assert raw_request(url, too_large)[0] == 413
    rss_before = workers_rss_kb(log)

    # 100 MB announced and streamed: 413 in the API's shape, answered on the headers alone.
    for _ in range(3):
        status, body = raw_request(url, too_large, body=100 * 2**20)
        assert status == 413
        assert json.loads(body) == {
            "error": {
                "status": 413,
                "code": "request_too_large",
                "message": "The request body is larger than the 1048576 bytes accepted.",
            }
        }
    # 5 MB without a length (chunked): 411.
    status, body = raw_request(
        url, f"{token}{json_body}Transfer-Encoding: chunked\n", body=5 * 2**20, chunked=True
    )
    assert (status, json.loads(body)["error"]["code"]) == (411, "length_required")
    rss_after = workers_rss_kb(log)
    report_figure(
        "gunicorn workers' RSS before / after four oversized bodies",
        f"{rss_before / 1024:.1f} / {rss_after / 1024:.1f} MB",
    )
    # A body read whole would add its 100 MB; what is left is allocator noise.
    assert rss_after - rss_before < 10 * 1024

    # gunicorn's own limits (gunicorn.conf.py), before Django.
    get = "GET /healthz?q={} HTTP/1.1\nHost: 127.0.0.1\nConnection: close\n{}"
    status, body = raw_request(url, get.format("x" * 4100, ""))
    assert status == 414
    assert b"Request Line is too large" in body
    headers = "".join(f"X-Header-{n}: {n}\n" for n in range(48))  # 50 with Host, Connection
    assert raw_request(url, get.format("", headers))[0] == 200
    assert raw_request(url, get.format("", headers + "X-One-Too-Many: 1\n"))[0] == 431
    assert raw_request(url, get.format("", f"X-Big: {'x' * 8200}\n"))[0] == 431

    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert [line for line in lines if line["level"] in ("ERROR", "CRITICAL")] == []
    assert "Traceback" not in log.read_text()


@pytest.mark.e2e
def test_the_push_process_streams_to_a_session_within_gunicorns_limits(
    tmp_path: Path, kafka_broker: str, transactional_db, viewer
):
    """docker-compose.yml's `push`: gunicorn's asgi worker serving the pages' stream of changes
    (ward/events.py) beside the API's sync workers."""
    with override_settings(SECRET_KEY=PRODUCTION_ENV["SECRET_KEY"]):  # the server's
        session = SessionStore()
        session.update(
            {
                SESSION_KEY: str(viewer.pk),
                BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
                HASH_SESSION_KEY: viewer.get_session_auth_hash(),
            }
        )
        session.create()
    arguments = ("--worker-class", "asgi", "--workers", "1", "icu.asgi")
    with gunicorn_serving(tmp_path, kafka_broker, *arguments) as (url, _, log):
        head = "GET /events/ HTTP/1.1\nHost: 127.0.0.1\nX-Forwarded-Proto: https\n"
        assert raw_request(url, f"{head}Connection: close\n")[0] == 403  # no session
        host, port = url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            cookie = f"Cookie: {settings.SESSION_COOKIE_NAME}={session.session_key}\n"
            sock.sendall(f"{head}{cookie}\n".replace("\n", "\r\n").encode())
            received = b""
            while b"event: heartbeat" not in received:  # the watcher's first read
                chunk = sock.recv(65536)
                assert chunk, (received, log.read_text()[-3000:])
                received += chunk
        assert received.startswith(b"HTTP/1.1 200 ")
        assert b"content-type: text/event-stream" in received.lower()
        assert b": connected\n\n" in received
        # gunicorn's own limits hold in its asgi worker too.
        long_line = "GET /healthz?q={} HTTP/1.1\nHost: 127.0.0.1\nConnection: close\n"
        assert raw_request(url, long_line.format("x" * 4100))[0] == 414
        headers = "".join(f"X-Header-{n}: {n}\n" for n in range(49))
        assert raw_request(url, long_line.format("") + headers)[0] == 431
    assert "Traceback" not in log.read_text()
