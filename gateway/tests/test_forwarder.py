"""Alarms out through the real broker: events published by the consumer's own outbox sweep,
forwarded by `AlarmForwarder.step()` to a small MLLP receiver (a fake alarm manager) in a
thread. Each event arrives exactly once, in order, whatever the receiver does."""

import logging
import socket
import threading
import time
from collections.abc import Callable

import hl7
import pytest

from core.kafka import consumer_create, producer_create
from core.mllp import frame_encode
from gateway.forwarder import AlarmForwarder, forwarder_group_id, target_parse
from patients.tests.factories import PatientFactory
from testing.devservers import free_port
from testing.mllp import MllpReceiver
from vitals.consumer import VitalsConsumer
from vitals.models import AlarmEvent
from vitals.services import alarm_event_record
from vitals.tests.factories import AlarmFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]


class Receiver(MllpReceiver):
    """A hospital alarm manager on 127.0.0.1:`port`: keeps every message it gets and answers
    each with `answer(control_id, n)` -> an MSA-1 code, or None to stay silent."""

    def __init__(self, port: int = 0, answer: Callable[[str, int], str | None] | None = None):
        self.answer = answer or (lambda _control_id, _n: "AA")
        self.received: list[hl7.Message] = []
        super().__init__(port=port)

    def reply(self, conn: socket.socket, payload: bytes) -> bool:
        message = hl7.parse(payload.decode())
        self.received.append(message)
        control_id = str(message.segment("MSH")[10])
        code = self.answer(control_id, len(self.received))
        if code is not None:
            n = len(self.received)
            ack = f"MSH|^~\\&|AM||ICU_MONITOR||||ACK^R40^ACK|A{n}|P|2.6\r"
            ack += f"MSA|{code}|{control_id}"
            if code != "AA":
                ack += "\rERR||||E|||no such bed"
            conn.sendall(frame_encode(ack))
        return True

    def events(self) -> list[str]:
        """MSH-10 of each message received, in order."""
        return [str(message.segment("MSH")[10]) for message in self.received]


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(**options) -> Receiver:
        made.append(Receiver(**options))
        return made[-1]

    yield make
    for r in made:
        r.stop()


def changes(count: int) -> list[str]:
    """`count` changes of one alarm written to the outbox (raised, then priority changes), as
    the consumer writes them; the MSH-10 of each one's message, in order."""
    alarm = AlarmFactory(patient=PatientFactory(name="Ada Lovelace"))
    events = [
        alarm_event_record(alarm=alarm, type="raised" if n == 0 else "priority_changed")
        for n in range(count)
    ]
    return [f"ICU{event.pk}" for event in events]


def publish(kafka) -> int:
    """Publish the outbox on the alarms topic with the consumer's own sweep."""
    worker = VitalsConsumer(
        consumer=consumer_create(group_id=f"{kafka.group_id}-publisher"),
        producer=producer_create(),
        dlq_topic=kafka.dlq_topic,
        alarms_topic=kafka.alarms_topic,
    )
    try:
        return worker.publish_alarm_events()
    finally:
        worker.consumer.close()


def forwarder(kafka, port: int, **options) -> AlarmForwarder:
    options = {"ack_timeout": 0.5, "backoff_initial": 0.05, "backoff_max": 0.2, **options}
    return AlarmForwarder(
        target=("127.0.0.1", port), group_id=kafka.group_id, poll_timeout=0.2, **options
    )


def drive(fwd: AlarmForwarder, sent: int, timeout: float = 30.0) -> list[str]:
    """Step until `sent` events were sent, then until the topic is drained (idle once more);
    every step's result."""
    results: list[str] = []
    deadline = time.monotonic() + timeout
    while results.count("sent") < sent or results[-1] != "idle":
        assert time.monotonic() < deadline, f"not done in time: {results}"
        results.append(fwd.step())
    return results


def committed(kafka) -> int:
    return kafka.committed(kafka.alarms_topic)[0]


def test_each_event_arrives_once_in_order_and_is_committed_after_its_ack(kafka, receiver):
    ids = changes(3)
    assert publish(kafka) == 3
    alarm_manager = receiver()
    fwd = forwarder(kafka, alarm_manager.port)
    try:
        results = drive(fwd, sent=3)
    finally:
        fwd.close()
    assert [r for r in results if r != "idle"] == ["sent", "sent", "sent"]
    assert alarm_manager.events() == ids
    first = alarm_manager.received[0]
    assert str(first.segment("MSH")[9]) == "ORU^R40^ORU_R40"
    assert str(first.segment("OBX")[3]) == "196672^MDC_EVT_LO_LT_LIM^MDC"
    phases = [str(message.segments("OBX")[2][5]) for message in alarm_manager.received]
    assert phases == ["start", "continue", "continue"]
    assert committed(kafka) == 3


# The forwarding and its retries do not depend on the engine (the first test above runs
# on both).
@pytest.mark.engine_neutral
def test_an_event_published_twice_is_sent_once_and_a_record_not_an_event_is_skipped(
    kafka, receiver
):
    """Two consumers sweeping the outbox at once publish an event twice (docs/alarms.md); a
    record that is no alarm event can never be sent, and must not hold up those behind it."""
    kafka.produce([(b"x", b"not an alarm event")], topic=kafka.alarms_topic)
    ids = changes(2)
    assert publish(kafka) == 2
    AlarmEvent.objects.update(published_at=None)
    assert publish(kafka) == 2
    alarm_manager = receiver()
    fwd = forwarder(kafka, alarm_manager.port)
    try:
        results = drive(fwd, sent=2)
    finally:
        fwd.close()
    assert [r for r in results if r != "idle"] == [
        "skipped",
        "sent",
        "sent",
        "duplicate",
        "duplicate",
    ]
    assert alarm_manager.events() == ids
    assert committed(kafka) == 5


@pytest.mark.engine_neutral
@pytest.mark.parametrize(
    ("first_answer", "reason"),
    [
        ("AE", "AE: no such bed"),
        ("AR", "AR: no such bed"),
        (None, "no acknowledgement within 0.5 s"),
    ],
)
def test_an_event_not_taken_is_sent_again_and_committed_only_then(
    kafka, receiver, caplog, first_answer, reason
):
    ids = changes(2)
    publish(kafka)
    alarm_manager = receiver(answer=lambda _id, n: first_answer if n == 1 else "AA")
    fwd = forwarder(kafka, alarm_manager.port)
    caplog.set_level(logging.INFO, logger="gateway.forwarder")
    try:
        results = [fwd.step()]
        while results[-1] == "idle":
            results.append(fwd.step())
        assert results[-1] == "retry"
        assert committed(kafka) < 0  # nothing committed: the event is not taken
        results += drive(fwd, sent=2)
    finally:
        fwd.close()
    assert [r for r in results if r != "idle"] == ["retry", "sent", "sent"]
    assert alarm_manager.events() == [ids[0], ids[0], ids[1]]
    assert committed(kafka) == 2
    retry = next(r for r in caplog.records if r.message == "alarm event not delivered, will retry")
    assert (retry.event_id, retry.reason, retry.attempts, retry.retry_in_s) == (
        int(ids[0][3:]),
        reason,
        1,
        0.05,
    )
    sent = [r for r in caplog.records if r.message == "alarm event forwarded"]
    assert [(r.event_id, r.attempts, r.ack) for r in sent] == [
        (int(ids[0][3:]), 2, "AA"),
        (int(ids[1][3:]), 1, "AA"),
    ]


@pytest.mark.engine_neutral
def test_a_receiver_down_then_up_loses_nothing(kafka, receiver):
    ids = changes(3)
    publish(kafka)
    port = free_port()
    fwd = forwarder(kafka, port)
    try:
        results = [fwd.step()]
        while len([r for r in results if r == "retry"]) < 3:
            results.append(fwd.step())
        assert "sent" not in results
        assert committed(kafka) < 0
        alarm_manager = receiver(port=port)
        drive(fwd, sent=3)
    finally:
        fwd.close()
    assert alarm_manager.events() == ids
    assert committed(kafka) == 3


@pytest.mark.engine_neutral
def test_a_restarted_forwarder_resumes_from_the_committed_offset(kafka, receiver):
    ids = changes(3)
    publish(kafka)
    alarm_manager = receiver()
    first = forwarder(kafka, alarm_manager.port)
    try:
        results: list[str] = []
        while results.count("sent") < 2:
            results.append(first.step())
    finally:
        first.close()
    assert committed(kafka) == 2
    second = forwarder(kafka, alarm_manager.port)
    try:
        drive(second, sent=1)
    finally:
        second.close()
    assert alarm_manager.events() == ids
    assert committed(kafka) == 3


@pytest.mark.engine_neutral
def test_run_stops_when_told(kafka, receiver):
    ids = changes(1)
    publish(kafka)
    alarm_manager = receiver()
    fwd = forwarder(kafka, alarm_manager.port)
    stop = threading.Event()
    thread = threading.Thread(target=fwd.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 30
    while alarm_manager.events() != ids:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()


def test_the_target_and_the_group(settings):
    assert target_parse("alarms.local:2575") == ("alarms.local", 2575)
    settings.KAFKA_GROUP_ID = "icu"
    assert forwarder_group_id(("alarms.local", 2575)) == "icu.pcd04.alarms.local:2575"
    with pytest.raises(ValueError, match="is not HOST:PORT"):
        target_parse("alarms.local")
