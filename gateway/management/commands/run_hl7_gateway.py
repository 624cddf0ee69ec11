import argparse
import errno
import logging
import subprocess
import sys
import threading
from contextlib import ExitStack

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from core.cli import ExamplesCommand, broker_timeout_argument
from core.exceptions import KafkaUnavailable
from core.kafka import BrokerOutage, broker_check, producer_create
from core.metrics import metrics_arguments, metrics_serve
from core.ports import port_free, port_holder
from core.process import die_with_parent, process_stop, stop_on_signals
from gateway.server import Hl7Gateway

logger = logging.getLogger("gateway.server")


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CommandError(f"--forward-alarms {text!r} is not HOST:PORT.")
    return host.strip("[]"), int(port)


def _forwarder_class() -> type:
    """Engineer D's alarm forwarder (gateway/forwarder.py), run in a thread beside the server."""
    try:
        from gateway.forwarder import AlarmForwarder
    except ImportError:
        raise CommandError(
            "--forward-alarms: this build has no alarm forwarder (gateway/forwarder.py)."
        ) from None
    return AlarmForwarder


class Command(ExamplesCommand):
    help = """Receive HL7 v2 messages from bedside monitors' gateways and the hospital's ADT over
MLLP (docs/connecting-monitors.md).

ORU^R01 (IHE PCD-01) observations become readings on KAFKA_TOPIC (contract version 2);
ADT^A01/A02/A03/A08 admit, transfer, discharge and update patients. Every message is answered
with an HL7 ACK in original mode: AA only once its readings are acknowledged by the broker
(acks=all), AE (understood but wrong; ERR says which field), AR (not processable, or not
delivered: resend). Messages over HL7_MAX_MESSAGE_BYTES are answered AR and discarded.
A message's text is read as UTF-8, else as ISO-8859-1; CR, LF or CRLF end its segments.
--forward-alarms sends the alarm changes of KAFKA_ALARMS_TOPIC to an alarm manager as IHE
PCD-04 ORU^R40. Ctrl-C or SIGTERM stops accepting, answers the messages in progress and
flushes the producer.

examples:
  python manage.py run_hl7_gateway                        # 127.0.0.1:2575
  python manage.py run_hl7_gateway --host 0.0.0.0 --port 2575
  python manage.py run_hl7_gateway --processes 2          # two processes on the port
  python manage.py run_hl7_gateway --forward-alarms alarms.hospital.example:2575
  python manage.py run_hl7_gateway --metrics-port 9102    # http://127.0.0.1:9102/metrics
"""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1)."
        )
        parser.add_argument(
            "--port", type=int, default=2575, help="Port to listen on (default 2575)."
        )
        parser.add_argument(
            "--forward-alarms",
            default=None,
            metavar="HOST:PORT",
            help="Also send alarm changes as IHE PCD-04 ORU^R40 to the alarm manager at "
            "HOST:PORT over MLLP.",
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=4,
            help="Threads handling messages (parsing, the database; default 4).",
        )
        parser.add_argument(
            "--processes",
            type=int,
            default=1,
            help="Gateway processes sharing the port (SO_REUSEPORT), for more than one core "
            "(default 1). Parsing HL7 is CPU-bound Python: one process is one core. Metrics "
            "count the first process only.",
        )
        parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
        parser.add_argument(
            "--delivery-timeout",
            type=float,
            default=10.0,
            metavar="SECONDS",
            help="Longest wait for the broker to acknowledge a message's readings; past it the "
            "message is answered AR (default 10).",
        )
        broker_timeout_argument(parser)
        metrics_arguments(parser)

    def handle(self, *args: object, **options: object) -> None:
        forward_to = _address(options["forward_alarms"]) if options["forward_alarms"] else None
        forwarder_class = _forwarder_class() if forward_to else None
        host, port = options["host"], options["port"]
        with ExitStack() as stack:
            # First: a port in use is reported before the broker is waited for.
            if not options["reuse_port"]:  # a helper of a first process shares its port
                self.port_check(host, port)
            metrics_serve(stack, options)
            outage = BrokerOutage(logger, "hl7-gateway")
            producer = producer_create(
                **{
                    "message.timeout.ms": round(options["delivery_timeout"] * 1000),
                    "error_cb": outage.error_cb,
                }
            )
            try:
                broker_check(
                    producer, timeout=options["broker_timeout"], topics=(settings.KAFKA_TOPIC,)
                )
            except KafkaUnavailable as exc:
                raise CommandError(exc.message) from None
            gateway = Hl7Gateway(
                producer=producer,
                topic=settings.KAFKA_TOPIC,
                max_message_bytes=settings.HL7_MAX_MESSAGE_BYTES,
                workers=options["workers"],
                outage=outage,
            )
            with stop_on_signals() as stop:
                if forward_to is not None:
                    forwarder = forwarder_class(target=forward_to)
                    thread = threading.Thread(
                        target=forwarder.run, args=(stop,), name="alarm-forwarder", daemon=True
                    )
                    thread.start()
                    stack.callback(thread.join, 15)
                helpers: list[subprocess.Popen] = []
                stack.callback(lambda: [process_stop(p) for p in helpers])

                def ready(_address: tuple[str, int]) -> None:
                    helpers.extend(self.helpers_start(options))

                reuse = options["reuse_port"] or options["processes"] > 1
                try:
                    gateway.serve(host=host, port=port, stop=stop, ready=ready, reuse_port=reuse)
                except OSError as exc:  # taken since port_check, or refused
                    stop.set()
                    if exc.errno == errno.EADDRINUSE:
                        self.port_check(host, port)
                    raise CommandError(f"Cannot listen on {host}:{port}: {exc.strerror}.") from None

    def helpers_start(self, options: dict) -> list[subprocess.Popen]:
        """--processes N: N - 1 more gateways on the same port, started once this one listens,
        stopped with it."""
        argv = [sys.executable, str(settings.BASE_DIR / "manage.py"), "run_hl7_gateway"]
        for name in ("host", "port", "workers", "delivery_timeout", "broker_timeout"):
            argv += [f"--{name.replace('_', '-')}", str(options[name])]
        return [
            subprocess.Popen([*argv, "--reuse-port"], preexec_fn=die_with_parent)
            for _ in range(options["processes"] - 1)
        ]

    def port_check(self, host: str, port: int) -> None:
        """One line, and exit status 1, when the port is taken or the host is not ours."""
        try:
            free = port_free(host=host, port=port)
        except OSError as exc:
            raise CommandError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}.") from None
        if not free:
            raise CommandError(
                f"{host}:{port} is in use by {port_holder(port=port)}; nothing was started. "
                "Give the gateway another --port."
            )
