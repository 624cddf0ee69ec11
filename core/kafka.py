"""The one place that builds Kafka clients and checks that the broker is there.

All clients share the same base configuration (bootstrap servers from settings, librdkafka's own
logs routed to the `core.kafka.librdkafka` logger, `KAFKA_EXTRA_CONFIG` for TLS/SASL) so that a
deployment changes one setting, not five call sites.
"""

import logging
import socket
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from django.conf import settings

from core.exceptions import KafkaUnavailable

librdkafka_logger = logging.getLogger("core.kafka.librdkafka")

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
    """A producer that loses nothing and keeps each partition in order.

    Idempotent by default (KAFKA_IDEMPOTENT_PRODUCER): acks=all, and retries that neither
    duplicate nor reorder. KAFKA_IDEMPOTENT_PRODUCER=false gives acks=all with one request in
    flight per broker instead (a retry cannot overtake, but may write a copy): for a broker
    that forgets producer ids when it restarts, as the development broker does (Tansu keeps
    them in memory; afterwards it rejects every write of an idempotent producer with
    UNKNOWN_PRODUCER_ID, for good: vitals/tests/test_faults.py). The copies are harmless
    here: a reading is stored once (unique (patient, measured_at)), DLQ copies and alarm
    events are at-least-once anyway (alarm events carry their `event_id`).
    """
    delivery = (
        {"enable.idempotence": True}
        if settings.KAFKA_IDEMPOTENT_PRODUCER
        else {"acks": "all", "max.in.flight.requests.per.connection": 1}
    )
    return Producer(
        kafka_config(
            **{
                **delivery,
                "linger.ms": 5,
                "compression.type": "lz4",
                **overrides,
            }
        )
    )


# librdkafka's default message.max.bytes: the largest message a producer accepts.
MESSAGE_MAX_BYTES_DEFAULT = 1_000_000


def producer_message_max_bytes(**overrides: Any) -> int:
    """The message.max.bytes of a producer made by `producer_create(**overrides)`."""
    return int(kafka_config(**overrides).get("message.max.bytes", MESSAGE_MAX_BYTES_DEFAULT))


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
                "session.timeout.ms": settings.KAFKA_SESSION_TIMEOUT_MS,
                "heartbeat.interval.ms": settings.KAFKA_SESSION_TIMEOUT_MS // 6,
                "partition.assignment.strategy": "cooperative-sticky",
                # How long the broker may hold a fetch that has too little data: librdkafka's
                # 500 ms default is a floor on freshness with a broker that waits it out (Tansu
                # does; bench/freshness.py measured 164 ms median at receipt with 500, 49 ms
                # with 20). An idle partition costs ten fetches a second at 100.
                "fetch.wait.max.ms": 100,
                # Read-ahead kept in memory: librdkafka's default, 64 MB, is some 280,000
                # readings, which a backlog fills slowly, so the consumer's memory grew for its
                # first 500,000 readings (bench/memory.py). 16 MB is 16 batches of 1,000 ahead.
                "queued.max.messages.kbytes": 16384,
                **overrides,
            }
        )
    )


class BrokerOutage:
    """One clear line when a running client loses the broker, one when it has it back.

    librdkafka reconnects on its own and reports a lost broker only to `error_cb` (called
    from poll(), consume(), flush()): without one, an outage after the start-up check is
    silent. Give `error_cb` to the client; call `reachable()` when it did something only a
    reachable broker allows (a delivery, an assignment, a message).
    """

    def __init__(self, logger: logging.Logger, client: str) -> None:
        self.logger = logger
        self.client = client
        self.down_since: float | None = None

    def error_cb(self, error: KafkaError) -> None:
        context = {"client": self.client, "error": error.str()}
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            if self.down_since is None:
                self.down_since = time.monotonic()
                self.logger.error(
                    "Kafka broker unreachable; retrying",
                    extra={"bootstrap_servers": settings.KAFKA_BOOTSTRAP_SERVERS, **context},
                )
        elif error.code() == KafkaError._TRANSPORT:
            # Each failed reconnection attempt (backing off to 10 s), an idle connection closed.
            self.logger.debug("Kafka connection failed", extra=context)
        else:
            level = logging.ERROR if error.fatal() else logging.WARNING
            self.logger.log(level, "Kafka client error", extra={"code": error.name(), **context})

    def reachable(self) -> None:
        if self.down_since is not None:
            down_s = round(time.monotonic() - self.down_since, 1)
            self.down_since = None
            self.logger.info(
                "Kafka broker reachable again", extra={"client": self.client, "down_s": down_s}
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
