"""The writers' lock order (patients.services.patients_lock): a patient's row first, then
their alarms, then their tile, as the consumer's batch takes them. A writer taking an alarm
first and the patient after (for the tile) deadlocked with a batch on PostgreSQL: one of them
aborted after deadlock_timeout, a 500 for the clinician. SQLite's writers take turns: nothing
to try there."""

import re
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from patients.models import Patient
from patients.tests.factories import PatientFactory
from patients.tests.ward import tiles_stale
from units.models import Admission, Bed, Unit
from units.services import admission_create, admission_discharge
from vitals.alarms import Decision
from vitals.contract import Reading
from vitals.models import Alarm, AlarmOff
from vitals.services import (
    alarm_acknowledge,
    alarm_decisions_bulk_apply,
    alarm_escalation_sweep,
    alarm_switch_off,
    patient_latest_reading_refresh,
    reading_bulk_store,
)
from vitals.tests.factories import AlarmFactory, PatientMetricFactory
from vitals.tile_services import patient_tiles_refresh

pytestmark = [
    pytest.mark.django_db(transaction=True),  # each thread's own connection and transaction
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="row locks: SQLite's writers are serialized (one writer at a time)",
    ),
]


def _blocked(pid: int) -> bool:
    """Whether the backend `pid` waits for a lock (pg_locks is read live, not per snapshot)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", [pid])
        return cursor.fetchone()[0] > 0


def _race(batch: Callable[[], None], writer: Callable[[], None]) -> list[BaseException]:
    """The batch's first half (its patient's row locked), then the writer started and let run
    until it waits for a lock, then the batch's second half (`batch`: the alarm, the tile);
    the exceptions either raised."""
    errors: list[BaseException] = []
    ready = threading.Barrier(2)
    writer_pid: list[int] = []

    def run_batch(patient: Patient) -> None:
        try:
            with transaction.atomic():
                metric = patient.latest_metric
                patient_latest_reading_refresh(new=[metric])  # the batch's patient row lock
                ready.wait(timeout=10)
                deadline = time.monotonic() + 10
                while not _blocked(writer_pid[0]):
                    assert time.monotonic() < deadline, "the writer never waited for a lock"
                    time.sleep(0.01)
                batch()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    def run_writer() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                writer_pid.append(cursor.fetchone()[0])
            ready.wait(timeout=10)
            writer()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    patient = Patient.objects.select_related("latest_metric").get()
    threads = [
        threading.Thread(target=run_batch, args=(patient,)),
        threading.Thread(target=run_writer),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    return errors


@pytest.fixture
def ann(user) -> Patient:
    """A patient with a reading, an admission and an open medium SpO2 alarm, active since
    long ago (due for escalation once high)."""
    patient = PatientFactory(name="Ann")
    metric = PatientMetricFactory(patient=patient)
    Patient.objects.filter(pk=patient.pk).update(latest_metric=metric)
    AlarmFactory(patient=patient, activated_at=timezone.now() - timedelta(hours=1))
    icu = Unit.objects.create(code="icu-a", name="ICU A")
    admission_create(
        patient=patient, bed=Bed.objects.create(unit=icu, label="A1", position=1), by=user
    )
    patient_tiles_refresh(patient_ids=[patient.pk])
    return Patient.objects.get(pk=patient.pk)


WRITERS = {
    "alarm_switch_off": lambda ann, alarm, user: alarm_switch_off(
        patient=ann, kind="spo2_low", reason="probe", user=user
    ),
    "alarm_acknowledge": lambda ann, alarm, user: alarm_acknowledge(alarm=alarm, user=user),
    "alarm_escalation_sweep": lambda ann, alarm, user: alarm_escalation_sweep(
        unanswered_for=timedelta(minutes=1)
    ),
    "admission_discharge": lambda ann, alarm, user: admission_discharge(patient=ann, by=user),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_writer_and_a_batch_changing_one_patients_alarm_take_turns(ann, user, writer) -> None:
    """The batch holds the patient's row and then raises the alarm's priority (medium ->
    high, one decision), while the writer runs: the writer waits for the batch (the patient
    first), then sees its change; no deadlock, both done."""
    alarm = Alarm.objects.get()
    if writer == "alarm_escalation_sweep":
        Alarm.objects.filter(pk=alarm.pk).update(priority="high")  # due for escalation

    def batch() -> None:
        raised = Decision(
            action="priority",
            kind="spo2_low",
            priority="high",
            value=84,
            threshold=85,
            message="SpO2 low: 84 % (< 85)",
            at=timezone.now(),
        )
        alarm_decisions_bulk_apply(decisions=[(ann, [raised])])
        patient_tiles_refresh(patient_ids=[ann.pk])

    errors = _race(batch, lambda: WRITERS[writer](ann, alarm, user))

    assert errors == []
    alarm.refresh_from_db()
    assert (alarm.priority, alarm.value) == ("high", 84)  # the batch's change, kept
    expected = {
        "alarm_switch_off": lambda: (alarm.state, AlarmOff.objects.count()) == ("resolved", 1),
        "alarm_acknowledge": lambda: (
            (alarm.state, alarm.acknowledged_priority) == ("acknowledged", "high")
        ),
        "alarm_escalation_sweep": lambda: alarm.escalated_at is not None,
        "admission_discharge": lambda: (
            (alarm.state, Admission.objects.get().end_reason) == ("resolved", "discharge")
        ),
    }
    assert expected[writer]()
    assert tiles_stale() == []


def test_a_batch_locks_its_patients_in_id_order_before_writing_any_of_them() -> None:
    """The batch's first lock on its patients' rows is one SELECT ... FOR UPDATE of all of
    them, in id order (patients_lock), before the UPDATE of their latest_metric (which locks
    rows in whatever order its plan visits them, here the order received): so a batch and
    another writer locking several patients in id order (a prune, a refresh of their tiles)
    wait for each other instead of deadlocking."""
    first, second, third = PatientFactory.create_batch(3)
    # Received newest patient first: the UPDATE's own order would be third, second, first.
    readings = [
        Reading(
            patient_uuid=patient.uuid,
            patient_name=patient.name,
            measured_at=timezone.now() - timedelta(seconds=10),
            pulse=72,
            resp_rate=14,
            systolic=120,
            diastolic=80,
            spo2=98,
            temperature=36.8,
        )
        for patient in (third, second, first)
    ]

    with CaptureQueriesContext(connection) as queries:
        result = reading_bulk_store(readings=readings)

    assert result.stored == 3
    locking = [
        q["sql"]
        for q in queries.captured_queries
        if re.search(r'FOR UPDATE|^UPDATE "patients_patient"', q["sql"])
    ]
    assert len(locking) == 2, locking
    lock, update = locking
    # Ordered by the first column selected: the id; the latest reading as the lock finds it
    # comes with it (the alarm engine checks its memory against it).
    assert lock.startswith(
        'SELECT "patients_patient"."id" AS "pk", "patients_patient"."latest_metric_id" AS '
        '"latest_metric_id" FROM "patients_patient" '
    )
    assert lock.endswith(" ORDER BY 1 ASC FOR UPDATE")
    # All of them, in one statement (the ids one parameter: core.sql.values_in).
    assert f"unnest('{{{first.pk},{second.pk},{third.pk}}}'" in lock
    assert update.startswith('UPDATE "patients_patient" SET "latest_metric_id"')
