"""Fake Kafka clients for unit tests of VitalsConsumer (the end-to-end tests use the real
broker): one partition of one topic, messages served from a list, deliveries reported on
flush()."""

import json

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, KafkaException, TopicPartition

from vitals.consumer import VitalsConsumer
from vitals.contract import Reading, reading_to_message

NO_OFFSET = -1001  # librdkafka's OFFSET_INVALID


class FakeMessage:
    def __init__(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        self._key, self._value, self._offset = key, value, offset

    def error(self) -> None:
        return None

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def topic(self) -> str:
        return "vitals"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        # No Kafka timestamp: the alarm engine then takes the monitor's clock as it is.
        return TIMESTAMP_NOT_AVAILABLE, 0


class FakeConsumer:
    """consume() serves from `next`, seek() moves it back, store_offsets() keeps what it was
    given in `stored`. Positions, watermarks and commits for the lag are what the test sets."""

    def __init__(self) -> None:
        self.log: list[FakeMessage] = []
        self.next = 0
        self.stored: list[tuple[str, int, int]] = []
        self.positions: dict[tuple[str, int], int] = {}
        self.watermarks: dict[tuple[str, int], tuple[int, int]] = {}
        self.commits: dict[tuple[str, int], int] = {}

    def add(self, messages: list[tuple[bytes | None, bytes | None]]) -> None:
        for key, value in messages:
            self.log.append(FakeMessage(key, value, offset=len(self.log)))

    def add_readings(self, readings: list[Reading]) -> None:
        self.add([reading_to_message(reading) for reading in readings])

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        batch = self.log[self.next : self.next + num_messages]
        self.next += len(batch)
        return batch

    def seek(self, partition: TopicPartition) -> None:
        self.next = partition.offset

    def store_offsets(self, offsets: list[TopicPartition]) -> None:
        self.stored += [(tp.topic, tp.partition, tp.offset) for tp in offsets]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(
                p.topic, p.partition, self.positions.get((p.topic, p.partition), NO_OFFSET)
            )
            for p in partitions
        ]

    def get_watermark_offsets(self, partition: TopicPartition, cached: bool = False):
        assert cached, "the lag must come from librdkafka's cache, not a broker round trip"
        key = (partition.topic, partition.partition)
        return self.watermarks.get(key, (NO_OFFSET, NO_OFFSET))

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [
            TopicPartition(
                p.topic, p.partition, self.commits.get((p.topic, p.partition), NO_OFFSET)
            )
            for p in partitions
        ]

    def close(self) -> None:
        pass


class FakeProducer:
    """Takes every message into `produced`; flush() reports each delivery, failing the first
    `fail` ones with `fail_code`. produce() itself refuses the first `refuse` messages, as
    librdkafka does one it cannot take at all (KafkaException, e.g. MSG_SIZE_TOO_LARGE)."""

    def __init__(self) -> None:
        self.produced: list[tuple[str, bytes | None, bytes | None, list | None]] = []
        self.fail = 0
        self.fail_code = KafkaError._MSG_TIMED_OUT
        self.refuse = 0
        self.refuse_code = KafkaError.MSG_SIZE_TOO_LARGE
        self._waiting: list = []

    def produce(self, topic, key=None, value=None, headers=None, on_delivery=None) -> None:
        if self.refuse:
            self.refuse -= 1
            raise KafkaException(KafkaError(self.refuse_code))
        self.produced.append((topic, key, value, headers))
        self._waiting.append(on_delivery)

    def flush(self, timeout: float | None = None) -> int:
        waiting, self._waiting = self._waiting, []
        for on_delivery in waiting:
            if self.fail:
                self.fail -= 1
                on_delivery(KafkaError(self.fail_code), None)
            else:
                on_delivery(None, None)
        return 0

    def poll(self, timeout: float = 0) -> int:
        return 0

    def on(self, topic: str) -> list[tuple[bytes, dict, list]]:
        """(key, JSON value, headers) of what was produced to `topic`."""
        return [(k, json.loads(v), h) for t, k, v, h in self.produced if t == topic]


def worker_create(**overrides) -> tuple[VitalsConsumer, FakeConsumer, FakeProducer]:
    """A VitalsConsumer on fake clients, with backoffs short enough for tests."""
    consumer, producer = FakeConsumer(), FakeProducer()
    options = {
        "dlq_topic": "vitals.dlq",
        "alarms_topic": "alarms",
        "backoff_initial": 0.001,
        "backoff_max": 0.001,
        **overrides,
    }
    return VitalsConsumer(consumer=consumer, producer=producer, **options), consumer, producer
