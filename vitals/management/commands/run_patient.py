import heapq
import logging
import math
import re
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

from confluent_kafka import KafkaError, Message
from django.conf import settings
from django.core.management.base import (
    CommandError,
    CommandParser,
)

from core.cli import ExamplesCommand
from core.exceptions import KafkaUnavailable
from core.kafka import BrokerOutage, broker_check, producer_create
from core.metrics import EmulatorMetrics, emulator_metrics, metrics_arguments, metrics_serve
from core.process import stop_on_signals
from vitals.contract import patient_name_parse, reading_to_message
from vitals.emulator import (
    RANDOM,
    RANDOM_WEIGHTS,
    SCENARIO_CHOICES,
    SCENARIOS,
    PatientEmulator,
    patient_uuid_for_name,
)
from vitals.errors import InvalidReading

logger = logging.getLogger("vitals.emulator")

SUMMARY_EVERY_S = 10.0
ONE_MS = timedelta(milliseconds=1)
# With this many patients or fewer, every reading is logged; beyond, a summary every 10 s.
LOG_EACH_READING_UP_TO = 5


class Command(ExamplesCommand):
    help = """Emulate bedside monitors: produce vital-sign readings to Kafka.

Each patient sends one reading every --interval seconds (default METRICS_INTERVAL) to topic
KAFKA_TOPIC, keyed by the patient's uuid. Each patient has a hidden physiology that follows a
--scenario (default stable); values drift like a real patient's, with the signs moving together
(fever raises the pulse, hypoxia the breathing rate, shock lowers the pressure). A nurse puts a
patient whose SpO2 stays below 92% on oxygen. --scenario random gives each patient a scenario
of its own (most of them stable): a mixed ward. NAME:SCENARIO sets one patient's scenario
(an unknown one is refused, as is a name that the consumer would refuse).

--speed compresses time: each reading advances the physiology by interval x speed seconds
while timestamps stay wall-clock. The uuid is derived from the name (without any :SCENARIO),
so a restarted emulator continues the same patient. Ctrl-C or SIGTERM flushes what is in
flight and exits; the exit status is non-zero if any reading was not delivered.
--metrics-port serves Prometheus metrics (readings produced, delivered, failed; patients);
with --count, --metrics-linger keeps them served a while after the last reading.

scenarios:
{scenarios}

examples:
  python manage.py run_patient --name bob
  python manage.py run_patient --name bob:sepsis --speed 60   # 6 h of sepsis in 6 minutes
  python manage.py run_patient --name alice --name bob:cardiac_arrest --interval 1
  python manage.py run_patient --patients 20 --scenario random --seed 7   # a mixed ward
  python manage.py run_patient --patients 100 --interval 1 --artefacts
  python manage.py run_patient --name bob --count 10 --interval 0   # ten readings, at once
  python manage.py run_patient --patients 20 --metrics-port 9101   # http://127.0.0.1:9101/metrics
""".format(
        scenarios="\n".join(
            [f"  {name:<20} {scenario.description}" for name, scenario in SCENARIOS.items()]
            + [
                f"  {RANDOM:<20} one drawn per patient (seeded): "
                f"{RANDOM_WEIGHTS['stable']:.0%} stable, the rest deteriorate"
            ]
        )
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--name",
            action="append",
            default=[],
            metavar="NAME[:SCENARIO]",
            help="Patient name, optionally with its own scenario (bob:sepsis); repeat for "
            "several patients in one process.",
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
        parser.add_argument(
            "--scenario",
            choices=SCENARIO_CHOICES,
            default="stable",
            metavar="SCENARIO",
            help="What happens to the patients (default stable; see scenarios above); random: one "
            "drawn per patient. A NAME:SCENARIO overrides it for that patient.",
        )
        parser.add_argument(
            "--speed",
            type=float,
            default=1.0,
            help="Simulated seconds per wall-clock second (default 1): each reading advances "
            "the physiology by interval x speed; timestamps stay wall-clock.",
        )
        parser.add_argument(
            "--artefacts",
            action="store_true",
            help="Now and then a sensor artefact (SpO2 probe off, motion spike), marked as such.",
        )
        parser.add_argument("--seed", type=int, default=None, help="Seed for reproducible values.")
        parser.add_argument("--topic", default=None, help="Topic (default: KAFKA_TOPIC).")
        parser.add_argument(
            "--broker-timeout",
            type=float,
            default=5.0,
            help="Seconds to wait for the broker at start before giving up (default 5).",
        )
        metrics_arguments(parser)
        parser.add_argument(
            "--metrics-linger",
            type=float,
            default=0.0,
            metavar="SECONDS",
            help="With --count and --metrics-port: keep serving the metrics for SECONDS after "
            "the last reading, so that a scraper gets the final counts (Ctrl-C ends it sooner).",
        )

    def handle(self, *args: object, **options: object) -> None:
        emulators = emulators_build(
            names=options["name"],
            patients=options["patients"],
            patient_uuid=options["uuid"],
            scenario=options["scenario"],
            seed=options["seed"],
            artefacts=options["artefacts"],
        )
        interval = options["interval"]
        interval = settings.METRICS_INTERVAL if interval is None else interval
        if interval < 0:
            raise CommandError("--interval must be 0 or more.")
        if options["count"] is not None and options["count"] < 1:
            raise CommandError("--count must be 1 or more.")
        speed = options["speed"]
        if not (math.isfinite(speed) and speed > 0):
            raise CommandError("--speed must be a number more than 0.")
        if options["metrics_linger"] < 0:
            raise CommandError("--metrics-linger must be 0 or more.")
        topic = options["topic"] or settings.KAFKA_TOPIC

        with ExitStack() as stack:
            # Before the broker check: a port in use is reported at once.
            metrics_url = metrics_serve(stack, options)
            self.emulate(emulators, interval, speed, topic, metrics_url, options)

    def emulate(
        self,
        emulators: list[PatientEmulator],
        interval: float,
        speed: float,
        topic: str,
        metrics_url: str | None,
        options: dict,
    ) -> None:
        metrics = emulator_metrics()
        # A broker lost while running is logged once, and again when deliveries resume; the
        # readings meanwhile wait in the producer's queue.
        outage = BrokerOutage(logger, "producer")
        producer = producer_create(
            # Fail a reading that cannot be delivered within a minute rather than five: a
            # bedside monitor's reading is worth little once it is that stale.
            **{
                "message.timeout.ms": 60_000,
                "queue.buffering.max.messages": 1_000_000,
                "error_cb": outage.error_cb,
            }
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
                "speed": speed,
                "artefacts": options["artefacts"],
                "scenarios": dict(Counter(e.scenario for e in emulators)),
                "topic": topic,
                "bootstrap_servers": settings.KAFKA_BOOTSTRAP_SERVERS,
            },
        )
        for e in emulators:
            logger.info(
                "patient scenario",
                extra={
                    "patient": e.name,
                    "patient_uuid": str(e.patient_uuid),
                    "scenario": e.scenario,
                    "develops_over_s": SCENARIOS[e.scenario].duration_s,
                },
            )
        metrics.patients.set(len(emulators))
        with stop_on_signals() as stop:
            emitter = _Emitter(
                producer=producer,
                topic=topic,
                log_each=len(emulators) <= LOG_EACH_READING_UP_TO or options["verbosity"] >= 2,
                metrics=metrics,
                outage=outage,
            )
            try:
                _run_schedule(
                    emulators, interval, options["count"], emitter, stop.is_set, speed=speed
                )
            finally:
                remaining = producer.flush(30)
                emitter.log_summary("emulator stopped", remaining=remaining)
            # Only reached without a signal once --count is done.
            linger = options["metrics_linger"]
            if metrics_url and linger and not stop.is_set():
                logger.info(
                    "serving the final metrics", extra={"url": metrics_url, "for_s": linger}
                )
                stop.wait(linger)
        if remaining or emitter.failed:
            raise CommandError(
                f"{remaining + emitter.failed} reading(s) were not delivered to {topic} at "
                f"{settings.KAFKA_BOOTSTRAP_SERVERS}."
            )


def name_scenario_split(text: str) -> tuple[str, str | None]:
    """`bob:sepsis` -> ("bob", "sepsis"); a name whose part after the last ':' is not a word
    (`ward:3`, `bob:`) is a name as a whole -> (text, None). A word there is meant as a
    scenario: an unknown one (`bob:foo`, `bob:Sepsis`) is a CommandError listing the known
    ones, not a stable patient called "bob:foo"."""
    name, colon, scenario = text.rpartition(":")
    if not (colon and name and re.fullmatch(r"[A-Za-z_]+", scenario)):
        return text, None
    if scenario not in SCENARIO_CHOICES:
        raise CommandError(
            f"--name {text!r}: unknown scenario {scenario!r}; one of {', '.join(SCENARIO_CHOICES)}."
        )
    return name, scenario


def name_check(name: str) -> None:
    """A name the consumer would refuse (vitals/contract.py) is refused here, before a reading
    is produced: otherwise every reading of the patient would land in the DLQ."""
    try:
        patient_name_parse(raw=name)
    except InvalidReading as exc:
        raise CommandError(f"--name {name!r}: {exc}.") from None


def emulators_build(
    *,
    names: list[str],
    patients: int,
    patient_uuid: str | None,
    scenario: str,
    seed: int | None,
    artefacts: bool,
) -> list[PatientEmulator]:
    """The patients the options ask for; raises CommandError on a bad combination. Pure: no
    broker, so every argument error is reported before Kafka is touched."""
    if scenario not in SCENARIO_CHOICES:
        raise CommandError(f"Unknown scenario {scenario!r}; one of {', '.join(SCENARIO_CHOICES)}.")
    wanted = [name_scenario_split(text) for text in names]
    if patients < 0:
        raise CommandError("--patients must be 0 or more.")
    wanted += [(f"bed-{i:03d}", None) for i in range(1, patients + 1)]
    if not wanted:
        raise CommandError("Name at least one patient: --name bob, or --patients N.")
    for name, _ in wanted:
        name_check(name)
    bare = [name for name, _ in wanted]
    if len(set(bare)) != len(bare):
        raise CommandError("Each --name must be different.")

    single = len(names) == 1 and not patients
    if patient_uuid and not single:
        raise CommandError("--uuid goes with exactly one --name.")
    explicit_uuid = patient_uuid or (settings.PATIENT_UUID if single else None)
    if explicit_uuid:
        try:
            uuid.UUID(explicit_uuid)
        except ValueError:
            raise CommandError(f"{explicit_uuid!r} is not a uuid.") from None
    return [
        PatientEmulator.create(
            name=name,
            patient_uuid=uuid.UUID(explicit_uuid) if explicit_uuid else patient_uuid_for_name(name),
            seed=seed,
            scenario=own or scenario,
            artefacts=artefacts,
        )
        for name, own in wanted
    ]


class _Emitter:
    """Produces readings and keeps count of what the broker acknowledged."""

    def __init__(
        self,
        *,
        producer,
        topic: str,
        log_each: bool,
        metrics: EmulatorMetrics | None = None,
        outage: BrokerOutage | None = None,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.log_each = log_each
        self.metrics = metrics or emulator_metrics()
        self.outage = outage
        self.produced = self.delivered = self.failed = 0
        self.started = self.last_summary = time.monotonic()

    def on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self.delivered += 1
            self.metrics.delivered.inc()
            if self.outage:
                self.outage.reachable()
            return
        self.failed += 1
        self.metrics.failures.labels(error.name()).inc()
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
        self.metrics.produced.inc()
        if self.log_each:
            logger.info(
                "reading",
                extra={
                    "patient_uuid": str(reading.patient_uuid),
                    "patient": reading.patient_name,
                    "measured_at": reading.measured_at.isoformat(timespec="milliseconds"),
                    "pulse": reading.pulse,
                    "resp_rate": reading.resp_rate,
                    "bp": reading.bp,
                    "spo2": reading.spo2,
                    "temperature": reading.temperature,
                    "on_oxygen": reading.on_oxygen,
                    "consciousness": reading.consciousness,
                    "artefact": reading.artefact,
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
    emulators, interval: float, count: int | None, emitter: _Emitter, stopped, speed: float = 1.0
) -> None:
    """Send each patient's readings on a fixed grid of deadlines (no drift: a late tick does
    not push the next one back), patients spread evenly over the interval. The physiology
    advances by the wall-clock time between two readings times `speed`."""
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
        emitter.emit(emulators[i].reading(measured_at, (dt or interval) * speed))
        last_time[i] = measured_at
        sent[i] += 1
        if count is None or sent[i] < count:
            heapq.heappush(queue, (due + interval, i))
        emitter.producer.poll(0)
