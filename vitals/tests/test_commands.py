"""The commands as a user meets them: --help, argument errors, and `run_dev` (`make run`)."""

import http.client
import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer
from django.core.management import CommandError, call_command
from django.urls import reverse

from core.ports import port_free
from testing.broker import KafkaTopics
from testing.devservers import free_port
from testing.processes import BASE_DIR, start_manage, subprocess_env, wait_for_log

COMMANDS = [
    "run_broker",
    "run_patient",
    "consume_vitals",
    "run_dev",
    "prune_vitals",
    "assign_role",
    "expire_exports",
    "forward_alarms",
    "run_hl7_gateway",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(command: str):
    result = subprocess.run(
        [sys.executable, "manage.py", command, "--help"],
        cwd=BASE_DIR,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    # The examples laid out as written, one a line (not wrapped into a paragraph).
    assert "\nexamples:\n" in result.stdout
    assert f"\n  python manage.py {command}" in result.stdout


@pytest.mark.parametrize("command", ["run_patient", "consume_vitals", "run_hl7_gateway"])
def test_worker_help_shows_the_metrics_options_with_an_example(command: str):
    result = subprocess.run(
        [sys.executable, "manage.py", command, "--help"],
        cwd=BASE_DIR,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert "--metrics-port PORT" in result.stdout
    assert "--metrics-address ADDRESS" in result.stdout
    examples = result.stdout.split("examples:")[1].split("options:")[0].splitlines()
    assert any(
        line.strip().startswith(f"python manage.py {command} ") and "--metrics-port" in line
        for line in examples
    ), examples


@pytest.mark.parametrize(
    ("command", "options"),
    [("consume_vitals", {}), ("run_patient", {"name": ["bob"], "count": 1})],
)
def test_a_metrics_port_in_use_is_reported_before_touching_kafka(command, options, settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{free_port()}"  # nothing listens there
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            CommandError, match=f"Cannot serve metrics on 127.0.0.1:{port}: Address already in use"
        ):
            call_command(command, metrics_port=port, broker_timeout=1, **options)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metrics-port", "70000"], "'70000' is not a port number"),
        (["--metrics-port", "-1"], "'-1' is not a port number"),
        (["--metrics-linger", "-5", "--count", "1"], "--metrics-linger must be 0 or more"),
    ],
)
def test_run_patient_rejects_bad_metrics_options(args, message, settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(CommandError, match=message):
        call_command("run_patient", "--name", "bob", *args)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "Name at least one patient"),
        ({"name": ["bob", "bob"]}, "Each --name must be different"),
        ({"name": ["a", "b"], "uuid": str(uuid.uuid4())}, "--uuid goes with exactly one --name"),
        ({"name": ["bob"], "uuid": "nope"}, "'nope' is not a uuid"),
        ({"name": ["bob"], "interval": -1}, "--interval must be 0 or more"),
        ({"name": ["bob"], "count": 0}, "--count must be 1 or more"),
        ({"patients": -2}, "--patients must be 0 or more"),
    ],
)
def test_run_patient_rejects_bad_arguments_before_touching_kafka(options, message, settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(CommandError, match=message):
        call_command("run_patient", **options)


def test_run_dev_refuses_to_ventilate_a_patient_it_does_not_emulate(settings):
    settings.DEBUG = True
    with pytest.raises(
        CommandError,
        match=r"^--ventilated erin: not an emulated patient \(alice, bob, carol\); name them "
        r"with --name too\.$",
    ):
        call_command("run_dev", "--ventilated", "erin")


def test_run_dev_refuses_to_emulate_its_hl7_patient_a_second_time(settings):
    settings.DEBUG = True
    with pytest.raises(
        CommandError,
        match=r"^--name dave: dave is the patient whose monitor speaks HL7 to the gateway "
        r"\(run_dev starts them\); give another name\.$",
    ):
        call_command("run_dev", "--name", "erin", "--name", "dave:sepsis")


def test_run_dev_refuses_to_run_without_debug(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="run_dev is for local use: set DEBUG=true"):
        call_command("run_dev")


def test_run_broker_refuses_a_port_in_use(kafka_broker: str, settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = kafka_broker
    with pytest.raises(CommandError, match=f"{kafka_broker} is already in use"):
        call_command("run_broker")


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_reading_from_any_kafka_client_appears_in_the_api(kafka: KafkaTopics, api_client):
    """Not our producer: a bare librdkafka client writing the documented JSON by hand."""
    patient_uuid = str(uuid.uuid4())
    timestamp = datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.123Z")
    value = (
        (
            '{"schema_version": 1, "patient_uuid": "UUID", "patient_name": "Zoë O\'Neil",'
            ' "timestamp": "TIME", "pulse": 128, "resp_rate": 24, "bp": "92/58", "spo2": 89,'
            ' "temperature": 38.9}'
        )
        .replace("UUID", patient_uuid)
        .replace("TIME", timestamp)
    )
    producer = Producer({"bootstrap.servers": kafka.bootstrap})
    producer.produce(kafka.topic, key=patient_uuid, value=value.encode())
    producer.produce(kafka.topic, key=patient_uuid, value=b'{"pulse": "fast"}')
    assert producer.flush(10) == 0

    call_command("consume_vitals", exit_on_idle=1.5, batch_timeout=0.1)

    response = api_client.get(reverse("api:patient-metrics", args=[patient_uuid]))
    assert response.status_code == 200
    [metric] = response.json()["results"]
    assert metric["measured_at"] == timestamp.replace(".123Z", ".123000Z")
    assert (metric["pulse"], metric["resp_rate"], metric["bp"]) == (128, 24, "92/58")
    assert (metric["spo2"], metric["temperature"]) == (89, 38.9)
    detail = api_client.get(f"/api/patients/{patient_uuid}/").json()
    assert detail["name"] == "Zoë O'Neil"
    assert detail["latest_metric"]["pulse"] == 128
    [dead] = kafka.read(kafka.dlq_topic)
    assert dict(dead.headers())["dlq.reason"] == b"missing_field"
    assert (dead.key(), dead.value()) == (patient_uuid.encode(), b'{"pulse": "fast"}')


@pytest.mark.e2e
@pytest.mark.engine_neutral  # make run's own database is SQLite
def test_run_dev_starts_the_whole_pipeline_and_stops_it_on_ctrl_c(tmp_path, empty_database_url):
    """What `make run` promises: within 30 s, three patients whose readings advance; the
    deteriorating ones (time compressed further than make run's 60x, to keep the test short)
    raise alarms and rise to the top of the acuity ordering."""
    port, broker_port = free_port(), free_port()
    env = {
        "DEBUG": "true",
        "DATABASE_URL": empty_database_url,  # of the session's engine, migrated below
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{broker_port}",
        "LOG_FORMAT": "text",
        "MEDIA_ROOT": str(tmp_path / "media"),
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=BASE_DIR,
        env=subprocess_env(**env),
        check=True,
        capture_output=True,
        timeout=120,
    )
    log = tmp_path / "run_dev.log"
    hl7_port, push_port = free_port(), free_port()
    process = start_manage(
        "run_dev",
        *("--interval", "1", "--speed", "3000", "--port", str(port), "--hl7-port", str(hl7_port)),
        *("--push-port", str(push_port)),
        log=log,
        **env,
    )
    try:
        banner = wait_for_log(log, "Ctrl-C stops everything", process, timeout=30)
        assert "login:                    admin / icu-demo-password" in banner
        assert (
            "roles:                    nurse (clinician), observer (viewer), same password"
            in banner
        )
        assert (
            "emulated patients: alice:stable, bob:sepsis, carol:respiratory_failure at 3000x "
            "speed (carol ventilated); broker" in banner
        )
        assert f"central station (ward):   http://127.0.0.1:{port}/\n" in banner
        assert f"pushed updates (SSE):     http://127.0.0.1:{push_port}/events/\n" in banner
        assert (
            f"HL7 gateway (MLLP):       127.0.0.1:{hl7_port}  (dave's monitor speaks HL7 "
            "(PCD-01) to it)" in banner
        )
        token = banner.split("Authorization: Token ")[1].split('"')[0]

        def get(path: str) -> dict:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/{path}", headers={"Authorization": f"Token {token}"}
            )
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                return json.load(response)

        def post(path: str, body: dict) -> dict:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/{path}",
                data=json.dumps(body).encode(),
                headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                assert response.status == 202
                return json.load(response)

        def patients() -> list[dict]:
            return get("patients/")["results"]

        deadline = time.monotonic() + 30
        first: list[dict] = []
        while time.monotonic() < deadline:
            try:
                first = patients()
            except OSError:
                first = []
            if len(first) == 4 and all(p["latest_metric"] for p in first):
                break
            time.sleep(0.5)
        # dave's monitor speaks HL7 (PCD-01) to the gateway, which puts his readings on the
        # topic like the others'.
        assert [p["name"] for p in first] == ["alice", "bob", "carol", "dave"]
        # carol is on a ventilator (her own emulator): end-tidal CO2 on her tile, no one else's.
        assert ["etco2" in p["latest_signs"] for p in first] == [False, False, True, False]
        # The demo unit's eight beds, the three admitted by AUTO_ADMIT on their first reading
        # (in the order their first batches arrived), none left unassigned.
        icu = get("units/icu/")
        assert (icu["name"], len(icu["beds"]), icu["unassigned"]) == (
            "Intensive care unit",
            8,
            [],
        )
        in_beds = [b["patient"]["name"] for b in icu["beds"] if b["patient"]]
        assert sorted(in_beds) == ["alice", "bob", "carol", "dave"]
        assert [b["patient"] is not None for b in icu["beds"]] == [True] * 4 + [False] * 4
        # A page's stream, left open over Ctrl-C as a browser would.
        stream = pushed_updates_check(web_port=port, push_port=push_port, patients=first)
        # The ward at `/` asks for a login first (the browser tests, ward/tests, go further).
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            assert response.url == f"http://127.0.0.1:{port}/login/?next=/"
            assert "Log in to the central station" in response.read().decode()
        time.sleep(2.5)
        later = patients()
        for before, after in zip(first, later, strict=True):
            assert after["latest_metric"]["measured_at"] > before["latest_metric"]["measured_at"]
            assert after["news2"] == after["latest_metric"]["news2"]
            assert 0 <= after["news2"]["score"] <= 20

        # 3000x: each reading is 50 simulated minutes; bob's and carol's stories unfold in
        # seconds, and their NEWS2 escalation alarms (delay: 2 readings) are raised.
        deadline = time.monotonic() + 30
        alarmed: set[str] = set()
        while time.monotonic() < deadline and alarmed != {"bob", "carol"}:
            alarms = get("alarms/?kind=news2")["results"]
            alarmed = {a["patient_name"] for a in alarms if a["kind"] == "news2"}
            time.sleep(0.5)
        assert alarmed == {"bob", "carol"}
        by_acuity = [p["name"] for p in get("patients/?ordering=-news2")["results"]]
        assert set(by_acuity[-2:]) == {"alice", "dave"}  # both stable

        # The worker runs exports: alice's readings as CSV, from request to file.
        export = post(f"patients/{first[0]['uuid']}/exports/", {"format": "csv"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and export["status"] not in ("success", "failure"):
            time.sleep(0.3)
            export = get(f"exports/{export['id']}/")
        assert (export["status"], export["error"]) == ("success", "")
        assert export["result_url"].startswith(f"http://127.0.0.1:{port}/api/exports/")
        request = urllib.request.Request(  # noqa: S310 (checked just above: our own server)
            export["result_url"], headers={"Authorization": f"Token {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            rows = response.read().decode().splitlines()
        assert len(rows) == export["row_count"] + 1 > 1
        assert rows[1].startswith(f"{first[0]['uuid']},")

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        stream.close()
    finally:
        if process.poll() is None:
            process.kill()
    output = log.read_text()
    # gunicorn's quick shutdown: on SIGTERM it would wait for the open stream (20 s).
    assert "gunicorn.error: Handling signal: int" in output
    assert "consumer stopped" in output
    assert "broker stopped" in output
    assert "Starting worker" in output
    # Nothing is left listening: the broker's, the web server's, the HL7 gateway's and the push
    # process's ports are free again.
    for free in (broker_port, port, hl7_port, push_port):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", free)) != 0


def pushed_updates_check(
    *, web_port: int, push_port: int, patients: list[dict]
) -> http.client.HTTPResponse:
    """The pages' stream comes from run_dev's push process (gunicorn's asgi worker, as in
    production), not from runserver: the ward page served by runserver names its port and lets
    the page connect there (CSP connect-src), and the push process streams the changes to a
    page of runserver's origin with the demo user's session cookie (CORS with credentials).
    Returns the stream, still open."""
    web, push = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{push_port}"
    with urllib.request.urlopen(f"{push}/healthz", timeout=5) as response:  # noqa: S310
        assert (response.status, response.headers["Server"]) == (200, "gunicorn/asgi")
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with browser.open(f"{web}/login/", timeout=5) as response:
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.read().decode())
    login = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": csrf[1], "username": "nurse", "password": "icu-demo-password"}
    )
    request = urllib.request.Request(  # noqa: S310 (our own server)
        f"{web}/login/?next=/", data=login.encode(), headers={"Referer": f"{web}/login/"}
    )
    with browser.open(request, timeout=5) as ward:
        assert ward.url == f"{web}/"
        page = ward.read().decode()
        csp = ward.headers["Content-Security-Policy"]
    assert f'"eventsPort": {push_port},' in page
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
    assert directives["connect-src"] == f"'self' {push}"  # the directives come in any order
    stream = urllib.request.Request(f"{push}/events/", headers={"Origin": web})  # noqa: S310
    response = browser.open(stream, timeout=5)
    headers = response.headers
    assert (headers["Content-Type"], headers["Server"]) == (
        "text/event-stream",
        "gunicorn/asgi",
    )
    assert headers["Access-Control-Allow-Origin"] == web
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert response.readline() == b": connected\n"
    # Readings every second: a change within a few seconds (a heartbeat first, maybe).
    deadline = time.monotonic() + 10
    line = b""
    while line != b"event: changed\n" and time.monotonic() < deadline:
        line = response.readline()
    assert line == b"event: changed\n"
    changed = json.loads(response.readline().removeprefix(b"data: "))["patients"]
    assert changed
    assert set(changed) <= {p["uuid"] for p in patients}
    return response


SECOND_INSTANCE = re.compile(
    r"To run a second instance, give it its own ports \(and so its own broker and topics\): "
    r"KAFKA_BOOTSTRAP_SERVERS=127\.0\.0\.1:(\d+) \.venv/bin/python manage\.py run_dev --port (\d+)"
    r"(?: --hl7-port (\d+))?$"  # when the HL7 gateway's port is taken too
)


@pytest.mark.e2e
@pytest.mark.engine_neutral  # make run's own database is SQLite
def test_a_second_run_dev_names_the_port_in_use_and_touches_nothing(
    kafka: KafkaTopics, tmp_path, empty_database_url
):
    """`make run` twice: the second checks every port before it starts anything, and exits with
    one line naming the port, what holds it and how to run a second instance: no banner, no
    reading produced, no child started. Its broker (the session's) answers, so it would
    be shared; the web and HL7 gateway's ports are held here by the test itself, as a first
    instance would."""
    env = {
        **kafka.env(),
        "DEBUG": "true",
        "DATABASE_URL": empty_database_url,
        "LOG_FORMAT": "text",
        "MEDIA_ROOT": str(tmp_path / "media"),
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=BASE_DIR,
        env=subprocess_env(**env),
        check=True,
        capture_output=True,
        timeout=120,
    )
    with socket.socket() as first, socket.socket() as first_hl7:
        for held in (first, first_hl7):
            held.bind(("127.0.0.1", 0))
            held.listen()
        port, hl7_port = first.getsockname()[1], first_hl7.getsockname()[1]
        result = subprocess.run(
            [
                *(sys.executable, "manage.py", "run_dev", "--port", str(port)),
                *("--hl7-port", str(hl7_port), "--interval", "0.1"),
            ],
            cwd=BASE_DIR,
            env=subprocess_env(**env),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(
        f"CommandError: 127.0.0.1:{port} (the web server's port) is in use by pid {os.getpid()} ("
    ), line
    assert "; nothing was started. " in line
    broker_port, web_port, hl7 = map(int, SECOND_INSTANCE.search(line).groups())
    assert web_port != port
    assert broker_port != int(kafka.bootstrap.rpartition(":")[2])
    assert hl7 != hl7_port
    # Free: the suggestion works, its push process (--push-port's default) included.
    for suggested in (broker_port, web_port, web_port + 1, hl7):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", suggested))
    assert kafka.read(idle=1.0) == []  # no reading from its emulator
    # No consumer joined: run_dev relays every child's output to its stdout, empty above (the
    # embedded broker does not list consumer groups, so that is where it shows).


def test_run_dev_refuses_a_broker_port_held_by_something_that_is_not_a_broker(settings):
    """Not a Kafka broker there, and run_dev cannot start its own on that port: it says so
    before starting anything (and before the database: no django_db here)."""
    settings.DEBUG = True
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        broker_port = held.getsockname()[1]
        settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{broker_port}"
        with pytest.raises(CommandError) as raised:
            call_command("run_dev", "--port", str(free_port()))
    message = str(raised.value)
    assert message.startswith(
        f"127.0.0.1:{broker_port} (the broker's port, KAFKA_BOOTSTRAP_SERVERS) is in use by "
        f"pid {os.getpid()} ("
    ), message
    assert "), which does not answer as a Kafka broker; nothing was started. " in message
    assert SECOND_INSTANCE.search(message)


def test_run_dev_refuses_a_push_port_in_use_before_starting_anything(settings):
    """The push process's port (--push-port, by default --port + 1) is checked with the others,
    before anything starts (and before the database: no django_db here): one line naming it,
    what holds it and a free port to give instead."""
    settings.DEBUG = True
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        push_port = held.getsockname()[1]
        if not port_free(host="127.0.0.1", port=push_port - 1):
            pytest.skip("the port below the one held is taken")  # rare: a busy machine
        with pytest.raises(CommandError) as raised:
            call_command("run_dev", "--port", str(push_port - 1))  # its default push port
    message = str(raised.value)
    assert message.startswith(
        f"127.0.0.1:{push_port} (the push process's port, the pages' stream) is in use by "
        f"pid {os.getpid()} ("
    ), message
    suggested = int(re.fullmatch(r".*; nothing was started\. Give run_dev another --push-port, "
                                 r"e\.g\. --push-port (\d+)\.", message)[1])  # fmt: skip
    assert suggested > push_port
    with pytest.raises(CommandError, match=r"^--push-port 8000: --port's too; give another\.$"):
        call_command("run_dev", "--port", "8000", "--push-port", "8000")
    with pytest.raises(CommandError, match=r"^--push-port 2575: --hl7-port's too; give another\.$"):
        call_command("run_dev", "--push-port", "2575")
