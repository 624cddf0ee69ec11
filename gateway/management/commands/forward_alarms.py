import logging

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from core.cli import ExamplesCommand, broker_timeout_argument
from core.exceptions import KafkaUnavailable
from core.kafka import BrokerOutage, broker_check, consumer_create
from core.process import stop_on_signals
from gateway.forwarder import AlarmForwarder, forwarder_group_id, target_parse

logger = logging.getLogger("gateway.forwarder")


class Command(ExamplesCommand):
    help = """Send every alarm change on KAFKA_ALARMS_TOPIC to a hospital alarm manager as IHE
PCD-04 (ORU^R40) over MLLP.

One message per event, in order; an event's offset is committed only once the receiver
answered AA (or CA). AE, AR, no answer within --ack-timeout or no connection: the same event
is sent again after a back-off doubling up to --backoff-max seconds, and nothing after it is
sent meanwhile. An event published twice is sent once. Its consumer group is KAFKA_GROUP_ID
+ ".pcd04." + HOST:PORT (one per receiver), unless --group-id. `run_hl7_gateway
--forward-alarms HOST:PORT` runs the same forwarder inside the gateway.
Ctrl-C or SIGTERM stops after the message in flight.

examples:
  python manage.py forward_alarms --to 127.0.0.1:2576
  python manage.py forward_alarms --to alarms.hospital.local:2575 --ack-timeout 5
"""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--to", required=True, metavar="HOST:PORT", help="The alarm manager's MLLP address."
        )
        parser.add_argument(
            "--group-id",
            default=None,
            help="Consumer group (default: KAFKA_GROUP_ID.pcd04.HOST:PORT).",
        )
        parser.add_argument(
            "--ack-timeout",
            type=float,
            default=10.0,
            help="Seconds to wait for each acknowledgement (default 10).",
        )
        parser.add_argument(
            "--backoff-max",
            type=float,
            default=30.0,
            help="Longest wait in seconds between two attempts at one event (default 30; "
            "the first retry comes after 0.5 s).",
        )
        broker_timeout_argument(parser)

    def handle(self, *args: object, **options: object) -> None:
        try:
            target = target_parse(options["to"])
        except ValueError as exc:
            raise CommandError(f"--to: {exc}") from None
        group_id = options["group_id"] or forwarder_group_id(target)
        outage = BrokerOutage(logger, "alarm forwarder")
        consumer = consumer_create(
            group_id=group_id, error_cb=outage.error_cb, **{"enable.auto.commit": False}
        )
        try:
            broker_check(
                consumer,
                timeout=options["broker_timeout"],
                topics=(settings.KAFKA_ALARMS_TOPIC,),
            )
        except KafkaUnavailable as exc:
            consumer.close()
            raise CommandError(exc.message) from None
        forwarder = AlarmForwarder(
            target=target,
            group_id=group_id,
            consumer=consumer,
            ack_timeout=options["ack_timeout"],
            backoff_max=options["backoff_max"],
        )
        with stop_on_signals() as stop:
            forwarder.run(stop)
