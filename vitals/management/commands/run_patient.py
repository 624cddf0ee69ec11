import heapq
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta

from confluent_kafka import KafkaError, Message
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from icu.exceptions import KafkaUnavailable
from icu.kafka import broker_check, producer_create
from icu.process import stop_on_signals
from vitals.contract import reading_to_message
from vitals.emulator import PatientEmulator, patient_uuid_for_name

logger = logging.getLogger("vitals.emulator")

SUMMARY_EVERY_S = 10.0
ONE_MS = timedelta(milliseconds=1)
# With this many patients or fewer, every reading is logged; beyond, a summary every 10 s.
LOG_EACH_READING_UP_TO = 5


class Command(BaseCommand):
    help = """Emulate bedside monitors: produce vital-sign readings to Kafka.

Each patient sends one reading every --interval seconds (default METRICS_INTERVAL) to topic
KAFKA_TOPIC, keyed by the patient's uuid. Values drift like a real patient's and now and then
deteriorate (tachycardia, desaturation, fever, hypotension...). The uuid is derived from the
name, so a restarted emulator continues the same patient. Ctrl-C or SIGTERM flushes what is
in flight and exits; the exit status is non-zero if any reading was not delivered.

examples:
  python manage.py run_patient --name bob
  python manage.py run_patient --name alice --name bob --name carol --interval 1
  python manage.py run_patient --patients 100 --interval 1 --seed 7
  python manage.py run_patient --name bob --count 10 --interval 0   # ten readings, at once
"""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--name",
            action="append",
            default=[],
            help="Patient name; repeat for several patients in one process.",
        )
        parser.add_argument(
            "--patients",
            type=int,
            default=0,
            metavar="N",
            help="Also emulate N patients named bed-001, bed-002, ...",
        )
        parser.add_argument(
            "--uuid",
            default=None,
            help="The patient's uuid when one --name is given (default: PATIENT_UUID if set, "
            "else a uuid derived from the name).",
        )
        parser.add_argument(
            "--interval",
            type=float,
            default=None,
            help="Seconds between a patient's readings (default METRICS_INTERVAL, now "
            f"{settings.METRICS_INTERVAL:g}); 0 sends as fast as possible.",
        )
        parser.add_argument(
            "--count", type=int, default=None, help="Stop after N readings per patient."
        )
        parser.add_argument("--seed", type=int, default=None, help="Seed for reproducible values.")
        parser.add_argument("--topic", default=None, help="Topic (default: KAFKA_TOPIC).")
        parser.add_argument(
            "--broker-timeout",
            type=float,
            default=5.0,
            help="Seconds to wait for the broker at start before giving up (default 5).",
        )

    def handle(self, *args: object, **options: object) -> None:
        emulators = self._emulators(options)
        interval = options["interval"]
        interval = settings.METRICS_INTERVAL if interval is None else interval
        if interval < 0:
            raise CommandError("--interval must be 0 or more.")
        if options["count"] is not None and options["count"] < 1:
            raise CommandError("--count must be 1 or more.")
        topic = options["topic"] or settings.KAFKA_TOPIC

        producer = producer_create(
            # Fail a reading that cannot be delivered within a minute rather than five: a
            # bedside monitor's reading is worth little once it is that stale.
            **{"message.timeout.ms": 60_000, "queue.buffering.max.messages": 1_000_000}
        )
        try:
            broker_check(producer, timeout=options["broker_timeout"], topics=(topic,))
        except KafkaUnavailable as exc:
            raise CommandError(exc.message) from None

        logger.info(
            "emulating patients",
            extra={
                "patients": len(emulators),
                "names": [e.name for e in emulators[:10]],
                "interval_s": interval,
                "topic": topic,
                "bootstrap_servers": settings.KAFKA_BOOTSTRAP_SERVERS,
            },
        )
        with stop_on_signals() as stop:
            emitter = _Emitter(
                producer=producer,
                topic=topic,
                log_each=len(emulators) <= LOG_EACH_READING_UP_TO or options["verbosity"] >= 2,
            )
            try:
                _run_schedule(emulators, interval, options["count"], emitter, stop.is_set)
            finally:
                remaining = producer.flush(30)
                emitter.log_summary("emulator stopped", remaining=remaining)
        if remaining or emitter.failed:
            raise CommandError(
                f"{remaining + emitter.failed} reading(s) were not delivered to {topic} at "
                f"{settings.KAFKA_BOOTSTRAP_SERVERS}."
            )

    def _emulators(self, options: dict) -> list[PatientEmulator]:
        names: list[str] = list(options["name"])
        if options["patients"] < 0:
            raise CommandError("--patients must be 0 or more.")
        names += [f"bed-{i:03d}" for i in range(1, options["patients"] + 1)]
        if not names:
            raise CommandError("Name at least one patient: --name bob, or --patients N.")
        if len(set(names)) != len(names):
            raise CommandError("Each --name must be different.")

        single = len(options["name"]) == 1 and not options["patients"]
        if options["uuid"] and not single:
            raise CommandError("--uuid goes with exactly one --name.")
        explicit_uuid = options["uuid"] or (settings.PATIENT_UUID if single else None)
        uuids = []
        for name in names:
            if explicit_uuid:
                try:
                    uuids.append(uuid.UUID(explicit_uuid))
                except ValueError:
                    raise CommandError(f"{explicit_uuid!r} is not a uuid.") from None
            else:
                uuids.append(patient_uuid_for_name(name))
        return [
            PatientEmulator.create(name=name, patient_uuid=u, seed=options["seed"])
            for name, u in zip(names, uuids, strict=True)
        ]


class _Emitter:
    """Produces readings and keeps count of what the broker acknowledged."""

    def __init__(self, *, producer, topic: str, log_each: bool) -> None:
        self.producer = producer
        self.topic = topic
        self.log_each = log_each
        self.produced = self.delivered = self.failed = 0
        self.started = self.last_summary = time.monotonic()

    def on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self.delivered += 1
            return
        self.failed += 1
        logger.error(
            "reading not delivered",
            extra={"error": error.str(), "patient_uuid": (message.key() or b"").decode()},
        )

    def emit(self, reading) -> None:
        key, value = reading_to_message(reading)
        while True:
            try:
                self.producer.produce(
                    self.topic, key=key, value=value, on_delivery=self.on_delivery
                )
                break
            except BufferError:
                self.producer.poll(0.05)  # local queue full: serve deliveries, then retry
        self.produced += 1
        if self.log_each:
            logger.info(
                "reading",
                extra={
                    "patient_uuid": str(reading.patient_uuid),
                    "patient": reading.patient_name,
                    "pulse": reading.pulse,
                    "resp_rate": reading.resp_rate,
                    "bp": reading.bp,
                    "spo2": reading.spo2,
                    "temperature": reading.temperature,
                },
            )
        now = time.monotonic()
        if now - self.last_summary >= SUMMARY_EVERY_S:
            self.log_summary("emulator progress")
            self.last_summary = now

    def log_summary(self, message: str, remaining: int = 0) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        logger.info(
            message,
            extra={
                "produced": self.produced,
                "delivered": self.delivered,
                "failed": self.failed,
                "undelivered": remaining,
                "rate_per_s": round(self.produced / elapsed, 1),
            },
        )


def _run_schedule(
    emulators, interval: float, count: int | None, emitter: _Emitter, stopped
) -> None:
    """Send each patient's readings on a fixed grid of deadlines (no drift: a late tick does
    not push the next one back), patients spread evenly over the interval."""
    start = time.monotonic()
    queue = [(start + interval * i / len(emulators), i) for i in range(len(emulators))]
    heapq.heapify(queue)
    sent = [0] * len(emulators)
    last_time: list[datetime | None] = [None] * len(emulators)
    while queue and not stopped():
        due, i = queue[0]
        wait = due - time.monotonic()
        if wait > 0:
            # Serve delivery reports while waiting; wake at least every 0.1 s for signals.
            emitter.producer.poll(min(wait, 0.1))
            continue
        heapq.heappop(queue)
        # The contract carries milliseconds: compare at that precision, or two readings
        # 0.4 ms apart would become one.
        now = datetime.now(tz=UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        previous = last_time[i]
        # Readings of one patient are strictly ordered in time: (patient, measured_at) is unique.
        measured_at = now if previous is None or now > previous else previous + ONE_MS
        dt = interval if previous is None else (measured_at - previous).total_seconds()
        emitter.emit(emulators[i].reading(measured_at, dt or interval))
        last_time[i] = measured_at
        sent[i] += 1
        if count is None or sent[i] < count:
            heapq.heappush(queue, (due + interval, i))
        emitter.producer.poll(0)
