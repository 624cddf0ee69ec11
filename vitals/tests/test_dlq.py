"""The DLQ path of the consumer: no message can stop or stall the pipeline.

- `dlq_copy` (Hypothesis, over key, header and value sizes): the copy always fits the
  producer's message.max.bytes, as librdkafka's own produce() checks it (a real producer; its
  size check is made at once, no broker needed), and says exactly what it cut;
- a DLQ that takes nothing (fake clients): the partition is held at the message, nothing is
  committed past it, an error line names partition and offset, the metrics and the
  ConsumerStall row (read by /readyz) say so, the batch is retried with a growing backoff,
  and all of it clears once the DLQ takes the message.

The real broker with a ~1 MB header is test_pipeline_e2e.py; /readyz is icu/tests/test_health.py.
"""

import logging
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import KafkaError, Producer
from hypothesis import given, settings
from hypothesis import strategies as st

from testing.devservers import free_port
from vitals.consumer import (
    DLQ_HEADERS_CUT,
    DLQ_HEADERS_DROPPED,
    DLQ_HEADERS_TRUNCATED,
    DLQ_KEY_TRUNCATED,
    DLQ_MAX_VALUE_BYTES,
    DLQ_OFFSET,
    DLQ_REASON,
    DLQ_TRUNCATED,
    dlq_copy,
)
from vitals.models import ConsumerStall, PatientMetric
from vitals.tests.fakes import worker_create
from vitals.tests.test_metrics import changes, key, message, registry_samples

# --- dlq_copy ----------------------------------------------------------------------------------

_producers: dict[int, Producer] = {}


def librdkafka_producer(max_bytes: int) -> Producer:
    """A real producer with this message.max.bytes, pointed at a port where no broker listens:
    produce() refuses a message that is too large at once (MSG_SIZE_TOO_LARGE)."""
    if max_bytes not in _producers:
        _producers[max_bytes] = Producer(
            {
                "bootstrap.servers": f"127.0.0.1:{free_port()}",
                "message.max.bytes": max_bytes,
                "message.timeout.ms": 1000,
                "log_level": 0,
            }
        )
    return _producers[max_bytes]


EXTRA = [
    (DLQ_REASON, b"invalid_json"),
    ("dlq.detail", b"d" * 1024),
    ("dlq.source.topic", b"t" * 249),
    ("dlq.source.partition", b"2147483647"),
    (DLQ_OFFSET, b"9223372036854775807"),
    ("dlq.failed_at", b"2026-11-23T10:15:30.250+00:00"),
]
sizes = st.one_of(
    st.integers(0, 1_100_000),
    st.sampled_from([0, 1, 36, DLQ_MAX_VALUE_BYTES, DLQ_MAX_VALUE_BYTES + 1, 999_800, 10**6]),
)


@settings(max_examples=60, deadline=None)
@given(
    max_bytes=st.sampled_from([1_000_000, 100_000]),
    key_size=st.none() | sizes,
    value_size=st.none() | sizes,
    header_sizes=st.lists(st.tuples(st.integers(1, 300) | sizes, sizes), max_size=4),
)
def test_a_dlq_copy_always_fits_the_producer_and_says_what_was_cut(
    max_bytes: int, key_size: int | None, value_size: int | None, header_sizes: list
):
    original_key = None if key_size is None else b"k" * key_size
    original_value = None if value_size is None else b"v" * value_size
    original_headers = [("n" * n, b"h" * v) for n, v in header_sizes]

    key_, value, headers = dlq_copy(
        key=original_key,
        value=original_value,
        headers=original_headers,
        extra=EXTRA,
        max_bytes=max_bytes,
    )

    producer = librdkafka_producer(max_bytes)
    producer.produce("dlq", key=key_, value=value, headers=headers)  # raises if too large
    producer.purge()
    # The source's own headers (kept, cut or dropped) first, then the dlq.* ones.
    split = headers.index(EXTRA[0])
    kept, ours = headers[:split], headers[split:]
    assert ours[: len(EXTRA)] == EXTRA
    notes = dict(ours[len(EXTRA) :])
    # Each part is the original or a prefix of it; cut exactly when a header says so.
    assert (key_ == original_key) == (DLQ_KEY_TRUNCATED not in notes)
    if key_ != original_key:
        assert original_key.startswith(key_)
        assert notes[DLQ_KEY_TRUNCATED] == str(key_size).encode()
    assert (value == original_value) == (DLQ_TRUNCATED not in notes)
    if value != original_value:
        assert original_value.startswith(value)
        assert notes[DLQ_TRUNCATED] == str(value_size).encode()
    assert len(value or b"") <= DLQ_MAX_VALUE_BYTES
    if DLQ_HEADERS_TRUNCATED in notes:
        size = sum(len(n) + len(v) + 10 for n, v in original_headers)
        assert notes[DLQ_HEADERS_TRUNCATED] == str(size).encode()
        cut, dropped = int(notes[DLQ_HEADERS_CUT]), int(notes[DLQ_HEADERS_DROPPED])
        assert len(kept) == len(original_headers) - dropped
        assert sum(1 for h in kept if h not in original_headers) == cut <= 1
    else:
        assert kept == original_headers
    # What fits whole is kept whole: small messages are copied as they came.
    if (key_size or 0) + (value_size or 0) + sum(n + v + 10 for n, v in header_sizes) < 50_000:
        assert (key_, value, kept) == (original_key, original_value, original_headers)


# --- a DLQ that takes nothing ------------------------------------------------------------------

HELD = "DLQ did not take a message; holding the partition there"


@pytest.mark.django_db
def test_a_dlq_that_takes_nothing_holds_the_partition_until_it_does(caplog):
    start = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(minutes=10)
    worker, consumer, producer = worker_create(backoff_initial=0.001, backoff_max=0.004)
    readings = [message("ivy", start + timedelta(seconds=s)) for s in range(3)]
    consumer.add([readings[0], (readings[0][0], b"not json"), readings[1], readings[2]])
    # First refused by produce() itself, then twice in the delivery report, then taken.
    producer.refuse = 1
    producer.fail, producer.fail_code = 2, KafkaError.UNKNOWN_TOPIC_OR_PART
    caplog.set_level(logging.INFO, logger="vitals")
    before = registry_samples("icu_consumer_")

    stalls = []
    for _ in range(3):
        assert worker.process_batch() == 4
        assert consumer.stored == []  # nothing committed past the message
        assert consumer.next == 0  # the next consume() returns the same batch
        stalls.append(
            ConsumerStall.objects.values_list(
                "topic", "partition", "offset", "error", "attempts"
            ).get()
        )

    assert stalls == [
        ("vitals", 0, 1, "MSG_SIZE_TOO_LARGE", 1),
        ("vitals", 0, 1, "UNKNOWN_TOPIC_OR_PART", 2),
        ("vitals", 0, 1, "UNKNOWN_TOPIC_OR_PART", 3),
    ]
    held = [r for r in caplog.records if r.getMessage() == HELD]
    assert [(r.levelname, r.partition, r.offset, r.error) for r in held] == [
        ("ERROR", 0, 1, "MSG_SIZE_TOO_LARGE"),
        ("ERROR", 0, 1, "UNKNOWN_TOPIC_OR_PART"),
        ("ERROR", 0, 1, "UNKNOWN_TOPIC_OR_PART"),
    ]
    retries = [r for r in caplog.records if r.getMessage() == "batch not stored, will retry"]
    assert [r.retry_in_s for r in retries] == [0.001, 0.002, 0.004]  # backoff, up to its max
    assert changes(before, registry_samples("icu_consumer_")) == {
        key("icu_consumer_dlq_failures_total", error="MSG_SIZE_TOO_LARGE"): 1,
        key("icu_consumer_dlq_failures_total", error="UNKNOWN_TOPIC_OR_PART"): 2,
        key("icu_consumer_batches_retried_total"): 3,
        key("icu_consumer_dlq_blocked"): 1,
    }
    assert worker.stalled == {("vitals", 0)}

    # The DLQ takes it: the batch completes, the partition moves, every sign of it clears.
    assert worker.process_batch() == 4
    assert consumer.stored == [("vitals", 0, 4)]
    assert not ConsumerStall.objects.exists()
    assert worker.stalled == set()
    assert registry_samples("icu_consumer_dlq_blocked") == {key("icu_consumer_dlq_blocked"): 0}
    # Two copies failed in their delivery reports (refused ones never got in), one delivered.
    assert len(producer.produced) == 3
    topic, dlq_key, value, headers = producer.produced[-1]
    assert (topic, dlq_key, value) == ("vitals.dlq", readings[0][0], b"not json")
    assert dict(headers)[DLQ_REASON] == b"invalid_json"
    assert dict(headers)[DLQ_OFFSET] == b"1"
    assert PatientMetric.objects.count() == 3
    assert [r.getMessage() for r in caplog.records].count(
        "DLQ takes messages again; partitions moving"
    ) == 1
    # Counted once, when the batch completed.
    assert (worker.totals.invalid, worker.totals.invalid_by_reason) == (1, {"invalid_json": 1})
