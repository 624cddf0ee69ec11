"""Per-test Kafka topics on the session's broker, and helpers to write and read them."""

import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import Consumer, Message, TopicPartition

from core.kafka import kafka_config, producer_create


def _reading_timestamp(value: bytes | None) -> int | None:
    """The `timestamp` of a reading's value in milliseconds since the epoch, if it has one."""
    try:
        text = json.loads(value or b"")["timestamp"]
        stamp = round(datetime.fromisoformat(text).timestamp() * 1000)
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError, RecursionError):
        return None
    return stamp if 0 < stamp < 2**62 else None


@dataclass
class KafkaTopics:
    """The topics and group of one test, and helpers to write and read them."""

    bootstrap: str
    topic: str
    dlq_topic: str
    alarms_topic: str
    group_id: str

    def env(self) -> dict[str, str]:
        """The settings that point a child process (`start_manage`) at these topics."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_TOPIC": self.topic,
            "KAFKA_DLQ_TOPIC": self.dlq_topic,
            "KAFKA_ALARMS_TOPIC": self.alarms_topic,
            "KAFKA_GROUP_ID": self.group_id,
        }

    def produce(
        self,
        messages: list[tuple[bytes | None, bytes | None]],
        topic: str = "",
        *,
        sent: str = "measured",
    ) -> None:
        """Produce the messages in order. Their Kafka timestamp (which the consumer takes for
        the time a reading was sent, to measure the monitor's clock against) is, with `sent`
        "measured", the reading's own `timestamp` when the value has one: a monitor with a
        right clock that sent each reading as it took it, however long ago the test stamps
        it; with "now", the producer's clock (a monitor whose clock is off by as much as the
        stamps are from now)."""
        producer = producer_create()
        for key, value in messages:
            extra = {}
            if sent == "measured" and (stamp := _reading_timestamp(value)) is not None:
                extra["timestamp"] = stamp
            producer.produce(topic or self.topic, key=key, value=value, **extra)
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
