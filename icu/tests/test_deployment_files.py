"""docker-compose.yml cannot be run here (no container engine): check it against the Compose
Specification's JSON Schema and against what the application expects."""

import json
import subprocess
from pathlib import Path

import check_jsonschema
import jsonschema
import pytest
import yaml

BASE_DIR = Path(__file__).resolve().parents[2]
COMPOSE_SCHEMA = (
    Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())


def test_compose_file_follows_the_compose_specification(compose: dict):
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    errors = sorted(
        jsonschema.validators.validator_for(schema)(schema).iter_errors(compose), key=str
    )
    assert [e.message for e in errors] == []


def test_compose_services_and_their_start_order(compose: dict):
    services = compose["services"]
    assert set(services) == {
        "kafka",
        "kafka-init",
        "postgres",
        "migrate",
        "web",
        "push",
        "consumer",
        "worker",
        "emulator",
        "gateway",
    }
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["consumer"]["depends_on"]["migrate"] == {
        "condition": "service_completed_successfully"
    }
    assert "healthcheck" in services["kafka"]
    assert "healthcheck" in services["postgres"]
    # `--scale consumer=3` needs no fixed name and no host port on the consumer.
    assert "container_name" not in services["consumer"]
    assert "ports" not in services["consumer"]
    # The exports' worker: the database backend's own command, after the migration, sharing
    # the export files with the web server.
    assert services["worker"]["command"] == ["python", "manage.py", "db_worker", "--no-reload"]
    assert services["worker"]["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"}
    }
    media = "media:" + services["web"]["environment"]["MEDIA_ROOT"]
    assert services["worker"]["volumes"] == services["web"]["volumes"] == [media]
    assert "media" in compose["volumes"]
    assert services["consumer"]["command"] == [
        "python",
        "manage.py",
        "consume_vitals",
        "--metrics-port",
        "9100",
        "--metrics-address",
        "0.0.0.0",  # noqa: S104 (inside the container, for the Prometheus scraper)
    ]
    # The HL7 gateway: listening on every interface of its container, its MLLP port published
    # for the monitors' gateways, after the migration (ADT writes admissions) and the topics.
    assert services["gateway"]["command"][:7] == [
        "python",
        "manage.py",
        "run_hl7_gateway",
        "--host",
        "0.0.0.0",  # noqa: S104 (inside the container, for the monitors)
        "--port",
        "2575",
    ]
    assert services["gateway"]["ports"] == ["2575:2575"]
    assert set(services["gateway"]["depends_on"]) == {"migrate", "kafka-init"}


def test_compose_health_checks_use_the_health_and_metrics_endpoints(compose: dict):
    services = compose["services"]
    probes = {
        name: service["healthcheck"]["test"][-1]
        for name, service in services.items()
        if name in ("web", "push", "consumer", "emulator", "gateway")
    }
    assert probes == {
        "web": "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/readyz', timeout=4)",
        "push": "import urllib.request as u; u.urlopen('http://127.0.0.1:8001/healthz', timeout=4)",
        "consumer": "import urllib.request as u; "
        "u.urlopen('http://127.0.0.1:9100/metrics', timeout=4)",
        "emulator": "import urllib.request as u; "
        "u.urlopen('http://127.0.0.1:9101/metrics', timeout=4)",
        "gateway": "import urllib.request as u; "
        "u.urlopen('http://127.0.0.1:9102/metrics', timeout=4)",
    }
    assert services["web"]["command"] == ["gunicorn", "-c", "gunicorn.conf.py", "icu.wsgi"]
    # The pushed updates: gunicorn's asgi worker beside the API's sync ones, on the port the
    # pages are told of (one process: one change watcher).
    assert services["push"]["command"] == [
        "gunicorn", "-c", "gunicorn.conf.py", "--worker-class", "asgi", "--workers", "1",
        "--bind", "0.0.0.0:8001", "icu.asgi",
    ]  # fmt: skip
    assert services["push"]["ports"] == ["8001:8001"]
    assert services["push"]["stop_signal"] == "SIGINT"  # quick shutdown: streams last minutes
    assert services["push"]["environment"]["WARD_EVENTS_PORT"] == "${WARD_EVENTS_PORT:-8001}"
    assert services["web"]["depends_on"]["kafka-init"] == {
        "condition": "service_completed_successfully"
    }
    # Every topic the application uses is created before the applications start.
    init = " ".join(services["kafka-init"]["command"])
    for topic in ("vitals", "vitals.dlq", "alarms"):
        assert f"--topic {topic} " in init


def test_compose_kafka_runs_in_kraft_mode_without_zookeeper(compose: dict):
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert not any("zookeeper" in name for name in compose["services"])


def test_compose_app_settings_are_settings_the_application_reads(compose: dict):
    settings_source = (BASE_DIR / "icu" / "settings.py").read_text()
    environment = compose["services"]["web"]["environment"]
    for name in environment:
        assert f'"{name}"' in settings_source, name
    assert environment["DEBUG"] == "false"
    assert environment["SECRET_KEY"] == "${SECRET_KEY:?set SECRET_KEY}"
    assert environment["DATABASE_URL"].startswith("postgres://")


def test_dockerfile_runs_as_a_non_root_user_with_a_dependency_layer():
    dockerfile = (BASE_DIR / "Dockerfile").read_text().splitlines()
    copy_requirements = dockerfile.index("COPY requirements.txt .")
    install = dockerfile.index("RUN pip install -r requirements.txt")
    copy_all = dockerfile.index("COPY . .")
    assert copy_requirements < install < copy_all
    assert "USER icu" in dockerfile
    assert dockerfile[-1] == 'CMD ["gunicorn", "-c", "gunicorn.conf.py", "icu.wsgi"]'
    collectstatic = next(i for i, line in enumerate(dockerfile) if "collectstatic" in line)
    assert copy_all < collectstatic < dockerfile.index("USER icu")


def test_the_schema_check_does_reject_a_broken_compose_file():
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    broken = {"services": {"web": {"image": "x", "depends_on": {"db": {"condition": "soon"}}}}}
    messages = [
        e.message for e in jsonschema.validators.validator_for(schema)(schema).iter_errors(broken)
    ]
    assert messages


def test_make_writes_a_development_env_with_text_logs_for_a_terminal(tmp_path: Path) -> None:
    """`make run`'s .env: DEBUG on, a random SECRET_KEY, and logs a person reads in a terminal
    (production and the tests log JSON)."""
    result = subprocess.run(
        ["make", "-s", "-f", str(BASE_DIR / "Makefile"), "-C", str(tmp_path), ".env"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "Wrote a development .env (DEBUG=true, random SECRET_KEY, LOG_FORMAT=text)\n"
    )
    lines = (tmp_path / ".env").read_text().splitlines()
    assert lines[0] == "DEBUG=true"
    assert lines[1].startswith("SECRET_KEY=")
    assert len(lines[1]) > len("SECRET_KEY=") + 60
    assert lines[3] == "LOG_FORMAT=text"


def test_gunicorn_makes_no_control_socket_for_any_of_its_processes():
    """gunicorn 27's control socket defaults to one path in $HOME for every gunicorn of the user
    (the web workers, the push process, run_dev's, the tests'): nothing here uses it."""
    import runpy

    from gunicorn.config import Config

    conf = runpy.run_path(str(Path(__file__).resolve().parents[2] / "gunicorn.conf.py"))
    assert conf["control_socket_disable"] is True
    assert Config().settings["control_socket_disable"].default is False  # a name gunicorn reads
