"""An outside tester's attack on the alarms through concurrency and clicks (issue 20, round 2):
a nurse's double click, an acknowledgement meeting the consumer's resolve, the sweeps (no_data,
escalation) meeting a consumer's batch between their SELECT and their lock.

The races are made deterministic in-process, as test_tile_consistency.py does for pruning:
`patients_lock`, which every writer takes first, is replaced for one call by a stand-in that
lets the other writer commit first (what PostgreSQL's row lock lets happen between a sweep's
SELECT and its lock), then takes the real lock."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

import vitals.services as vitals_services
from patients.tests.factories import PatientFactory
from vitals.alarm_engine import AlarmEngine
from vitals.alarms import Decision
from vitals.errors import AlarmNotOpen
from vitals.models import Alarm, AlarmEvent, AuditEvent
from vitals.services import (
    alarm_acknowledge,
    alarm_decisions_bulk_apply,
    alarm_escalation_sweep,
    alarm_no_data_sweep,
    reading_bulk_store,
)
from vitals.tests.factories import AlarmFactory
from vitals.tests.test_alarm_engine import at, judge, reading

pytestmark = pytest.mark.django_db


def other_writer_first(monkeypatch, writer) -> None:
    """The next patients_lock of vitals.services runs `writer` (with the real lock) first."""
    real_lock = vitals_services.patients_lock

    def stand_in(*, patient_ids) -> None:
        monkeypatch.setattr(vitals_services, "patients_lock", real_lock)
        writer()
        real_lock(patient_ids=patient_ids)

    monkeypatch.setattr(vitals_services, "patients_lock", stand_in)


def test_a_double_click_acknowledges_once_and_a_resolved_alarm_is_refused(django_user_model):
    nurse = django_user_model.objects.create_user("nurse")
    patient = PatientFactory(name="ann")
    engine = AlarmEngine()
    judge(engine, [reading(patient, s, pulse=130) for s in (0, 5)])
    alarm = Alarm.objects.get(kind="pulse_high")

    first = alarm_acknowledge(alarm=alarm, user=nurse)
    second = alarm_acknowledge(alarm=alarm, user=nurse)  # the double click

    assert (second.state, second.acknowledged_at) == ("acknowledged", first.acknowledged_at)
    assert list(AlarmEvent.objects.order_by("id").values_list("type", flat=True)) == [
        "raised",
        "acknowledged",
    ]
    assert list(AuditEvent.objects.values_list("action", "username")) == [
        ("alarm.acknowledge", "nurse")
    ]

    # The consumer resolves it and raises it again in the same second; the nurse's click on
    # the row still on her screen (the old alarm) is refused, and the new one stays active.
    judge(engine, [reading(patient, s) for s in (10, 15)])
    judge(engine, [reading(patient, s, pulse=131) for s in (20, 25)])
    with pytest.raises(AlarmNotOpen, match=f"Alarm {alarm.pk} is already resolved."):
        alarm_acknowledge(alarm=alarm, user=nurse)
    assert list(
        Alarm.objects.filter(kind="pulse_high").order_by("id").values_list("state", "value")
    ) == [("resolved", 130), ("active", 131)]


def test_a_reading_stored_while_the_no_data_sweep_runs_raises_no_no_data(monkeypatch):
    patient = PatientFactory(name="ann")
    engine = AlarmEngine()
    twenty_ago = timezone.now() - timedelta(seconds=20)
    with transaction.atomic():
        engine.process(
            reading_bulk_store(readings=[reading(patient, 0)], received_at=twenty_ago).new
        )

    def batch_commits_first() -> None:
        judge(engine, [reading(patient, 5)])

    other_writer_first(monkeypatch, batch_commits_first)
    events = alarm_no_data_sweep(silent_for=timedelta(seconds=15))

    patient.refresh_from_db()
    assert patient.latest_metric.received_at > twenty_ago  # heard from, 0 s ago
    assert events == []
    assert list(Alarm.objects.values_list("kind", "state")) == []


def test_an_alarm_lowered_to_medium_while_the_escalation_sweep_runs_is_not_escalated(
    monkeypatch,
):
    patient = PatientFactory(name="ann")
    alarm = AlarmFactory(
        patient=patient,
        priority="high",
        message="SpO2 low: 84 % (< 90)",
        value=84,
        activated_at=timezone.now() - timedelta(seconds=121),
    )

    def batch_lowers_it_first() -> None:
        lowered = Decision(
            "priority", "spo2_low", "medium", 88, 90, "SpO2 low: 88 % (< 90)", timezone.now()
        )
        alarm_decisions_bulk_apply(decisions=[(patient, [lowered])])

    other_writer_first(monkeypatch, batch_lowers_it_first)
    events = alarm_escalation_sweep(unanswered_for=timedelta(seconds=120))

    alarm.refresh_from_db()
    assert (alarm.priority, alarm.message, alarm.escalated_at) == (
        "medium",
        "SpO2 low: 88 % (< 90)",
        None,
    )
    assert events == []
    assert list(AlarmEvent.objects.values_list("type", flat=True)) == ["priority_changed"]


def _story(patient, engines: list[AlarmEngine], spo2s: list[int]) -> None:
    """One reading a batch, 5 s apart, each judged by the next engine in turn."""
    for i, spo2 in enumerate(spo2s):
        judge(engines[i % len(engines)], [reading(patient, 5 * i, spo2=spo2)])


def _history(patient) -> list[tuple]:
    return list(
        Alarm.objects.filter(patient=patient, kind="spo2_low")
        .order_by("id")
        .values_list("priority", "state", "raised_at", "resolved_at")
    )


def test_two_engines_judging_a_patient_in_turn_raise_what_one_engine_raises():
    alone, shared = PatientFactory(name="alone"), PatientFactory(name="shared")
    spo2s = [98, 98, 84, 84, 84, 98, 98, 98]
    _story(alone, [AlarmEngine()], spo2s)
    _story(shared, [AlarmEngine(), AlarmEngine()], spo2s)

    assert _history(alone) == [("high", "resolved", at(15), at(30))]
    assert _history(shared) == _history(alone)


def test_an_acknowledgement_of_a_medium_alarm_that_became_high_meanwhile_does_not_silence_it(
    api_client,
):
    patient = PatientFactory(name="ann")
    judge(AlarmEngine(), [reading(patient, s, spo2=88) for s in (0, 5)])
    alarm = Alarm.objects.get(kind="spo2_low")
    shown = api_client.get(f"/api/alarms/{alarm.pk}/").json()
    assert (shown["priority"], shown["state"]) == ("medium", "active")
    judge(AlarmEngine(), [reading(patient, 10, spo2=84)])  # worse, at once: high

    response = api_client.post(
        f"/api/alarms/{alarm.pk}/acknowledge/", {"priority": shown["priority"]}, format="json"
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "alarm_changed"
    alarm.refresh_from_db()
    assert (alarm.priority, alarm.state, alarm.acknowledged_at) == ("high", "active", None)
