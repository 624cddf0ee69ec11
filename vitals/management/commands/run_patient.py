"""`manage.py run_patient`: the command line of the emulator; the runtime is vitals/emulation.py."""

import math
from contextlib import ExitStack

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from core.cli import ExamplesCommand, broker_timeout_argument
from core.exceptions import KafkaUnavailable
from core.metrics import metrics_arguments, metrics_serve
from core.process import stop_on_signals
from vitals.contract import SCHEMA_VERSIONS
from vitals.emulation import (
    InvalidEmulatorOption,
    UndeliveredReadings,
    emulation_run,
    emulators_build,
)
from vitals.emulator import (
    NIBP_EVERY_S,
    RANDOM,
    RANDOM_WEIGHTS,
    SCENARIO_CHOICES,
    SCENARIOS,
    TEMPERATURE_EVERY_S,
)


class Command(ExamplesCommand):
    help = """Emulate bedside monitors: produce vital-sign readings to Kafka.

Each patient sends one reading every --interval seconds (default METRICS_INTERVAL) to topic
KAFKA_TOPIC, keyed by the patient's uuid. Each patient has a hidden physiology that follows a
--scenario (default stable); values drift like a real patient's, with the signs moving together
(fever raises the pulse, hypoxia the breathing rate, shock lowers the pressure). A nurse puts a
patient whose SpO2 stays below 92% on oxygen. --scenario random gives each patient a scenario
of its own (most of them stable): a mixed ward. NAME:SCENARIO sets one patient's scenario
(an unknown one is refused, as is a name that the consumer would refuse).

Monitors send contract version 2, like real ones: pulse, respiratory rate and SpO2 every
reading (end-tidal CO2 too with --ventilated), blood pressure with its mean (MAP) every
--nibp-every simulated seconds (a cuff cycle, 15 min by default, the first reading included),
temperature every --temperature-every (5 min); a probe off the finger sends no SpO2.
--schema-version 1 sends every v1 sign in every reading, as monitors did before version 2.

--speed compresses time: each reading advances the physiology by interval x speed seconds
while timestamps stay wall-clock. The uuid is derived from the name (without any :SCENARIO),
so a restarted emulator continues the same patient. Ctrl-C or SIGTERM flushes what is in
flight and exits; the exit status is non-zero if any reading was not delivered.
Beyond 5 patients the ward is stepped as arrays (numpy): the same physiology and patients, a
noise sequence of the ward's own (--seed still reproduces it); 10,000 patients at 1 Hz fit in
a fraction of a core.
--via-hl7 HOST:PORT sends the readings as a bedside monitor's gateway does instead: IHE PCD-01
(HL7 v2 ORU^R01) over MLLP to a device gateway (run_hl7_gateway), one at a time, each waiting
for its acknowledgement; an AE or AR is logged and the reading counted undelivered; a gateway
down is retried with a backoff (0.5 s doubling to 30 s) and the readings due meanwhile are not
delivered. The patient's PID-3 is its uuid, assigning authority ICU-EMULATOR: the same patient
as without --via-hl7. PCD-01 carries the device's signs only: not on oxygen, consciousness, or
an artefact flag.
--metrics-port serves Prometheus metrics (readings produced, delivered, failed; patients);
with --count, --metrics-linger keeps them served a while after the last reading.

scenarios:
{scenarios}

examples:
  python manage.py run_patient --name bob
  python manage.py run_patient --name bob:sepsis --speed 60   # 6 h of sepsis in 6 minutes
  python manage.py run_patient --name alice --name bob:cardiac_arrest --interval 1
  python manage.py run_patient --patients 20 --scenario random --seed 7   # a mixed ward
  python manage.py run_patient --patients 10000 --interval 1 --scenario random  # a hospital
  python manage.py run_patient --patients 100 --interval 1 --artefacts
  python manage.py run_patient --name bob --count 10 --interval 0   # ten readings, at once
  python manage.py run_patient --name dora:respiratory_failure --ventilated --speed 60  # EtCO2
  python manage.py run_patient --name bob --nibp-every 300   # blood pressure every 5 min
  python manage.py run_patient --patients 5 --schema-version 1   # full v1 readings
  python manage.py run_patient --patients 20 --metrics-port 9101   # http://127.0.0.1:9101/metrics
  python manage.py run_patient --name bob --via-hl7 127.0.0.1:2575   # PCD-01 to the gateway
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
        parser.add_argument(
            "--ventilated",
            action="store_true",
            help="The patients are ventilated: end-tidal CO2 in every reading (version 2).",
        )
        parser.add_argument(
            "--nibp-every",
            type=float,
            default=NIBP_EVERY_S,
            metavar="SECONDS",
            help="Simulated seconds between two blood pressures, with MAP (default "
            f"{NIBP_EVERY_S:g}: 15 min; version 2).",
        )
        parser.add_argument(
            "--temperature-every",
            type=float,
            default=TEMPERATURE_EVERY_S,
            metavar="SECONDS",
            help=f"Simulated seconds between two temperatures (default {TEMPERATURE_EVERY_S:g}; "
            "version 2).",
        )
        parser.add_argument(
            "--schema-version",
            type=int,
            choices=SCHEMA_VERSIONS,
            default=2,
            help="Contract version of the messages (default 2: the signs measured; 1: every v1 "
            "sign in every reading, for consumers older than version 2).",
        )
        parser.add_argument("--seed", type=int, default=None, help="Seed for reproducible values.")
        parser.add_argument("--topic", default=None, help="Topic (default: KAFKA_TOPIC).")
        parser.add_argument(
            "--via-hl7",
            default=None,
            metavar="HOST:PORT",
            help="Send the readings as IHE PCD-01 (HL7 v2 ORU^R01) over MLLP to this device "
            "gateway (run_hl7_gateway, default port 2575) instead of producing them to Kafka.",
        )
        broker_timeout_argument(parser, default=5.0)
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
        interval = options["interval"]
        interval = settings.METRICS_INTERVAL if interval is None else interval
        if interval < 0:
            raise CommandError("--interval must be 0 or more.")
        if options["count"] is not None and options["count"] < 1:
            raise CommandError("--count must be 1 or more.")
        speed = options["speed"]
        if not (math.isfinite(speed) and speed > 0):
            raise CommandError("--speed must be a number more than 0.")
        for name in ("nibp_every", "temperature_every"):
            if not (math.isfinite(options[name]) and options[name] >= 0):
                raise CommandError(f"--{name.replace('_', '-')} must be 0 or more.")
        if options["metrics_linger"] < 0:
            raise CommandError("--metrics-linger must be 0 or more.")
        via_hl7 = _host_port(options["via_hl7"]) if options["via_hl7"] else None
        try:
            emulators = emulators_build(
                names=options["name"],
                patients=options["patients"],
                patient_uuid=options["uuid"],
                scenario=options["scenario"],
                seed=options["seed"],
                artefacts=options["artefacts"],
                ventilated=options["ventilated"],
                schema_version=options["schema_version"],
                nibp_every=options["nibp_every"],
                temperature_every=options["temperature_every"],
            )
        except InvalidEmulatorOption as exc:
            raise CommandError(str(exc)) from None

        with ExitStack() as stack:
            # Before the broker check: a port in use is reported at once.
            metrics_url = metrics_serve(stack, options)
            stop = stack.enter_context(stop_on_signals())
            try:
                emulation_run(
                    emulators,
                    interval=interval,
                    speed=speed,
                    count=options["count"],
                    topic=options["topic"] or settings.KAFKA_TOPIC,
                    broker_timeout=options["broker_timeout"],
                    stop=stop,
                    metrics_url=metrics_url,
                    metrics_linger=options["metrics_linger"],
                    log_each=options["verbosity"] >= 2,
                    via_hl7=via_hl7,
                )
            except (KafkaUnavailable, UndeliveredReadings) as exc:
                raise CommandError(getattr(exc, "message", str(exc))) from None


def _host_port(text: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets: [::1]:2575) or CommandError."""
    host, _, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CommandError(f"--via-hl7 must be HOST:PORT, e.g. 127.0.0.1:2575, not {text!r}.")
    return host, int(port)
