"""Fixtures shared by every app's tests: the real broker, per-test topics, API clients.

The broker is the embedded Tansu, started once per session by our own `run_broker` command on
a free loopback port. Each test that uses Kafka gets topics and a consumer group of its own,
so tests never see each other's messages.
"""

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Message, TopicPartition
from django.conf import LazySettings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from icu.kafka import kafka_config, producer_create, topics_ensure
from icu.process import process_stop

BASE_DIR = Path(__file__).resolve().parent

# Figures that tests measure for the README (scenario evidence); printed after the run.
_FIGURES: list[tuple[str, str]] = []


def report_figure(name: str, value: str) -> None:
    _FIGURES.append((name, value))


def pytest_terminal_summary(terminalreporter) -> None:
    if _FIGURES:
        terminalreporter.section("measured figures")
        for name, value in _FIGURES:
            terminalreporter.write_line(f"{name}: {value}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def start_manage(*args: str, log: Path, **env: str) -> subprocess.Popen:
    """Start `python manage.py <args>` as a child process, its output going to `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=subprocess_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
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


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Kafka-protocol broker for the whole session: `manage.py run_broker`."""
    bootstrap = f"127.0.0.1:{free_port()}"
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    process = start_manage("run_broker", log=log, KAFKA_BOOTSTRAP_SERVERS=bootstrap)
    try:
        wait_for_log(log, "broker ready", process, timeout=30)
        yield bootstrap
    finally:
        process_stop(process)


@dataclass
class KafkaTopics:
    """The topics and group of one test, and helpers to write and read them."""

    bootstrap: str
    topic: str
    dlq_topic: str
    alarms_topic: str
    group_id: str

    def produce(self, messages: list[tuple[bytes | None, bytes | None]], topic: str = "") -> None:
        producer = producer_create()
        for key, value in messages:
            producer.produce(topic or self.topic, key=key, value=value)
        assert producer.flush(10) == 0

    def read(self, topic: str = "", idle: float = 1.0, timeout: float = 20.0) -> list[Message]:
        """Every message now in `topic`, in (partition, offset) order, read without a group
        from offset 0 until none arrives for `idle` seconds.

        Not up to the high watermark: the Tansu broker reports it as the last *batch's* base
        offset + 1, not the last offset + 1 as Apache Kafka does.
        """
        topic = topic or self.topic
        consumer = Consumer(kafka_config(**{"group.id": f"reader-{uuid.uuid4()}"}))
        try:
            partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
            consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
            messages: list[Message] = []
            deadline = time.monotonic() + timeout
            last_seen = time.monotonic()
            while time.monotonic() - last_seen < idle and time.monotonic() < deadline:
                message = consumer.poll(0.1)
                if message is not None and message.error() is None:
                    messages.append(message)
                    last_seen = time.monotonic()
            return sorted(messages, key=lambda m: (m.partition(), m.offset()))
        finally:
            consumer.close()

    def committed(self, topic: str = "") -> dict[int, int]:
        """The group's committed offset per partition (-1001 when none)."""
        topic = topic or self.topic
        consumer = Consumer(kafka_config(**{"group.id": self.group_id}))
        try:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            found = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
            return {tp.partition: tp.offset for tp in found}
        finally:
            consumer.close()


@pytest.fixture
def kafka(kafka_broker: str, settings: LazySettings) -> KafkaTopics:
    """Fresh topics and consumer group for one test, set in Django settings."""
    suffix = uuid.uuid4().hex[:10]
    topics = KafkaTopics(
        bootstrap=kafka_broker,
        topic=f"vitals-{suffix}",
        dlq_topic=f"vitals-{suffix}.dlq",
        alarms_topic=f"alarms-{suffix}",
        group_id=f"group-{suffix}",
    )
    settings.KAFKA_BOOTSTRAP_SERVERS = kafka_broker
    settings.KAFKA_TOPIC = topics.topic
    settings.KAFKA_DLQ_TOPIC = topics.dlq_topic
    settings.KAFKA_ALARMS_TOPIC = topics.alarms_topic
    settings.KAFKA_GROUP_ID = topics.group_id
    topics_ensure(topics={topics.topic: 3, topics.dlq_topic: 1, topics.alarms_topic: 1})
    return topics


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user(username="nurse", password="correct-horse-9")


@pytest.fixture
def api_client(user) -> APIClient:
    """A client authenticated with a DRF token, as an API consumer would be."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()
