"""What the consumer tells the log: alarm changes and DLQ'd messages, each with the patient's
uuid where it is known, so that one patient's story can be found among many."""

import logging
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from patients.tests.factories import PatientFactory
from vitals.contract import Reading
from vitals.tests.fakes import worker_create

pytestmark = pytest.mark.django_db

RECENT = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(minutes=5)


def reading(patient_uuid: uuid.UUID, seconds: int, **values) -> Reading:
    normal = {"pulse": 72, "resp_rate": 14, "systolic": 120, "diastolic": 80, "spo2": 98}
    return Reading(
        patient_uuid=patient_uuid,
        patient_name="ann",
        measured_at=RECENT + timedelta(seconds=seconds),
        temperature=36.8,
        **(normal | values),
    )


def test_alarm_changes_are_logged_with_the_patient(caplog):
    patient = PatientFactory(name="ann")
    worker, consumer, _ = worker_create()
    consumer.add_readings([reading(patient.uuid, s, pulse=130) for s in (0, 5)])

    with caplog.at_level(logging.INFO, logger="vitals.services"):
        worker.process_batch()

    [record] = [r for r in caplog.records if r.name == "vitals.services"]
    assert record.getMessage() == "alarm raised"
    assert (record.patient_uuid, record.kind, record.priority, record.state) == (
        str(patient.uuid),
        "pulse_high",
        "medium",
        "active",
    )
    assert record.alarm_message == "Pulse high: 130 /min (> 120)"


def test_dlq_lines_name_the_patient_when_the_key_is_a_uuid(caplog):
    known = uuid.uuid4()
    worker, consumer, _ = worker_create()
    consumer.add([(str(known).encode(), b"{not json"), (b"bed 7", b"{not json"), (None, b"[]")])

    with caplog.at_level(logging.WARNING, logger="vitals.consumer"):
        worker.process_batch()

    lines = [r for r in caplog.records if r.getMessage() == "invalid reading sent to the DLQ"]
    assert [(r.reason, r.key, r.patient_uuid) for r in lines] == [
        ("invalid_json", str(known), str(known)),
        ("invalid_json", "bed 7", None),
        ("not_an_object", "", None),
    ]
