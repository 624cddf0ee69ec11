from datetime import UTC, datetime, timedelta

import factory

from patients.tests.factories import PatientFactory
from vitals.models import Alarm, AlarmLimits, PatientMetric

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


class PatientMetricFactory(factory.django.DjangoModelFactory):
    """A normal adult reading; readings of a sequence are 5 s apart from T0."""

    class Meta:
        model = PatientMetric

    patient = factory.SubFactory(PatientFactory)
    measured_at = factory.Sequence(lambda n: T0 + timedelta(seconds=5 * n))
    pulse = 72
    resp_rate = 14
    systolic = 120
    diastolic = 80
    spo2 = 98
    temperature = 36.8
    received_at = factory.LazyAttribute(lambda m: m.measured_at + timedelta(milliseconds=300))


class AlarmLimitsFactory(factory.django.DjangoModelFactory):
    """A patient's alarm limits row, holding the bedside defaults unless told otherwise."""

    class Meta:
        model = AlarmLimits

    patient = factory.SubFactory(PatientFactory)


class AlarmFactory(factory.django.DjangoModelFactory):
    """An active medium-priority SpO2 alarm, raised at T0."""

    class Meta:
        model = Alarm

    patient = factory.SubFactory(PatientFactory)
    kind = "spo2_low"
    priority = "medium"
    state = "active"
    message = "SpO2 low: 88 % (< 90)"
    value = 88
    threshold = 90
    raised_at = T0
