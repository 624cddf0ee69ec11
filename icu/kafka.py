"""The one place that builds Kafka clients and checks that the broker is there.

All clients share the same base configuration (bootstrap servers from settings, librdkafka's own
logs routed to the `icu.kafka.librdkafka` logger, `KAFKA_EXTRA_CONFIG` for TLS/SASL) so that a
deployment changes one setting, not five call sites.
"""

import logging
import socket
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from django.conf import settings

from icu.exceptions import KafkaUnavailable

librdkafka_logger = logging.getLogger("icu.kafka.librdkafka")

START_BROKER_HINT = "start one with `python manage.py run_broker` (or `make run`)"


def kafka_config(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS,
        "client.id": f"icu-monitor@{socket.gethostname()}",
        "logger": librdkafka_logger,
    }
    config.update(settings.KAFKA_EXTRA_CONFIG)
    config.update(overrides)
    return config


def producer_create(**overrides: Any) -> Producer:
    """An idempotent producer: acks=all, retries without duplicates or reordering."""
    return Producer(
        kafka_config(
            **{
                "enable.idempotence": True,
                "linger.ms": 5,
                "compression.type": "lz4",
                **overrides,
            }
        )
    )


def consumer_create(*, group_id: str, **overrides: Any) -> Consumer:
    """A group consumer for at-least-once processing.

    Offsets are *stored* by the application only after the database commit and committed by
    librdkafka in the background, on rebalance and on close() (librdkafka INTRODUCTION.md,
    "At-least-once processing").
    """
    return Consumer(
        kafka_config(
            **{
                "group.id": group_id,
                "enable.auto.commit": True,
                "enable.auto.offset.store": False,
                "auto.commit.interval.ms": 1000,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 1000,
                "partition.assignment.strategy": "cooperative-sticky",
                **overrides,
            }
        )
    )


def admin_create(**overrides: Any) -> AdminClient:
    return AdminClient(kafka_config(**overrides))


def broker_check(
    client: Producer | Consumer | AdminClient,
    *,
    timeout: float = 5.0,
    topics: tuple[str, ...] = (),
) -> None:
    """Raise KafkaUnavailable, with one line a person can act on, unless the broker answers
    within `timeout` seconds and every topic in `topics` exists."""
    servers = settings.KAFKA_BOOTSTRAP_SERVERS
    try:
        metadata = client.list_topics(timeout=timeout)
    except KafkaException:
        raise KafkaUnavailable(
            f"Cannot reach the Kafka broker at {servers} within {timeout:g}s; {START_BROKER_HINT}."
        ) from None
    missing = [t for t in topics if t not in metadata.topics]
    if missing:
        raise KafkaUnavailable(
            f"Kafka broker at {servers} has no topic {', '.join(missing)}; create it, or "
            f"{START_BROKER_HINT}, which creates the topics."
        )


def topics_ensure(
    *, topics: dict[str, int], timeout: float = 10.0, admin: AdminClient | None = None
) -> list[str]:
    """Create the topics that do not exist yet (name -> partitions); return those created."""
    admin = admin or admin_create()
    broker_check(admin, timeout=timeout)
    existing = admin.list_topics(timeout=timeout).topics
    wanted = [
        NewTopic(name, num_partitions=partitions, replication_factor=1)
        for name, partitions in topics.items()
        if name not in existing
    ]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            # Another process created it between our look and our request: fine.
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created


def bootstrap_address() -> tuple[str, int]:
    """Host and port of the first bootstrap server, e.g. ("127.0.0.1", 9092)."""
    first = settings.KAFKA_BOOTSTRAP_SERVERS.split(",")[0].strip()
    first = first.split("://", 1)[-1]
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        raise KafkaUnavailable(
            f"KAFKA_BOOTSTRAP_SERVERS={settings.KAFKA_BOOTSTRAP_SERVERS!r} is not host:port."
        )
    return host.strip("[]"), int(port)
