"""An outside tester's attack on the alarms through input (issue 20, round 2): what a monitor
really sends in a cardiac arrest. Through the consumer on fake Kafka clients (vitals/tests/
fakes.py): the message parsed by the contract, stored, judged."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from vitals.models import Alarm, PatientMetric
from vitals.tests.fakes import worker_create

pytestmark = pytest.mark.django_db


def message(patient: uuid.UUID, seconds_ago: float, **signs) -> tuple[bytes, bytes]:
    at = datetime.now(tz=UTC) - timedelta(seconds=seconds_ago)
    body = {
        "schema_version": 2,
        "patient_uuid": str(patient),
        "patient_name": "ann",
        "timestamp": at.isoformat(timespec="milliseconds"),
        **signs,
    }
    return str(patient).encode(), json.dumps(body).encode()


@pytest.mark.xfail(
    strict=True,
    reason=(
        "One sign outside the contract's plausible range, or an implausible pair, refuses the "
        "whole reading (DLQ out_of_range / implausible), the pulse with it: in a cardiac arrest "
        "an arterial line reads a flat pressure (systolic = diastolic, e.g. 35/35: 'systolic "
        "must be above diastolic'; or below the systolic floor of 30, e.g. 25/15) and an "
        "accidental-hypothermia arrest reads 24.5 °C (floor 25.0): the pulse 0 beside it is "
        "never judged, so no `asystole` (high, at once) is raised; only `no_data` (medium) "
        "sounds 15 s later, saying the monitor is silent. Fix (vitals/contract.py, both "
        "parsers): a sign outside its range or an implausible bp/map is dropped from the "
        "reading (as the HL7 gateway already does: gateway/pcd01.py _reading_refusals keeps "
        "every sign the contract takes, an ERR for each refused), the other signs kept and "
        "judged; the reading goes to the DLQ only when no sign is left (`no_signs`), and the "
        "dropped value is counted (rejected-sign metric) and said (a `sign_invalid` low "
        "technical alarm, or the existing sign_missing). At the least: systolic = diastolic "
        "(a flat arterial trace) is plausible, and the pressure floors are 0."
    ),
)
@pytest.mark.parametrize(
    "other",
    [
        pytest.param({"bp": "35/35"}, id="flat_arterial_pressure"),
        pytest.param({"bp": "25/15"}, id="systolic_below_30"),
        pytest.param({"temperature": 24.5}, id="deep_hypothermia"),
    ],
)
def test_a_pulse_of_0_raises_asystole_whatever_the_other_signs_of_the_arrest_read(other):
    asystole_raised_from(other)


def test_a_pulse_of_0_beside_a_low_pressure_in_range_raises_asystole():
    """The reference: the same message with a pressure the contract takes."""
    asystole_raised_from({"bp": "40/30"})


def asystole_raised_from(other: dict) -> None:
    worker, consumer, producer = worker_create()
    ann = uuid.uuid4()
    consumer.add([message(ann, 2, pulse=0, spo2=None, **other)])

    assert worker.process_batch() == 1

    assert producer.on("vitals.dlq") == []
    assert list(PatientMetric.objects.values_list("pulse", flat=True)) == [0]
    assert list(Alarm.objects.values_list("kind", "priority", "state", "value")) == [
        ("asystole", "high", "active", 0)
    ]
