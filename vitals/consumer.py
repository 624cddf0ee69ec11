"""The vitals consumer: Kafka batches in, one database transaction per batch out.

Delivery is at-least-once with an exactly-once effect:
- offsets are *stored* only after the batch's transaction has committed (and its invalid
  messages are safely in the DLQ); librdkafka commits stored offsets in the background, on
  rebalance and on close;
- a re-delivered reading hits the (patient, measured_at) unique constraint and is skipped;
  a reading of the same patient and time with other values is not a replay: it goes to the
  DLQ as `conflicting_duplicate` (the stored one stays).

Failure handling, by kind:
- a message that breaks the contract is forwarded to the DLQ with its reason in a header,
  and the batch goes on: a poison message never stalls the partition;
- a database that is unreachable or locked is not the message's fault: nothing is stored or
  committed, the consumer seeks back to the start of the batch and retries with backoff;
- a reading the database itself rejects (a constraint the validator missed) is isolated by
  storing the batch reading by reading, and only that reading goes to the DLQ.

Alarms are judged on the readings a batch newly stored, in the same transaction, and reach
the alarms topic through an outbox (`AlarmEvent`): published after the commit, and swept
again every few seconds, so that neither a crash nor a broker hiccup loses an alarm change.

Prometheus metrics (core/metrics.py) are counted once per completed batch, with its totals;
the consumer lag is refreshed every `lag_interval` seconds from librdkafka's cached high
watermarks, without a broker round trip.
"""

import gc
import json
import logging
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from django.db import DatabaseError, DataError, IntegrityError, connection, transaction

from core.health import database_write_check
from core.kafka import MESSAGE_MAX_BYTES_DEFAULT
from core.metrics import ConsumerMetrics, consumer_metrics
from vitals.alarm_engine import AlarmEngine
from vitals.contract import REASONS, Reading, reading_parse_fast
from vitals.errors import InvalidReading
from vitals.selectors import alarm_events_unpublished
from vitals.services import (
    PatientCache,
    StoreResult,
    alarm_escalation_sweep,
    alarm_events_mark_published,
    alarm_no_data_sweep,
    consumer_stall_clear,
    consumer_stall_record,
    reading_bulk_store,
)
from vitals.tile_services import patient_tiles_refresh_or_drop

logger = logging.getLogger(__name__)

# DLQ headers, after Kafka Connect's: the original key, value and headers are kept as they
# were, and these say why and where from.
DLQ_REASON = "dlq.reason"
DLQ_DETAIL = "dlq.detail"
DLQ_TOPIC = "dlq.source.topic"
DLQ_PARTITION = "dlq.source.partition"
DLQ_OFFSET = "dlq.source.offset"
DLQ_FAILED_AT = "dlq.failed_at"
DLQ_TRUNCATED = "dlq.value.truncated_from"
DLQ_KEY_TRUNCATED = "dlq.key.truncated_from"
# The original headers' size (as record headers: names, values and their lengths) when any
# was cut or dropped, and how many were cut and dropped.
DLQ_HEADERS_TRUNCATED = "dlq.headers.truncated_from"
DLQ_HEADERS_CUT = "dlq.headers.cut"
DLQ_HEADERS_DROPPED = "dlq.headers.dropped"
DLQ_MAX_VALUE_BYTES = 256 * 1024  # under the broker's default 1 MB message limit, with room
DLQ_MAX_DETAIL_BYTES = 1024
# Room left in a DLQ copy, beyond key + value + headers, for what librdkafka and the broker
# count on top (a record's own lengths, offsets and timestamps are some 20 bytes; varints of
# header lengths are counted in `_header_bytes`) and for the truncation headers themselves.
DLQ_OVERHEAD_BYTES = 1024


@dataclass
class ConsumerTotals:
    """What this consumer has done since it started; logged periodically and at exit."""

    consumed: int = 0
    stored: int = 0
    duplicates: int = 0
    invalid: int = 0
    invalid_by_reason: Counter = field(default_factory=Counter)
    batches: int = 0
    retries: int = 0
    alarm_events: int = 0


class RetryBatch(Exception):
    """The batch could not be completed for a reason that is not the messages' fault."""


@dataclass
class BatchOutcome:
    """What storing and forwarding one batch did."""

    result: StoreResult
    alarm_events: int
    rejected: list[tuple[Message, InvalidReading]]
    # The database transaction(s) of the valid readings; None when there were none.
    write_seconds: float | None
    # Signs the contract refused in readings kept without them, by reason.
    signs_refused: Counter = field(default_factory=Counter)


class ConsumerHealth:
    """Whether the consumer can write the database, for its /readyz (the metrics port: read
    from the server's thread, set from the consumer's loop). Not ready from a failed write
    (a batch, or the idle probe) until one succeeds: the reason, since when, how many
    attempts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._error: str | None = None
        self._since: datetime | None = None
        self._attempts = 0

    def write_failed(self, error: str) -> None:
        with self._lock:
            if self._error is None:
                self._since = datetime.now(tz=UTC)
                self._attempts = 0
            self._error = error
            self._attempts += 1

    def write_succeeded(self) -> bool:
        """Ready again; True when it was not."""
        with self._lock:
            was_failing = self._error is not None
            self._error, self._since, self._attempts = None, None, 0
        return was_failing

    def readiness(self) -> tuple[bool, dict]:
        with self._lock:
            if self._error is None:
                return True, {"status": "ready", "checks": {"database_write": {"ok": True}}}
            check = {
                "ok": False,
                "error": self._error,
                "since": self._since.isoformat(),
                "attempts": self._attempts,
            }
        return False, {"status": "not_ready", "checks": {"database_write": check}}


# Container allocations between two young collections of a consumer (Python's default: 700).
# A batch of 1,000 readings allocates some hundred thousand objects that live until the batch
# ends: at 700, the collector walked them again and again (1,100 young, 100 middle and 9 full
# collections in 19 batches, a fifth of the consumer's time, issue 20). Cycles are still
# collected, a batch later at most.
GC_YOUNG_THRESHOLD = 20_000


@contextmanager
def consumer_gc_tuned() -> Iterator[None]:
    """Around the consumer's loop: what is alive at its start (Django, the apps, the clients)
    moved to the permanent generation (a full collection walks only what batches leave
    behind), and young collections every GC_YOUNG_THRESHOLD allocations instead of 700; both
    undone when the loop ends (a test runs the command in its own process). Measured on the
    consumer's loop (1,000 patients x 20 readings, SQLite): the collector's time 1.0 -> 0.2 s,
    the consumer's CPU 149 -> 131 us a reading."""
    threshold = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


class VitalsConsumer:
    """One step at a time: `process_batch()` consumes, validates, stores, forwards and stores
    offsets for one batch. The management command loops over it; tests call it directly."""

    def __init__(
        self,
        *,
        consumer: Consumer,
        producer: Producer,
        dlq_topic: str,
        alarms_topic: str | None = None,
        batch_size: int = 1000,
        batch_timeout: float = 0.1,
        max_future: timedelta = timedelta(minutes=5),
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        stop_event: threading.Event | None = None,
        alarm_sweep_interval: float = 2.0,
        no_data_after: float | None = None,
        escalate_after: float | None = None,
        clock_skew_warn: float = 30.0,
        lag_interval: float = 5.0,
        metrics: ConsumerMetrics | None = None,
        dlq_max_bytes: int = MESSAGE_MAX_BYTES_DEFAULT,
        health: ConsumerHealth | None = None,
        write_probe_interval: float = 5.0,
    ) -> None:
        self.consumer = consumer
        # Whether it can write the database (its /readyz): every batch says so; while idle,
        # a probe every write_probe_interval seconds (core.health.database_write_check).
        self.health = health or ConsumerHealth()
        self.write_probe_interval = write_probe_interval
        self._last_write = time.monotonic()
        # One producer for the DLQ and the alarms topic.
        self.producer = producer
        self.dlq_topic = dlq_topic
        # The producer's message.max.bytes: no DLQ copy is larger (see dlq_copy).
        self.dlq_max_bytes = dlq_max_bytes
        # Partitions held at a message the DLQ did not take; and those just assigned, which
        # a previous owner may have left held (their ConsumerStall rows go on their first
        # completed batch).
        self.stalled: set[tuple[str, int]] = set()
        self._stall_unknown: set[tuple[str, int]] = set()
        self.alarms_topic = alarms_topic
        self.alarm_engine = AlarmEngine(clock_skew_warn=clock_skew_warn)
        # Its patients across batches; forgotten with the alarm memory (see PatientCache).
        self.patient_cache = PatientCache()
        # Every alarm_sweep_interval seconds, busy or idle: raise `no_data` for monitors silent
        # for no_data_after seconds, escalate high alarms unanswered for escalate_after (None:
        # not this consumer's job), publish the outbox.
        self.alarm_sweep_interval = alarm_sweep_interval
        self.no_data_after = no_data_after
        self.escalate_after = escalate_after
        self._last_sweep = 0.0
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self.max_future = max_future
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.backoff = 0.0
        self.stop_event = stop_event or threading.Event()
        self.totals = ConsumerTotals()
        self.assigned: set[tuple[str, int]] = set()
        self.metrics = metrics or consumer_metrics(reasons=REASONS)
        self.lag_interval = lag_interval
        self._last_lag = -math.inf  # the first refresh is due at once

    # --- rebalance callbacks (run inside consume()) --------------------------------------
    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Cooperative-sticky rebalancing hands over only the partitions added (and revokes only
        # those taken away): add to the set, never replace it.
        self.assigned |= {(p.topic, p.partition) for p in partitions}
        self._stall_unknown |= {(p.topic, p.partition) for p in partitions}
        logger.info(
            "partitions assigned", extra={"partitions": sorted(p.partition for p in partitions)}
        )

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Offsets stored so far are committed by librdkafka as the partitions go. The alarm
        # memory of their patients goes too: whoever takes them over rebuilds it.
        self.assigned -= {(p.topic, p.partition) for p in partitions}
        # A stall of theirs is the new owner's to clear (its row stays until then).
        self.stalled -= {(p.topic, p.partition) for p in partitions}
        self._stall_unknown -= {(p.topic, p.partition) for p in partitions}
        self.metrics.dlq_blocked.set(len(self.stalled))
        self.alarm_engine.forget()
        self.patient_cache.forget()
        # Their lag is the new owner's to report now.
        for p in partitions:
            self.metrics.lag.remove(p.topic, str(p.partition))
        logger.info(
            "partitions revoked", extra={"partitions": sorted(p.partition for p in partitions)}
        )

    # --- one step ----------------------------------------------------------------------------
    def process_batch(self) -> int:
        """Handle one batch; return how many messages it held (0 when the topic was idle)."""
        messages = self.consumer.consume(num_messages=self.batch_size, timeout=self.batch_timeout)
        records = []
        for message in messages:
            error = message.error()
            if error is None:
                records.append(message)
            elif error.fatal():
                raise KafkaException(error)
            elif error.code() != KafkaError._PARTITION_EOF:
                logger.warning("consumer error", extra={"kafka_error": error.str()})
        if not records:
            self._sweep_alarms_if_due()
            self._update_lag_if_due()
            self._probe_write_if_due()
            return 0

        try:
            outcome = self._store_and_forward(records)
        except RetryBatch as exc:
            self._rewind(records)
            # The sweeps need the database, not the batch: a consumer held at a batch (the
            # DLQ refusing its copy) must not hold back every silence and escalation.
            self._sweep_alarms_if_due()
            self._update_lag_if_due()
            self._wait_before_retry(str(exc))
            return len(records)

        self.backoff = 0.0
        self._written()
        self._store_offsets(records)
        self._stalls_clear(records)
        result, rejected = outcome.result, outcome.rejected
        totals = self.totals
        totals.batches += 1
        totals.consumed += len(records)
        totals.stored += result.stored
        totals.duplicates += result.duplicates
        totals.invalid += len(rejected)
        totals.invalid_by_reason.update(exc.reason for _, exc in rejected)
        totals.alarm_events += outcome.alarm_events
        self._count(len(records), outcome)
        self._report_name_mismatches(result)
        self._sweep_alarms_if_due(force=outcome.alarm_events > 0)
        self._update_lag_if_due()
        logger.debug(
            "batch stored",
            extra={
                "messages": len(records),
                "stored": result.stored,
                "duplicates": result.duplicates,
                "invalid": len(rejected),
            },
        )
        return len(records)

    def _count(self, messages: int, outcome: BatchOutcome) -> None:
        """The batch's totals into the Prometheus metrics: once per batch, not per message
        (but for the delay histogram, whose every observation is a reading)."""
        m = self.metrics
        m.consumed.inc(messages)
        m.stored.inc(outcome.result.stored)
        m.duplicates.inc(outcome.result.duplicates)
        for reason, count in Counter(exc.reason for _, exc in outcome.rejected).items():
            m.rejected.labels(reason).inc(count)
        for reason, count in outcome.signs_refused.items():
            m.signs_refused.labels(reason).inc(count)
        m.batch_size.observe(messages)
        if outcome.write_seconds is not None:
            m.batch_write.observe(outcome.write_seconds)
        observe = m.reading_delay.observe
        for metric in outcome.result.new:
            # A device clock ahead of ours (allowed up to max_future) counts as no delay:
            # a histogram's sum must not go down.
            observe(max(0.0, (metric.received_at - metric.measured_at).total_seconds()))

    def _report_name_mismatches(self, result: StoreResult) -> None:
        """Readings stored under a patient whose name is not the one they carry: never
        silently (the identity conflict itself is recorded in the batch's transaction)."""
        for mismatch in result.name_mismatches:
            self.metrics.name_mismatches.inc(mismatch.readings)
            logger.warning(
                "patient name differs from the reading's: stored under the uuid",
                extra={
                    "patient_uuid": str(mismatch.patient_uuid),
                    "patient_name": mismatch.patient_name,
                    "name_seen": mismatch.name_seen,
                    "readings": mismatch.readings,
                },
            )

    def _store_and_forward(self, records: list[Message]) -> BatchOutcome:
        now = datetime.now(tz=UTC)
        valid: list[tuple[Message, Reading]] = []
        rejected: list[tuple[Message, InvalidReading]] = []
        for message in records:
            try:
                reading = reading_parse_fast(
                    key=message.key(),
                    value=message.value(),
                    now=now,
                    max_future=self.max_future,
                    sent_at=_sent_at(message),
                )
            except InvalidReading as exc:
                rejected.append((message, exc))
            else:
                valid.append((message, reading))

        started = time.perf_counter()
        try:
            result, events = self._store([reading for _, reading in valid])
        except (IntegrityError, DataError) as exc:
            logger.warning(
                "database rejected the batch; storing reading by reading",
                extra={"error": str(exc)},
            )
            result, events = self._store_one_by_one(valid, rejected)
        except DatabaseError as exc:
            self._write_failed(exc)
            raise RetryBatch(f"database unavailable: {exc}") from exc
        write_seconds = time.perf_counter() - started if valid else None
        if result.conflicting:
            message_of = {id(reading): message for message, reading in valid}
            rejected += [
                (message_of[id(reading)], _conflicting_duplicate(reading))
                for reading in result.conflicting
            ]

        self._forward_to_dlq(rejected)
        return BatchOutcome(
            result=result,
            alarm_events=events,
            rejected=rejected,
            write_seconds=write_seconds,
            signs_refused=Counter(
                refusal.reason for _, reading in valid for refusal in reading.refused
            ),
        )

    def _store(self, readings: list[Reading]) -> tuple[StoreResult, int]:
        """Readings and the alarm changes they cause, in one transaction."""
        try:
            with transaction.atomic():
                result = reading_bulk_store(readings=readings, cache=self.patient_cache)
                events = self.alarm_engine.process(result.new)
                # The ward's snapshot of the patients the batch changed, with the batch.
                # Each patient's last new reading is their latest_metric now: not read back.
                latest = {metric.patient_id: metric for metric in result.new}
                # In a savepoint: a tile that cannot be built is dropped (logged), the batch kept.
                # Its patients' rows are locked already: reading_bulk_store locked every patient
                # of the batch first (patients_lock), and these are some of them.
                patient_tiles_refresh_or_drop(patient_ids=latest, latest=latest, locked=True)
        except DatabaseError:
            # The alarm writes were rolled back with the readings: so must the memory of them.
            self.alarm_engine.forget()
            self.patient_cache.forget()
            raise
        return result, len(events)

    def _store_one_by_one(
        self, valid: list[tuple[Message, Reading]], rejected: list[tuple[Message, InvalidReading]]
    ) -> tuple[StoreResult, int]:
        stored = duplicates = events = 0
        patients = set()
        new, conflicting = [], []
        mismatches = []
        for message, reading in valid:
            try:
                one, one_events = self._store([reading])
            except (IntegrityError, DataError) as exc:
                rejected.append((message, InvalidReading("rejected_by_database", str(exc)[:500])))
                continue
            except DatabaseError as exc:
                raise RetryBatch(f"database unavailable: {exc}") from exc
            stored += one.stored
            duplicates += one.duplicates
            events += one_events
            new += one.new
            conflicting += one.conflicting
            mismatches += one.name_mismatches
            patients.add(reading.patient_uuid)
        result = StoreResult(
            stored=stored,
            duplicates=duplicates,
            patients=len(patients),
            new=new,
            conflicting=conflicting,
            name_mismatches=mismatches,
        )
        return result, events

    def _forward_to_dlq(self, rejected: list[tuple[Message, InvalidReading]]) -> None:
        """Copy each rejected message to the DLQ (bounded by `dlq_copy`) and wait for the
        broker to take them all. Any copy refused, by produce() at once or in its delivery
        report, or not acknowledged in time, holds the batch: RetryBatch, after recording
        which partitions are held at which offset (log, metrics, ConsumerStall for /readyz)."""
        if not rejected:
            return
        # (source message, librdkafka error name) of each copy not taken; delivered count.
        failures: list[tuple[Message, str]] = []
        delivered: list[Message] = []

        def on_delivery_of(source: Message):
            def on_delivery(error: KafkaError | None, _message: Message) -> None:
                if error is None:
                    delivered.append(source)
                else:
                    failures.append((source, error.name()))

            return on_delivery

        failed_at = datetime.now(tz=UTC).isoformat(timespec="milliseconds")
        for message, exc in rejected:
            detail = exc.message.encode("utf-8", "replace")[:DLQ_MAX_DETAIL_BYTES]
            key, value, headers = dlq_copy(
                key=message.key(),
                value=message.value(),  # None (a tombstone) stays None
                headers=list(message.headers() or []),
                extra=[
                    (DLQ_REASON, exc.reason.encode()),
                    (DLQ_DETAIL, detail),
                    (DLQ_TOPIC, message.topic().encode()),
                    (DLQ_PARTITION, str(message.partition()).encode()),
                    (DLQ_OFFSET, str(message.offset()).encode()),
                    (DLQ_FAILED_AT, failed_at.encode()),
                ],
                max_bytes=self.dlq_max_bytes,
            )
            try:
                self._produce(key, value, headers, on_delivery_of(message))
            except KafkaException as error:
                failures.append((message, error.args[0].name()))
            logger.warning(
                "invalid reading sent to the DLQ",
                extra={
                    "reason": exc.reason,
                    "detail": exc.message,
                    "partition": message.partition(),
                    "offset": message.offset(),
                    "key": (message.key() or b"")[:64].decode("utf-8", "replace"),
                    # The key is the patient's uuid by contract; said only when it is one.
                    "patient_uuid": _key_patient_uuid(message.key()),
                },
            )
        self.producer.flush(10)
        # Counted whether the batch completes or not: copies written by an attempt that is
        # then retried are in the DLQ all the same.
        self.metrics.dlq.inc(len(delivered))
        answered = {id(m) for m in delivered} | {id(m) for m, _ in failures}
        failures += [(m, "_FLUSH_TIMEOUT") for m, _ in rejected if id(m) not in answered]
        if failures:
            self._stalls_record(failures)
            raise RetryBatch(
                f"DLQ {self.dlq_topic} did not take {len(failures)} message(s): {failures[0][1]}"
            )

    def _stalls_record(self, failures: list[tuple[Message, str]]) -> None:
        """A partition is held at its first message the DLQ did not take: say so once per
        partition (error log, metrics, a ConsumerStall row for /readyz)."""
        for error in [error for _, error in failures]:
            self.metrics.dlq_failures.labels(error).inc()
        first: dict[tuple[str, int], tuple[Message, str]] = {}
        for message, error in failures:
            tp = (message.topic(), message.partition())
            if tp not in first or message.offset() < first[tp][0].offset():
                first[tp] = (message, error)
        for (topic, partition), (message, error) in sorted(first.items()):
            failed = sum(1 for m, _ in failures if (m.topic(), m.partition()) == (topic, partition))
            logger.error(
                "DLQ did not take a message; holding the partition there",
                extra={
                    "topic": topic,
                    "partition": partition,
                    "offset": message.offset(),
                    "error": error,
                    "messages": failed,
                    "dlq_topic": self.dlq_topic,
                },
            )
            try:
                consumer_stall_record(
                    topic=topic, partition=partition, offset=message.offset(), error=error
                )
            except DatabaseError as exc:
                logger.warning("could not record the stall", extra={"error": str(exc)})
        self.stalled |= set(first)
        self.metrics.dlq_blocked.set(len(self.stalled))

    def _stalls_clear(self, records: list[Message]) -> None:
        """The batch went through: its partitions that were (or may have been) held are not."""
        moved = {(m.topic(), m.partition()) for m in records} & (self.stalled | self._stall_unknown)
        if not moved:
            return
        by_topic: dict[str, list[int]] = {}
        for topic, partition in moved:
            by_topic.setdefault(topic, []).append(partition)
        try:
            for topic, partitions in by_topic.items():
                if consumer_stall_clear(topic=topic, partitions=partitions):
                    logger.info(
                        "DLQ takes messages again; partitions moving",
                        extra={"topic": topic, "partitions": sorted(partitions)},
                    )
        except DatabaseError as exc:
            logger.warning("could not clear the stall", extra={"error": str(exc)})
            return
        self.stalled -= moved
        self._stall_unknown -= moved
        self.metrics.dlq_blocked.set(len(self.stalled))

    def _produce(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: list,
        on_delivery,
        topic: str | None = None,
    ) -> None:
        while True:
            try:
                self.producer.produce(
                    topic or self.dlq_topic,
                    key=key,
                    value=value,
                    headers=headers,
                    on_delivery=on_delivery,
                )
                return
            except BufferError:
                self.producer.poll(0.1)  # local queue full: let deliveries drain

    def _store_offsets(self, records: list[Message]) -> None:
        last: dict[tuple[str, int], int] = {}
        for message in records:
            tp = (message.topic(), message.partition())
            last[tp] = max(last.get(tp, -1), message.offset())
        offsets = [TopicPartition(topic, p, offset + 1) for (topic, p), offset in last.items()]
        try:
            self.consumer.store_offsets(offsets=offsets)
        except KafkaException as exc:
            # The partition was revoked meanwhile: its new owner re-reads from the last commit
            # and the unique constraint absorbs the replay.
            logger.warning("could not store offsets", extra={"error": str(exc)})

    def _rewind(self, records: list[Message]) -> None:
        """Seek every partition of the batch back to its first message, so that the next
        consume() returns the same messages: the consumer's position must not move past a
        batch that was not stored (confluent-kafka-python #796)."""
        first: dict[tuple[str, int], int] = {}
        for message in records:
            tp = (message.topic(), message.partition())
            first[tp] = min(first.get(tp, message.offset()), message.offset())
        for (topic, partition), offset in first.items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                logger.warning(
                    "could not seek back", extra={"partition": partition, "error": str(exc)}
                )

    # --- can it write? ------------------------------------------------------------------------
    def _write_failed(self, exc: DatabaseError) -> None:
        """A write failed for the database's reason: not ready, saying why. The connection is
        closed (outside a transaction: a test's stays), so that the retry opens a new one: a
        SQLite file opened while read-only stays read-only on that connection, and a
        PostgreSQL connection may be broken."""
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not reason.startswith("database cannot be written"):
            reason = f"database cannot be written: {reason}"
        self.health.write_failed(reason)
        if not connection.in_atomic_block:
            connection.close()

    def _written(self) -> None:
        self._last_write = time.monotonic()
        if self.health.write_succeeded():
            logger.info("database written again: ready")

    def _probe_write_if_due(self) -> None:
        """Idle: no batch says whether the database takes writes, a probe does (so that a
        database gone read-only shows before the next reading)."""
        if time.monotonic() - self._last_write < self.write_probe_interval:
            return
        try:
            database_write_check()
        except DatabaseError as exc:
            self._last_write = time.monotonic()
            self._write_failed(exc)
            logger.error("database cannot be written", extra={"error": str(exc)})
            return
        self._written()

    def _wait_before_retry(self, reason: str) -> None:
        self.backoff = min(self.backoff_max, self.backoff * 2 or self.backoff_initial)
        self.totals.retries += 1
        self.metrics.retries.inc()
        logger.error(
            "batch not stored, will retry", extra={"reason": reason, "retry_in_s": self.backoff}
        )
        # Waiting on the event lets SIGTERM cut the backoff short; the alarm sweeps go on
        # every alarm_sweep_interval meanwhile (a backoff grows to backoff_max).
        deadline = time.monotonic() + self.backoff
        while (left := deadline - time.monotonic()) > 0:
            if self.stop_event.wait(min(left, max(self.alarm_sweep_interval, 0.1))):
                return
            self._sweep_alarms_if_due()

    def _sweep_alarms_if_due(self, force: bool = False) -> None:
        """The periodic alarm work, every alarm_sweep_interval, busy or idle; `force`: publish
        the outbox at once (a batch that changed alarms). A forced publish never puts the
        sweeps off: batches changing some alarm every second must not starve them."""
        now = time.monotonic()
        if now - self._last_sweep >= self.alarm_sweep_interval:
            self._last_sweep = now
            self.sweep_alarms()
        elif not force:
            return
        if self.alarms_topic:
            self.publish_alarm_events()

    def sweep_alarms(self) -> int:
        """Raise `no_data` for the silent monitors and escalate the unanswered high alarms;
        return how many events that wrote. Never raises: a database that is away now is
        tried again on the next sweep."""
        events = 0
        try:
            if self.no_data_after is not None:
                events += len(alarm_no_data_sweep(silent_for=timedelta(seconds=self.no_data_after)))
            if self.escalate_after is not None:
                events += len(
                    alarm_escalation_sweep(unanswered_for=timedelta(seconds=self.escalate_after))
                )
            # The sweep ran (the database answered): alarm processing is alive (the pages'
            # "ALARMS NOT PROCESSED" banner when no consumer's is heard; docs/alarms.md).
            from vitals.heartbeat_services import alarm_processing_heartbeat_record

            alarm_processing_heartbeat_record()
        except DatabaseError as exc:
            logger.warning("could not sweep the alarms", extra={"error": str(exc)})
        self.totals.alarm_events += events
        return events

    def publish_alarm_events(self) -> int:
        """Publish the outbox's pending alarm events (this consumer's and the API's, e.g.
        acknowledgements), oldest first; mark those the broker took. Returns how many.

        Never raises: an event that does not get through stays pending for the next sweep.
        Two consumers sweeping at once may publish an event twice; `event_id` lets
        subscribers drop the second copy.
        """
        try:
            pending = alarm_events_unpublished()
        except DatabaseError as exc:
            logger.warning("could not read the alarm outbox", extra={"error": str(exc)})
            return 0
        if not pending:
            return 0
        delivered: list[int] = []

        def on_delivery_of(event_id: int):
            def on_delivery(error: KafkaError | None, _message: Message) -> None:
                if error is None:
                    delivered.append(event_id)

            return on_delivery

        for event in pending:
            value = json.dumps({"event_id": event.pk, **event.payload}, separators=(",", ":"))
            key = event.payload["patient"]["uuid"].encode()
            headers = [("event_id", str(event.pk).encode())]
            self._produce(
                key, value.encode(), headers, on_delivery_of(event.pk), topic=self.alarms_topic
            )
        self.producer.flush(5)
        if len(delivered) < len(pending):
            logger.warning(
                "alarm events not delivered yet, will retry",
                extra={"pending": len(pending) - len(delivered), "topic": self.alarms_topic},
            )
        self.metrics.alarm_events.inc(len(delivered))
        try:
            alarm_events_mark_published(event_ids=delivered)
        except DatabaseError as exc:
            logger.warning("could not mark alarm events published", extra={"error": str(exc)})
        return len(delivered)

    # --- consumer lag ------------------------------------------------------------------------
    def _update_lag_if_due(self) -> None:
        now = time.monotonic()
        if now - self._last_lag >= self.lag_interval:
            self._last_lag = now
            self.update_lag()

    def update_lag(self) -> None:
        """Set the lag gauge of each assigned partition: high watermark minus position.

        The high watermark is the one librdkafka cached from the last fetch response (no broker
        round trip). The position is the offset of the next message this consumer will hand to
        the application; before it has handed any (a restarted consumer with nothing new to
        read), the group's committed offset stands in, which costs one request. A partition
        not fetched yet, or with neither a position nor a commit, is left out until it has one;
        an empty partition has no lag whatever the offsets.
        """
        if not self.assigned:
            return
        partitions = [TopicPartition(topic, p) for topic, p in sorted(self.assigned)]
        try:
            positions = {
                (tp.topic, tp.partition): tp.offset for tp in self.consumer.position(partitions)
            }
            high_low = {
                (tp.topic, tp.partition): self.consumer.get_watermark_offsets(tp, cached=True)
                for tp in partitions
            }
            # Only where it matters: fetched, not empty, and nothing handed out yet.
            unpositioned = [
                tp
                for tp in partitions
                if positions.get((tp.topic, tp.partition), -1) < 0
                and _has_messages(high_low[(tp.topic, tp.partition)])
            ]
            if unpositioned:
                for tp in self.consumer.committed(unpositioned, timeout=2):
                    positions[(tp.topic, tp.partition)] = tp.offset
        except KafkaException as exc:
            logger.debug("could not read the consumer lag", extra={"error": str(exc)})
            return
        for (topic, partition), watermarks in high_low.items():
            position = positions.get((topic, partition), -1)
            if not watermarks or watermarks[1] < 0:
                continue  # not fetched yet
            if not _has_messages(watermarks):
                lag = 0
            elif position >= 0:
                lag = watermarks[1] - position
            else:
                continue
            self.metrics.lag.labels(topic, str(partition)).set(lag)

    def close(self) -> None:
        """Commit stored offsets and leave the group (so that partitions move at once)."""
        self.producer.flush(10)
        self.consumer.close()

    def log_totals(self, message: str = "consumer totals") -> None:
        t = self.totals
        logger.info(
            message,
            extra={
                "consumed": t.consumed,
                "stored": t.stored,
                "duplicates": t.duplicates,
                "invalid": t.invalid,
                "invalid_by_reason": dict(t.invalid_by_reason),
                "batches": t.batches,
                "retries": t.retries,
                "alarm_events": t.alarm_events,
            },
        )


def _header_bytes(name: str | bytes, value: bytes | None) -> int:
    """What a record header counts towards message.max.bytes: its name and value, and (at
    most 5 bytes each) the varints of their lengths."""
    name_bytes = name.encode() if isinstance(name, str) else name
    return len(name_bytes) + len(value or b"") + 10


def _fit_headers(headers: list, room: int) -> tuple[list, int, int]:
    """The headers, in order, within `room` bytes: each kept whole if it fits, else its value
    cut to what is left if its name fits, else dropped. Returns (kept, cut, dropped)."""
    kept, cut, dropped = [], 0, 0
    for name, value in headers:
        size = _header_bytes(name, value)
        if size <= room:
            kept.append((name, value))
            room -= size
            continue
        bare = _header_bytes(name, b"")
        if value and bare < room:
            kept.append((name, value[: room - bare]))
            room = 0
            cut += 1
        else:
            dropped += 1
    return kept, cut, dropped


def _water_fill(sizes: list[int], budget: int) -> list[int]:
    """Share `budget` among parts of these sizes: the smallest whole first, the rest in equal
    shares, so that the largest parts are the ones cut."""
    allowed = [0] * len(sizes)
    for done, i in enumerate(sorted(range(len(sizes)), key=sizes.__getitem__)):
        allowed[i] = min(sizes[i], budget // (len(sizes) - done))
        budget -= allowed[i]
    return allowed


def dlq_copy(
    *,
    key: bytes | None,
    value: bytes | None,
    headers: list,
    extra: list[tuple[str, bytes]],
    max_bytes: int = MESSAGE_MAX_BYTES_DEFAULT,
) -> tuple[bytes | None, bytes | None, list]:
    """The (key, value, headers) to produce to the DLQ for a rejected message: the original
    key, value and headers, then `extra` (the dlq.* headers), within `max_bytes` (the
    producer's message.max.bytes) with DLQ_OVERHEAD_BYTES to spare.

    The value is cut at DLQ_MAX_VALUE_BYTES in any case. When key, value and headers do not
    fit together, the room left by `extra` is shared out largest-last (`_water_fill`): a small
    part is kept whole, the largest are cut. What was cut says so in a header with its
    original size: dlq.key.truncated_from, dlq.value.truncated_from, and for the headers
    dlq.headers.truncated_from (their size), dlq.headers.cut and dlq.headers.dropped (how many).
    """
    budget = max_bytes - DLQ_OVERHEAD_BYTES - sum(_header_bytes(n, v) for n, v in extra)
    headers_size = sum(_header_bytes(n, v) for n, v in headers)
    key_size, value_size = len(key or b""), len(value or b"")
    key_room, value_room, headers_room = _water_fill(
        [key_size, min(value_size, DLQ_MAX_VALUE_BYTES), headers_size], max(budget, 0)
    )
    notes: list[tuple[str, bytes]] = []
    if key_size > key_room:
        notes.append((DLQ_KEY_TRUNCATED, str(key_size).encode()))
        key = key[:key_room]
    if value_size > value_room:
        notes.append((DLQ_TRUNCATED, str(value_size).encode()))
        value = value[:value_room]
    if headers_size > headers_room:
        headers, cut, dropped = _fit_headers(headers, headers_room)
        notes += [
            (DLQ_HEADERS_TRUNCATED, str(headers_size).encode()),
            (DLQ_HEADERS_CUT, str(cut).encode()),
            (DLQ_HEADERS_DROPPED, str(dropped).encode()),
        ]
    return key, value, [*headers, *extra, *notes]


def _conflicting_duplicate(reading: Reading) -> InvalidReading:
    return InvalidReading(
        "conflicting_duplicate",
        f"patient {reading.patient_uuid} has a reading at "
        f"{reading.measured_at.isoformat()} with other values; that one stays",
    )


def _has_messages(watermarks: tuple[int, int] | None) -> bool:
    """(low, high) watermarks of a fetched partition that holds at least one message."""
    return bool(watermarks) and watermarks[1] >= 0 and watermarks[1] != watermarks[0]


def _sent_at(message: Message) -> datetime | None:
    """The message's Kafka timestamp (the producer's CreateTime, or the broker's
    LogAppendTime), None when it has none."""
    kind, milliseconds = message.timestamp()
    if kind == TIMESTAMP_NOT_AVAILABLE or milliseconds <= 0:
        return None
    return datetime.fromtimestamp(milliseconds / 1000, tz=UTC)


def _key_patient_uuid(key: bytes | None) -> str | None:
    """The patient uuid a message's key names, or None when the key is not a uuid."""
    try:
        return str(uuid.UUID((key or b"")[:64].decode()))
    except (UnicodeDecodeError, ValueError):
        return None
