"""An alarm closed by someone else than the consumer's alarm engine (a clinician's ALARM OFF, a
discharge) while the patient's values stay beyond the limit: the running consumer must raise it
again as a restarted one would. Found while testing the ward's snapshot (test_tile_consistency):
the engine keeps which alarms are open in memory across batches (vitals/alarm_engine.py) and
reads them from the database only the first time it sees a patient, so it takes the closed
alarm for open, and a deteriorating patient shows no alarm until the values come back inside
the limits once (or the consumer restarts)."""

import uuid

import pytest

from patients.models import Patient
from patients.tests.test_api import reading
from units.models import Bed, Unit
from units.services import admission_create, admission_discharge
from vitals.models import Alarm
from vitals.services import alarm_switch_off, alarm_switch_on
from vitals.tests.fakes import worker_create

pytestmark = pytest.mark.django_db


def switched_off_and_on(patient: Patient, user) -> None:
    """ALARM OFF by mistake, on again at once (no reading in between)."""
    alarm_switch_off(patient=patient, kind="pulse_high", reason="wrong patient", user=user)
    alarm_switch_on(patient=patient, kind="pulse_high", user=user)


def discharged_and_admitted_again(patient: Patient, user) -> None:
    """Discharged from the wrong bed and admitted again (a discharge resolves every alarm)."""
    bed = Bed.objects.create(
        unit=Unit.objects.create(code="icu", name="ICU"), label="1", position=1
    )
    admission_create(patient=patient, bed=bed, by=user)
    admission_discharge(patient=patient, by=user)
    admission_create(patient=patient, bed=bed, by=user)


@pytest.mark.parametrize("action", [switched_off_and_on, discharged_and_admitted_again])
@pytest.mark.parametrize(
    "restarted",
    [
        pytest.param(False, id="running"),
        pytest.param(True, id="restarted"),
    ],
)
def test_an_alarm_closed_by_a_clinician_is_raised_again_while_its_condition_lasts(
    user, action, restarted
) -> None:
    worker, consumer, _ = worker_create()
    ann = uuid.uuid4()

    def batch(*minutes: int) -> None:
        consumer.add_readings([reading(ann, "Ann", m, pulse=135) for m in minutes])
        assert worker.process_batch() == len(minutes)

    batch(0, 1, 2, 3)
    assert Alarm.objects.filter(kind="pulse_high", state="active").count() == 1
    action(Patient.objects.get(uuid=ann), user)
    assert not Alarm.objects.filter(kind="pulse_high", state__in=["active", "acknowledged"])
    if restarted:  # what a restarted consumer (or one taking over the partition) does
        worker, consumer, _ = worker_create()

    batch(4, 5, 6)  # pulse still 135: beyond the limit for longer than its delay
    assert Alarm.objects.filter(kind="pulse_high", state="active").count() == 1
