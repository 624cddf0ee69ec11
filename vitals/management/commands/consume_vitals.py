import logging
import time
from contextlib import ExitStack
from datetime import timedelta

from django.conf import settings
from django.core.management.base import (
    CommandError,
    CommandParser,
)
from django.db import close_old_connections

from core.cli import ExamplesCommand, broker_timeout_argument
from core.exceptions import KafkaUnavailable
from core.kafka import (
    BrokerOutage,
    broker_check,
    consumer_create,
    producer_create,
    producer_message_max_bytes,
)
from core.metrics import metrics_arguments, metrics_serve
from core.process import stop_on_signals
from vitals.consumer import ConsumerHealth, VitalsConsumer, consumer_gc_tuned

logger = logging.getLogger("vitals.consume")

SUMMARY_EVERY_S = 30.0


class Command(ExamplesCommand):
    help = """Consume vital-sign readings from Kafka and store them in the database.

Joins the consumer group KAFKA_GROUP_ID on topic KAFKA_TOPIC; start several to share the
partitions. Each batch is validated and written in one transaction, then its offsets are
committed; invalid messages go to KAFKA_DLQ_TOPIC with the reason in the `dlq.reason` header.
Alarms are judged on every new reading and their changes published to KAFKA_ALARMS_TOPIC;
every 2 s, busy or idle, it also raises `no_data` for monitors silent for ALARM_NO_DATA_AFTER
seconds and escalates high alarms unanswered for ALARM_ESCALATE_AFTER (several consumers
share this safely: one alarm per silence, one escalation per alarm).
Ctrl-C or SIGTERM finishes the batch in progress, commits and leaves the group.
--metrics-port serves Prometheus metrics (readings consumed, stored, rejected by reason,
batch latency, delay from measurement to storage, lag per partition; see core/metrics.py),
/healthz, and /readyz: 503 with the reason while the database cannot be written.

examples:
  python manage.py consume_vitals
  python manage.py consume_vitals --batch-size 5000 --batch-timeout 1
  python manage.py consume_vitals --exit-on-idle 10      # drain the topic, then stop
  python manage.py consume_vitals --metrics-port 9100    # metrics: http://127.0.0.1:9100/metrics
"""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--topic", default=None, help="Topic to read (default: KAFKA_TOPIC).")
        parser.add_argument(
            "--group-id", default=None, help="Consumer group (default: KAFKA_GROUP_ID)."
        )
        parser.add_argument(
            "--batch-size", type=int, default=1000, help="Most messages per batch (default 1000)."
        )
        parser.add_argument(
            "--batch-timeout",
            type=float,
            default=0.1,
            help="Longest wait in seconds to fill a batch; bounds the delay a reading spends "
            "waiting for others (default 0.1; a full batch goes at once).",
        )
        parser.add_argument(
            "--exit-on-idle",
            type=float,
            default=None,
            metavar="SECONDS",
            help="Stop once partitions are assigned and no message came for SECONDS.",
        )
        broker_timeout_argument(parser)
        metrics_arguments(parser)

    def handle(self, *args: object, **options: object) -> None:
        topic = options["topic"] or settings.KAFKA_TOPIC
        group_id = options["group_id"] or settings.KAFKA_GROUP_ID
        exit_on_idle = options["exit_on_idle"]

        health = ConsumerHealth()
        with ExitStack() as stack:
            # First: a port in use is reported before the broker is waited for.
            metrics_serve(stack, options, readiness=health.readiness)
            self.consume(topic, group_id, exit_on_idle, options, health)

    def consume(
        self,
        topic: str,
        group_id: str,
        exit_on_idle: float | None,
        options: dict,
        health: ConsumerHealth,
    ) -> None:
        # A broker lost while running is logged once, and again once it is back; meanwhile
        # consume() returns nothing and librdkafka reconnects and rejoins the group by itself.
        outage = BrokerOutage(logger, "consumer")
        consumer = consumer_create(group_id=group_id, error_cb=outage.error_cb)
        producer = producer_create()
        try:
            broker_check(consumer, timeout=options["broker_timeout"], topics=(topic,))
        except KafkaUnavailable as exc:
            consumer.close()
            raise CommandError(exc.message) from None

        with stop_on_signals() as stop:
            worker = VitalsConsumer(
                consumer=consumer,
                producer=producer,
                dlq_topic=settings.KAFKA_DLQ_TOPIC,
                dlq_max_bytes=producer_message_max_bytes(),
                alarms_topic=settings.KAFKA_ALARMS_TOPIC,
                batch_size=options["batch_size"],
                batch_timeout=options["batch_timeout"],
                max_future=timedelta(seconds=settings.VITALS_MAX_FUTURE_SKEW_SECONDS),
                stop_event=stop,
                no_data_after=settings.ALARM_NO_DATA_AFTER,
                escalate_after=settings.ALARM_ESCALATE_AFTER,
                clock_skew_warn=settings.ALARM_CLOCK_SKEW_WARN,
                health=health,
            )

            def on_assign(consumer, partitions) -> None:
                outage.reachable()
                worker.on_assign(consumer, partitions)

            consumer.subscribe(
                [topic],
                on_assign=on_assign,
                on_revoke=worker.on_revoke,
                on_lost=worker.on_revoke,
            )
            logger.info(
                "consuming",
                extra={
                    "topic": topic,
                    "group_id": group_id,
                    "dlq_topic": settings.KAFKA_DLQ_TOPIC,
                    "bootstrap_servers": settings.KAFKA_BOOTSTRAP_SERVERS,
                },
            )
            last_message = last_summary = time.monotonic()
            try:
                with consumer_gc_tuned():
                    while not stop.is_set():
                        # Outside any transaction: drop connections that died or grew too old,
                        # as a request would (a worker never goes through the request cycle).
                        close_old_connections()
                        count = worker.process_batch()
                        if count:
                            outage.reachable()
                        now = time.monotonic()
                        if count or not worker.assigned:
                            last_message = now
                        elif exit_on_idle is not None and now - last_message >= exit_on_idle:
                            logger.info("idle, exiting", extra={"idle_s": exit_on_idle})
                            break
                        if now - last_summary >= SUMMARY_EVERY_S:
                            worker.log_totals()
                            last_summary = now
            finally:
                worker.close()
                close_old_connections()
                worker.log_totals("consumer stopped")
