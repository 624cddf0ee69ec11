"""Retention: `prune_vitals --older-than` deletes old readings in batches, nothing newer."""

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from patients.models import Patient
from patients.tests.factories import PatientFactory
from vitals.management.commands.prune_vitals import age_parse
from vitals.models import Alarm, AlarmEvent, PatientMetric
from vitals.services import reading_prune_batch
from vitals.tests.factories import AlarmFactory, PatientMetricFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def now():
    return timezone.now().replace(microsecond=0)


def reading(patient: Patient, now, days_ago: float) -> PatientMetric:
    return PatientMetricFactory(patient=patient, measured_at=now - timedelta(days=days_ago))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("3600s", timedelta(hours=1)),
        ("2w", timedelta(weeks=2)),
        (" 7d ", timedelta(days=7)),
    ],
)
def test_age_parse(text: str, expected: timedelta):
    assert age_parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("30", "'30' is not an age like 30d"),
        ("d", "'d' is not an age"),
        ("3 days", "'3 days' is not an age"),
        ("1.5d", "'1.5d' is not an age"),
        ("30y", "'30y' is not an age"),
        ("59s", "'59s' is less than a minute"),
        ("0d", "'0d' is less than a minute"),
    ],
)
def test_bad_ages_are_refused_before_anything_is_deleted(text: str, message: str, now):
    PatientMetricFactory(measured_at=now - timedelta(days=400))

    with pytest.raises(CommandError, match=message):
        call_command("prune_vitals", older_than=text)

    assert PatientMetric.objects.count() == 1


@pytest.mark.parametrize("batch_size", [0, 30_001])
def test_batch_size_is_bounded(batch_size: int):
    with pytest.raises(CommandError, match="--batch-size must be between 1 and 30000"):
        call_command("prune_vitals", older_than="30d", batch_size=batch_size)


def test_prune_deletes_only_readings_older_than_the_age_in_batches(now, capsys):
    ann, bob = PatientFactory(name="ann"), PatientFactory(name="bob")
    old = [reading(ann, now, 31 + i / 24) for i in range(7)] + [reading(bob, now, 45)]
    kept = [reading(ann, now, 29), reading(bob, now, 1), reading(bob, now, 0)]
    ann.latest_metric, bob.latest_metric = kept[0], kept[2]
    ann.save()
    bob.save()

    call_command("prune_vitals", older_than="30d", batch_size=3)

    assert set(PatientMetric.objects.values_list("pk", flat=True)) == {m.pk for m in kept}
    out = capsys.readouterr().out
    # 8 old readings in batches of 3: 3, 6, 8.
    assert [line.split(" (")[0] for line in out.splitlines() if line.startswith("deleted")] == [
        "deleted 3 reading(s) so far",
        "deleted 6 reading(s) so far",
        "deleted 8 reading(s) so far",
    ]
    assert "Deleted 8 reading(s) and 0 published alarm event(s) measured before" in out
    assert not PatientMetric.objects.filter(pk__in=[m.pk for m in old]).exists()
    ann.refresh_from_db()
    assert ann.latest_metric_id == kept[0].pk


def test_a_patient_whose_every_reading_is_old_keeps_no_latest_metric(now):
    ann = PatientFactory(name="ann")
    latest = reading(ann, now, 40)
    reading(ann, now, 41)
    ann.latest_metric = latest
    ann.save()

    assert reading_prune_batch(older_than=now - timedelta(days=30), batch_size=100) == 2

    ann.refresh_from_db()
    assert ann.latest_metric is None
    assert Patient.objects.filter(pk=ann.pk).exists()
    assert reading_prune_batch(older_than=now - timedelta(days=30), batch_size=100) == 0


def test_published_alarm_events_go_pending_ones_stay_alarms_stay(now):
    alarm = AlarmFactory()
    published_old = AlarmEvent.objects.create(
        alarm=alarm, type="raised", payload={}, published_at=now - timedelta(days=40)
    )
    published_new = AlarmEvent.objects.create(
        alarm=alarm, type="acknowledged", payload={}, published_at=now - timedelta(days=1)
    )
    pending = AlarmEvent.objects.create(alarm=alarm, type="resolved", payload={})
    AlarmEvent.objects.filter(pk=pending.pk).update(created_at=now - timedelta(days=50))

    call_command("prune_vitals", older_than="30d")

    assert set(AlarmEvent.objects.values_list("pk", flat=True)) == {
        published_new.pk,
        pending.pk,
    }
    assert not AlarmEvent.objects.filter(pk=published_old.pk).exists()
    assert Alarm.objects.filter(pk=alarm.pk).exists()


def test_dry_run_counts_and_deletes_nothing(now, capsys):
    for days in (40, 35, 2):
        reading(PatientFactory(), now, days)

    call_command("prune_vitals", older_than="30d", dry_run=True)

    assert capsys.readouterr().out.startswith("2 reading(s) measured before ")
    assert PatientMetric.objects.count() == 3
