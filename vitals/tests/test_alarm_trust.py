"""Issue 14, "alarms you can trust", against the database: what an acknowledgement covers, a
monitor clock that is off, the alarms no reading raises (`no_data`, escalation of an alarm
nobody answers), ending a patient's monitoring. The same paths through the real broker and
consumers are in test_alarms_e2e.py."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from patients.models import Patient
from patients.tests.factories import PatientFactory
from vitals.alarm_engine import AlarmEngine
from vitals.contract import Reading
from vitals.models import Alarm, AlarmEvent, AuditEvent
from vitals.services import (
    alarm_acknowledge,
    alarm_escalation_sweep,
    alarm_no_data_sweep,
    patient_monitoring_end,
    reading_bulk_store,
)
from vitals.tests.factories import AlarmFactory, PatientMetricFactory
from vitals.tests.test_alarm_engine import NORMAL, at, judge, reading

pytestmark = pytest.mark.django_db

NEWS2_5 = {"resp_rate": 22, "spo2": 94, "pulse": 105, "temperature": 38.3}  # 2+1+1+1
NEWS2_8 = {"resp_rate": 25, "spo2": 91, "pulse": 105, "temperature": 38.3}  # 3+3+1+1


def news2_alarm() -> Alarm:
    return Alarm.objects.select_related("acknowledged_by").get(kind="news2")


def event_log(kind: str) -> list[tuple]:
    return [
        (e.type, e.payload["alarm"]["priority"], e.payload["alarm"]["state"],
         e.payload["alarm"]["message"], e.payload.get("reactivated", False))
        for e in AlarmEvent.objects.filter(alarm__kind=kind).order_by("id")
    ]  # fmt: skip


# --- 1. an acknowledgement covers the alarm at the priority acknowledged ------------------------


def test_an_acknowledged_alarm_whose_priority_rises_is_active_again_and_a_fall_alerts_nobody(
    django_user_model,
):
    nurse = django_user_model.objects.create_user("nurse")
    carol = PatientFactory(name="carol")
    engine = AlarmEngine()
    judge(engine, [reading(carol, 0, **NEWS2_5), reading(carol, 5, **NEWS2_5)])
    alarm = alarm_acknowledge(alarm=news2_alarm(), user=nurse)
    assert (alarm.state, alarm.acknowledged_priority, alarm.acknowledged_message) == (
        "acknowledged",
        "medium",
        "NEWS2 5 (medium risk)",
    )
    activated = alarm.activated_at

    # NEWS2 rises to 8: the acknowledgement of a medium alarm does not cover a high one.
    assert ("priority_changed", "news2") in judge(engine, [reading(carol, 10, **NEWS2_8)])
    alarm = news2_alarm()
    assert (alarm.state, alarm.priority, alarm.message) == ("active", "high", "NEWS2 8 (high risk)")
    # What was acknowledged, by whom, stays on record; unanswered again from now.
    assert (alarm.acknowledged_by, alarm.acknowledged_priority, alarm.acknowledged_message) == (
        nurse,
        "medium",
        "NEWS2 5 (medium risk)",
    )
    assert alarm.activated_at > activated
    assert alarm.escalated_at is None

    # Acknowledged at high, then better (medium) for the delay: lower, still acknowledged.
    alarm_acknowledge(alarm=alarm, user=nurse)
    judge(engine, [reading(carol, 15, **NEWS2_5)])
    assert news2_alarm().priority == "high"  # one reading is not enough to lower it
    judge(engine, [reading(carol, 20, **NEWS2_5)])
    alarm = news2_alarm()
    assert (alarm.state, alarm.priority, alarm.acknowledged_priority) == (
        "acknowledged",
        "medium",
        "high",
    )
    # And high again: the acknowledgement covered high, nobody is re-alerted.
    judge(engine, [reading(carol, 25, **NEWS2_8)])
    assert (news2_alarm().state, news2_alarm().priority) == ("acknowledged", "high")

    assert event_log("news2") == [
        ("raised", "medium", "active", "NEWS2 5 (medium risk)", False),
        ("acknowledged", "medium", "acknowledged", "NEWS2 5 (medium risk)", False),
        ("priority_changed", "high", "active", "NEWS2 8 (high risk)", True),
        ("acknowledged", "high", "acknowledged", "NEWS2 8 (high risk)", False),
        ("priority_changed", "medium", "acknowledged", "NEWS2 5 (medium risk)", False),
        ("priority_changed", "high", "acknowledged", "NEWS2 8 (high risk)", False),
    ]
    # The audit trail says what each acknowledgement covered.
    assert list(
        AuditEvent.objects.filter(action="alarm.acknowledge").order_by("id").values_list("after")
    ) == [
        ({"state": "acknowledged", "priority": "medium", "message": "NEWS2 5 (medium risk)"},),
        ({"state": "acknowledged", "priority": "high", "message": "NEWS2 8 (high risk)"},),
    ]


# --- 2. a monitor clock that is off ------------------------------------------------------------


def monitor(patient: Patient, seconds: float, offset: float, **values) -> Reading:
    """A reading taken at T0 + seconds, sent at once, by a monitor whose clock is `offset`
    seconds ahead (negative: behind)."""
    real = reading(patient, seconds, **values)
    return Reading(
        **{
            **{f: getattr(real, f) for f in Reading.__dataclass_fields__},
            "measured_at": real.measured_at + timedelta(seconds=offset),
            "sent_at": real.measured_at,
        }
    )


@pytest.mark.parametrize("offset", [290, -290, -3600])
def test_a_monitor_whose_clock_is_off_gets_the_same_alarms_at_the_same_moments(offset):
    right, wrong = PatientFactory(name="right"), PatientFactory(name="wrong")
    # Both in cardiac arrest from the third reading on; judged batch by batch, as received.
    story = [NORMAL, NORMAL, {"pulse": 0}, {"pulse": 0}, {"pulse": 0}, NORMAL, NORMAL, NORMAL]
    for i, values in enumerate(story):
        judge(
            AlarmEngine() if i == 4 else ENGINE,  # a restart on the way changes nothing
            [monitor(right, 5 * i, 0, **values), monitor(wrong, 5 * i, offset, **values)],
        )

    def history(patient):
        return list(
            Alarm.objects.filter(patient=patient)
            .exclude(kind="clock_skew")
            .order_by("kind")
            .values_list("kind", "priority", "state", "raised_at", "resolved_at")
        )

    assert history(wrong) == history(right)
    assert ("asystole", "high", "resolved", at(10), at(25)) in history(right)
    # Stored as the monitor sent it: charts and exports show the monitor's own time.
    assert wrong.metrics.order_by("pk").first().measured_at == at(offset)
    # The offset itself is a low-priority technical alarm naming it.
    way = "ahead" if offset > 0 else "behind"
    assert list(
        Alarm.objects.filter(kind="clock_skew").values_list(
            "patient__name", "priority", "state", "message", "value", "raised_at"
        )
    ) == [("wrong", "low", "active", f"Monitor clock {abs(offset)} s {way}", offset, at(5))]


ENGINE = AlarmEngine()


@pytest.fixture(autouse=True)
def _fresh_engine():
    ENGINE.forget()


def test_a_clock_within_the_tolerance_raises_nothing_and_a_fixed_clock_clears_the_alarm():
    patient = PatientFactory()
    engine = AlarmEngine(clock_skew_warn=30)
    judge(engine, [monitor(patient, 0, 29), monitor(patient, 5, -29)])
    assert not Alarm.objects.exists()
    judge(engine, [monitor(patient, 10, 31), monitor(patient, 15, 31)])
    assert list(Alarm.objects.values_list("kind", "state", "message")) == [
        ("clock_skew", "active", "Monitor clock 31 s ahead")
    ]
    # Back within 80% of the tolerance for the delay (two readings): resolved.
    judge(engine, [monitor(patient, 20, 25), monitor(patient, 25, 2), monitor(patient, 30, 1)])
    # Resolved at the latest time judged: the 25-s-ahead reading, trusted within the tolerance
    # (times never go back).
    assert list(Alarm.objects.values_list("kind", "state", "resolved_at")) == [
        ("clock_skew", "resolved", at(45))
    ]


# --- 7. a monitor that falls silent ------------------------------------------------------------


def silent_patient(name: str, seconds_ago: float) -> Patient:
    patient = PatientFactory(name=name)
    received = timezone.now() - timedelta(seconds=seconds_ago)
    metric = PatientMetricFactory(patient=patient, measured_at=received, received_at=received)
    Patient.objects.filter(pk=patient.pk).update(latest_metric=metric)
    return patient


def test_no_data_is_raised_once_per_silence_and_resolved_by_the_next_reading():
    quiet = silent_patient("quiet", 20)
    silent_patient("talking", 5)

    [event] = alarm_no_data_sweep(silent_for=timedelta(seconds=15))
    assert alarm_no_data_sweep(silent_for=timedelta(seconds=15)) == []  # one per silence
    alarm = Alarm.objects.get()
    assert (alarm.patient, alarm.kind, alarm.priority, alarm.state, alarm.threshold) == (
        quiet,
        "no_data",
        "medium",
        "active",
        15,
    )
    assert alarm.message.startswith("No data for 20 s (last reading received ")
    assert 20 <= alarm.value < 25
    assert (event.type, event.payload["alarm"]["kind"]) == ("raised", "no_data")

    # The next reading ends the silence.
    with transaction.atomic():
        result = reading_bulk_store(readings=[reading(quiet, 0)])
        written = AlarmEngine().process(result.new)
    assert [(e.type, e.alarm.kind) for e in written] == [("resolved", "no_data")]
    alarm.refresh_from_db()
    assert (alarm.state, alarm.resolved_at) == ("resolved", result.new[0].received_at)
    # Heard from: nothing to raise; a new silence is a new alarm.
    assert alarm_no_data_sweep(silent_for=timedelta(seconds=15)) == []
    later = timezone.now() + timedelta(seconds=16)
    assert len(alarm_no_data_sweep(silent_for=timedelta(seconds=15), now=later)) == 2


def test_ending_monitoring_resolves_no_data_stops_it_is_audited_and_a_reading_starts_it_again(
    django_user_model,
):
    nurse = django_user_model.objects.create_user("nurse")
    gone = silent_patient("gone", 60)
    alarm_no_data_sweep(silent_for=timedelta(seconds=15))

    patient_monitoring_end(patient=gone, user=nurse)
    patient_monitoring_end(patient=gone, user=nurse)  # twice: nothing more

    gone.refresh_from_db()
    assert gone.monitoring_ended_by == nurse
    assert gone.monitoring_ended_at is not None
    assert list(Alarm.objects.values_list("kind", "state")) == [("no_data", "resolved")]
    assert alarm_no_data_sweep(silent_for=timedelta(seconds=15)) == []
    assert list(
        AuditEvent.objects.values_list("action", "object_type", "username", "patient_uuid")
    ) == [("patient.monitoring_end", "patient", "nurse", gone.uuid)]

    with transaction.atomic():
        AlarmEngine().process(reading_bulk_store(readings=[reading(gone, 0)]).new)
    gone.refresh_from_db()
    assert (gone.monitoring_ended_at, gone.monitoring_ended_by) == (None, None)


# --- 8. a high alarm nobody answers ------------------------------------------------------------


def test_a_high_alarm_unanswered_for_the_delay_is_escalated_once_per_activation(
    django_user_model,
):
    now = timezone.now()
    old = now - timedelta(seconds=121)
    due = AlarmFactory(kind="asystole", priority="high", activated_at=old)
    AlarmFactory(kind="spo2_low", priority="high", activated_at=now - timedelta(seconds=60))
    AlarmFactory(kind="pulse_high", priority="medium", activated_at=old)
    AlarmFactory(kind="news2", priority="high", activated_at=old, state="acknowledged")

    [event] = alarm_escalation_sweep(unanswered_for=timedelta(seconds=120))
    assert alarm_escalation_sweep(unanswered_for=timedelta(seconds=120)) == []
    due.refresh_from_db()
    assert due.escalated_at is not None
    assert (event.type, event.alarm_id, event.payload["alarm"]["escalated_at"]) == (
        "escalated",
        due.pk,
        due.escalated_at.isoformat(),
    )
    assert list(Alarm.objects.filter(escalated_at__isnull=False).values_list("pk")) == [(due.pk,)]
