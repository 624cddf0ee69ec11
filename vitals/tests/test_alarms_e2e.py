"""Alarms end to end through the real broker (Tansu) and the real database: readings on the
vitals topic -> the real consumer -> Alarm rows and messages on the alarms topic; an
acknowledgement through the API -> the alarms topic on the consumer's next outbox sweep.

`transactional_db`, as in test_pipeline_e2e: the consumer commits, and a consumer run as a
subprocess must see the rows the test wrote and the test the rows it wrote.
"""

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Message
from django.core.management import call_command

from conftest import KafkaTopics, database_url, start_manage
from icu.kafka import consumer_create, producer_create
from patients.models import Patient
from patients.tests.factories import PatientFactory
from vitals.consumer import VitalsConsumer
from vitals.emulator import patient_uuid_for_name
from vitals.models import Alarm, AlarmEvent, PatientMetric
from vitals.services import alarm_switch_off
from vitals.tests.factories import AlarmFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

START = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(minutes=10)


def patient_uuid(name: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_DNS, f"alarms-e2e-{name}")


def message(name: str, seconds: int, **values) -> tuple[bytes, bytes]:
    """One reading as a monitor sends it (the documented contract, written out by hand): a
    normal adult unless `values` say otherwise."""
    body = {
        "schema_version": 1,
        "patient_uuid": str(patient_uuid(name)),
        "patient_name": name,
        "timestamp": (START + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "pulse": 72,
        "resp_rate": 14,
        "bp": "120/80",
        "spo2": 98,
        "temperature": 36.8,
        **values,
    }
    return str(patient_uuid(name)).encode(), json.dumps(body).encode()


def alarm_messages(kafka: KafkaTopics) -> list[tuple[bytes, dict, dict]]:
    """(key, JSON value, headers) of every message on the alarms topic, in order."""
    messages: list[Message] = kafka.read(kafka.alarms_topic)
    return [(m.key(), json.loads(m.value()), dict(m.headers() or [])) for m in messages]


def summary(value: dict) -> tuple:
    return (
        value["event"],
        value["alarm"]["kind"],
        value["alarm"]["priority"],
        value["alarm"]["state"],
        value["patient"]["uuid"],
        value["patient"]["name"],
    )


def event_ids(**filters) -> list[int]:
    return list(AlarmEvent.objects.filter(**filters).order_by("id").values_list("id", flat=True))


def test_a_deteriorating_patient_alarms_in_the_db_and_on_the_alarms_topic(kafka, tmp_path):
    erin, frank, hana = (str(patient_uuid(name)) for name in ("erin", "frank", "hana"))
    # Hana's SpO2 low alarm is switched off (a clinician's decision, with a reason); one still
    # open is left over (as if raised a moment before): the consumer resolves it, raises no new
    # one, while NEWS2, which cannot be switched off, still alarms.
    hana_patient = PatientFactory(uuid=patient_uuid("hana"), name="hana")
    alarm_switch_off(patient=hana_patient, kind="spo2_low", reason="COPD, target 88-92", user=None)
    left_over = AlarmFactory(patient=hana_patient, kind="spo2_low", raised_at=START)
    kafka.produce(
        [
            *(message("hana", s, spo2=86) for s in range(0, 15, 5)),
            *(message("frank", s) for s in range(0, 25, 5)),
            message("erin", 0),
            message("erin", 5),
            message("erin", 10, spo2=88),  # below 90 and a NEWS2 red score: counting starts
            message("erin", 15, spo2=88),  # the second in a row: both alarms raised
            message("erin", 20, spo2=83),  # below the critical 85: SpO2 low goes high
        ]
    )

    # The real command, as deployed: a child process, configured by the environment.
    log = tmp_path / "consumer.log"
    process = start_manage(
        "consume_vitals",
        "--exit-on-idle",
        "1",
        "--batch-timeout",
        "0.1",
        log=log,
        DATABASE_URL=database_url(),
        **kafka.env(),
    )
    try:
        assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()

    assert PatientMetric.objects.count() == 13
    assert list(
        Alarm.objects.filter(patient__name="hana")
        .order_by("id")
        .values_list("kind", "priority", "state", "raised_at", "resolved_at")
    ) == [
        ("spo2_low", "medium", "resolved", START, START),
        ("news2", "medium", "active", START + timedelta(seconds=5), None),
    ]
    assert list(
        Alarm.objects.filter(patient__name="erin")
        .order_by("id")
        .values_list(
            "patient__name", "kind", "priority", "state", "value", "threshold", "raised_at"
        )
    ) == [
        ("erin", "spo2_low", "high", "active", 83, 90, START + timedelta(seconds=15)),
        ("erin", "news2", "medium", "active", 3, 5, START + timedelta(seconds=15)),
    ]
    assert not AlarmEvent.objects.filter(published_at__isnull=True).exists()

    published = alarm_messages(kafka)
    assert sorted(value["event_id"] for _, value, _ in published) == event_ids()
    of_hana = [value for _, value, _ in published if value["patient"]["uuid"] == hana]
    assert [summary(value) for value in of_hana] == [
        ("resolved", "spo2_low", "medium", "resolved", hana, "hana"),
        ("raised", "news2", "medium", "active", hana, "hana"),
    ]
    assert of_hana[0]["alarm"]["id"] == left_over.pk
    published = [p for p in published if p[1]["patient"]["uuid"] == erin]
    assert [summary(value) for _, value, _ in published] == [
        ("raised", "spo2_low", "medium", "active", erin, "erin"),
        ("raised", "news2", "medium", "active", erin, "erin"),
        ("escalated", "spo2_low", "high", "active", erin, "erin"),
    ]
    assert [key for key, _, _ in published] == [erin.encode()] * 3
    erin_events = event_ids(alarm__patient__name="erin")
    assert [value["event_id"] for _, value, _ in published] == erin_events
    assert [headers["event_id"] for _, _, headers in published] == [
        str(pk).encode() for pk in erin_events
    ]
    alarm_ids = list(
        Alarm.objects.filter(patient__name="erin").order_by("id").values_list("id", flat=True)
    )
    assert [value["alarm"]["id"] for _, value, _ in published] == [*alarm_ids, alarm_ids[0]]
    assert [value["alarm"]["value"] for _, value, _ in published] == [88, 3, 83]
    assert frank not in {value["patient"]["uuid"] for _, value, _ in alarm_messages(kafka)}


def test_an_emulated_cardiac_arrest_raises_high_priority_alarms(kafka: KafkaTopics):
    # 8 readings 20 ms apart at 30000x: each one 10 simulated minutes, and the arrest comes
    # 10-40 minutes in, so the last readings are of a patient in arrest.
    call_command(
        "run_patient",
        name=["xavier:cardiac_arrest"],
        count=8,
        interval=0.02,
        speed=30000,
        seed=3,
    )
    call_command("consume_vitals", exit_on_idle=1, batch_timeout=0.1)

    patient = Patient.objects.get(name="xavier")
    assert patient.uuid == patient_uuid_for_name("xavier")
    arrest = list(patient.metrics.filter(pulse=0).order_by("measured_at"))
    assert len(arrest) >= 2
    assert (arrest[0].resp_rate, arrest[0].systolic, arrest[0].diastolic) == (0, 40, 20)
    # No pulse alarms at once (asystole has no delay); the limit alarms and NEWS2 follow on the
    # second reading, each already beyond its critical level: high, never escalated.
    expected = [
        ("asystole", "high", "active", arrest[0].measured_at),
        *(
            (kind, "high", "active", arrest[1].measured_at)
            for kind in (
                "spo2_low",
                "pulse_low",
                "systolic_low",
                "diastolic_low",
                "resp_rate_low",
                "news2",
            )
        ),
    ]
    assert (
        list(Alarm.objects.order_by("id").values_list("kind", "priority", "state", "raised_at"))
        == expected
    )

    published = alarm_messages(kafka)
    xavier = str(patient.uuid)
    assert [summary(value) for _, value, _ in published] == [
        ("raised", kind, "high", "active", xavier, "xavier") for kind, *_ in expected
    ]
    assert {key for key, _, _ in published} == {xavier.encode()}
    assert [value["event_id"] for _, value, _ in published] == event_ids()
    assert not AlarmEvent.objects.filter(published_at__isnull=True).exists()


def drive(worker: VitalsConsumer, until: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "condition not reached in time"
        worker.process_batch()


def all_published() -> bool:
    return not AlarmEvent.objects.filter(published_at__isnull=True).exists()


def test_an_acknowledgement_through_the_api_is_published_on_the_next_sweep(kafka, api_client, user):
    gus = str(patient_uuid("gus"))
    kafka.produce([message("gus", 0), message("gus", 5, spo2=88), message("gus", 10, spo2=88)])
    consumer = consumer_create(group_id=kafka.group_id)
    worker = VitalsConsumer(
        consumer=consumer,
        producer=producer_create(),
        dlq_topic=kafka.dlq_topic,
        alarms_topic=kafka.alarms_topic,
        batch_timeout=0.1,
        alarm_sweep_interval=0.3,
    )
    consumer.subscribe([kafka.topic], on_assign=worker.on_assign, on_revoke=worker.on_revoke)
    try:
        drive(worker, lambda: AlarmEvent.objects.count() == 2 and all_published())
        alarm = Alarm.objects.get(kind="spo2_low")
        assert (alarm.state, alarm.priority) == ("active", "medium")

        response = api_client.post(f"/api/alarms/{alarm.pk}/acknowledge/")
        assert response.status_code == 200
        assert response.json()["state"] == "acknowledged"
        ack = AlarmEvent.objects.get(type="acknowledged")
        assert ack.published_at is None
        # No reading comes: the idle consumer's periodic sweep publishes it.
        drive(worker, all_published)

        # The patient recovers: both alarms resolve, the acknowledged one included.
        kafka.produce([message("gus", 15), message("gus", 20)])
        drive(worker, lambda: AlarmEvent.objects.count() == 5 and all_published())
    finally:
        worker.close()

    assert list(Alarm.objects.order_by("id").values_list("kind", "state", "acknowledged_by")) == [
        ("spo2_low", "resolved", user.pk),
        ("news2", "resolved", None),
    ]
    published = alarm_messages(kafka)
    assert [summary(value) for _, value, _ in published] == [
        ("raised", "spo2_low", "medium", "active", gus, "gus"),
        ("raised", "news2", "medium", "active", gus, "gus"),
        ("acknowledged", "spo2_low", "medium", "acknowledged", gus, "gus"),
        ("resolved", "spo2_low", "medium", "resolved", gus, "gus"),
        ("resolved", "news2", "medium", "resolved", gus, "gus"),
    ]
    assert {key for key, _, _ in published} == {gus.encode()}
    assert [value["event_id"] for _, value, _ in published] == event_ids()
    acknowledged = published[2][1]
    assert acknowledged["event_id"] == ack.pk
    assert acknowledged["alarm"]["id"] == alarm.pk
    assert acknowledged["alarm"]["acknowledged_by"] == "nurse"
    assert acknowledged["alarm"]["acknowledged_at"] is not None
    assert published[3][1]["alarm"]["resolved_at"] == (START + timedelta(seconds=20)).isoformat()
