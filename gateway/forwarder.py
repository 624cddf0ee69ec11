"""Alarms out: every change on the alarms topic sent to a hospital's alarm manager as an IHE PCD-04
ORU^R40 over MLLP, one at a time, in order, each committed only once the receiver took it.

`AlarmForwarder.step()` is one attempt at the next event: read it (or keep the one not taken
yet), build its message, send it, wait for the acknowledgement. `run(stop)` loops over it
(`run_hl7_gateway --forward-alarms HOST:PORT` runs it in a thread; `forward_alarms --to
HOST:PORT` on its own).

Delivery:
- **At least once, in order.** The offset of an event is committed (synchronously) only after
  the receiver answered AA (or CA, the commit accept of the enhanced mode MSH-15 asks for).
  AE, AR (CE, CR), no answer within `ack_timeout`, a closed or refused connection: the same
  event is sent again after a back-off doubling from `backoff_initial` to `backoff_max`, and
  nothing after it is read meanwhile (never skip ahead). A log line per send, per retry.
- **Each event once.** The consumer may publish one event twice (docs/alarms.md); the
  forwarder drops an `event_id` it has already forwarded (committed) and commits past it. The
  memory of forwarded ids is the process's (the last `dedupe_size`); what survives a restart is
  the committed offset: nothing before it is sent again. After a restart, a copy of an event
  forwarded before it that lies after the committed offset, or an event taken by the receiver
  whose commit the crash prevented, is sent again with the same MSH-10 (`ICU<event id>`) and
  OBR-3 (the alarm id), by which the receiver can tell it.
- **A message that cannot be read** (not JSON, not an alarm event) can never be sent: it is
  logged (ERROR) and committed past, so one bad record does not stop every alarm behind it.
"""

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime

from confluent_kafka import Consumer, KafkaException, Message
from django.conf import settings
from django.db import DatabaseError, close_old_connections

from core.kafka import consumer_create
from core.mllp import MllpClient, MllpError, ack_parse
from gateway.pcd04 import AlarmContext, alarm_event_to_oru, control_id
from gateway.selectors import alarm_context_get

logger = logging.getLogger(__name__)

ACCEPTED = frozenset({"AA", "CA"})


class AlarmForwarder:
    """Forward the alarms topic to one receiver; `step()` is one attempt, `run()` the loop."""

    def __init__(
        self,
        *,
        target: tuple[str, int],
        topic: str | None = None,
        group_id: str | None = None,
        consumer: Consumer | None = None,
        ack_timeout: float = 10.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        poll_timeout: float = 0.5,
        dedupe_size: int = 100_000,
        context_get: Callable[..., AlarmContext] = alarm_context_get,
    ) -> None:
        self.target = target
        self.topic = topic or settings.KAFKA_ALARMS_TOPIC
        self.group_id = group_id or forwarder_group_id(target)
        self.consumer = consumer or consumer_create(
            group_id=self.group_id, **{"enable.auto.commit": False}
        )
        self.consumer.subscribe([self.topic], on_revoke=self._on_revoke, on_lost=self._on_revoke)
        self.client = MllpClient(target, timeout=ack_timeout)
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.poll_timeout = poll_timeout
        self.dedupe_size = dedupe_size
        self.context_get = context_get
        self.stop = threading.Event()
        self.pending: Message | None = None
        self.attempts = 0
        self.due = 0.0  # monotonic time of the next attempt
        self.forwarded: OrderedDict[int, None] = OrderedDict()

    # --- the loop ----------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        self.stop = stop
        logger.info(
            "alarm forwarder started",
            extra={"target": self._target_text(), "topic": self.topic, "group_id": self.group_id},
        )
        try:
            while not stop.is_set():
                # A thread of its own: the database connection may have gone stale meanwhile.
                close_old_connections()
                self.step()
        finally:
            self.close()
            logger.info("alarm forwarder stopped", extra={"target": self._target_text()})

    def close(self) -> None:
        self.client.close()
        self.consumer.close()

    def step(self) -> str:
        """One attempt at the next event. Returns what happened: "idle" (nothing to read),
        "sent", "duplicate" (forwarded before: committed past), "skipped" (unreadable:
        committed past), "retry" (not taken: the same event next time, after a back-off),
        "stopped" (stop set during the back-off)."""
        if self.pending is None:
            message = self.consumer.poll(self.poll_timeout)
            if message is None:
                return "idle"
            if message.error() is not None:
                logger.warning("alarms topic read error", extra={"error": str(message.error())})
                return "idle"
            self.pending, self.attempts, self.due = message, 0, 0.0
        wait = self.due - time.monotonic()
        if wait > 0 and self.stop.wait(wait):
            return "stopped"
        return self._attempt(self.pending)

    # --- one attempt -------------------------------------------------------------------------
    def _attempt(self, message: Message) -> str:
        try:
            event = json.loads(message.value())
            event_id = int(event["event_id"])
        except (TypeError, ValueError, KeyError) as exc:
            logger.error(
                "unreadable alarm event skipped",
                extra={**self._where(message), "error": str(exc)},
            )
            self._commit(message)
            return "skipped"
        if event_id in self.forwarded:
            logger.info("alarm event already forwarded", extra={"event_id": event_id})
            self._commit(message)
            return "duplicate"

        self.attempts += 1
        started = time.monotonic()
        try:
            context = self.context_get(
                patient_uuid=event["patient"]["uuid"], at=datetime.fromisoformat(event["at"])
            )
            text = alarm_event_to_oru(event, context=context)
        except DatabaseError as exc:
            return self._retry(event_id, f"database: {exc}")
        except (KeyError, TypeError, ValueError) as exc:
            logger.error(
                "unreadable alarm event skipped",
                extra={**self._where(message), "event_id": event_id, "error": repr(exc)},
            )
            self._commit(message)
            return "skipped"
        try:
            ack = ack_parse(self.client.exchange(text.encode("utf-8")))
        except MllpError as exc:
            return self._retry(event_id, str(exc))
        except ValueError as exc:
            self.client.close()
            return self._retry(event_id, str(exc))
        if ack.control_id != control_id(event_id):
            self.client.close()
            return self._retry(event_id, f"acknowledgement of {ack.control_id!r}, not ours")
        if ack.code not in ACCEPTED:
            return self._retry(event_id, f"{ack.code}: {ack.text}".rstrip(": "))

        self._commit(message)
        self.forwarded[event_id] = None
        while len(self.forwarded) > self.dedupe_size:
            self.forwarded.popitem(last=False)
        alarm = event["alarm"]
        logger.info(
            "alarm event forwarded",
            extra={
                "event_id": event_id,
                "event": event["event"],
                "alarm_id": alarm["id"],
                "kind": alarm["kind"],
                "priority": alarm["priority"],
                "target": self._target_text(),
                "ack": ack.code,
                "attempts": self.attempts,
                "ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
        self.pending = None
        return "sent"

    def _retry(self, event_id: int, reason: str) -> str:
        delay = min(self.backoff_max, self.backoff_initial * 2 ** (self.attempts - 1))
        self.due = time.monotonic() + delay
        logger.warning(
            "alarm event not delivered, will retry",
            extra={
                "event_id": event_id,
                "target": self._target_text(),
                "reason": reason,
                "attempts": self.attempts,
                "retry_in_s": round(delay, 2),
            },
        )
        return "retry"

    def _commit(self, message: Message) -> None:
        self.pending = None
        try:
            self.consumer.commit(message=message, asynchronous=False)
        except KafkaException as exc:
            # Not lost: sent again after a restart, and dropped as a duplicate before one.
            logger.warning("could not commit the alarms offset", extra={"error": str(exc)})

    def _on_revoke(self, _consumer: Consumer, partitions: list) -> None:
        if self.pending is not None and any(
            (p.topic, p.partition) == (self.pending.topic(), self.pending.partition())
            for p in partitions
        ):
            self.pending = None  # its new owner starts from the committed offset

    def _where(self, message: Message) -> dict:
        return {"partition": message.partition(), "offset": message.offset()}

    def _target_text(self) -> str:
        return f"{self.target[0]}:{self.target[1]}"


def forwarder_group_id(target: tuple[str, int]) -> str:
    """The consumer group of the forwarder to `target`: one per receiver, so that each gets
    every event, and two forwarders to one receiver share the partitions."""
    return f"{settings.KAFKA_GROUP_ID}.pcd04.{target[0]}:{target[1]}"


def target_parse(text: str) -> tuple[str, int]:
    """ "HOST:PORT" -> (host, port); ValueError with a line a person can act on."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. alarms.hospital.local:2575)")
    return host.strip("[]"), int(port)
