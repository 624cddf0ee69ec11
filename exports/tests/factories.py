from datetime import timedelta

import factory
from django.conf import settings
from django.utils import timezone

from exports.models import Export, ExportFormat
from patients.models import Patient
from patients.tests.factories import PatientFactory
from vitals.models import PatientMetric
from vitals.tests.factories import T0, PatientMetricFactory


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = settings.AUTH_USER_MODEL
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user-{n:03d}")


class ExportFactory(factory.django.DjangoModelFactory):
    """A pending CSV export of a new patient's readings, by a new user, expiring after
    EXPORT_RESULT_TTL."""

    class Meta:
        model = Export

    requested_by = factory.SubFactory(UserFactory)
    patient = factory.SubFactory(PatientFactory)
    patient_uuid = factory.SelfAttribute("patient.uuid")
    format = ExportFormat.CSV
    expires_at = factory.LazyFunction(lambda: timezone.now() + settings.EXPORT_RESULT_TTL)


def readings_create(patient: Patient, count: int, start=T0) -> list[PatientMetric]:
    """`count` readings 5 s apart from `start`, varied: every fifth flagged as an artefact
    (not scored), the others scored, with changing values, oxygen and consciousness."""
    readings = []
    for n in range(count):
        artefact = "spo2_probe_off" if n % 5 == 4 else ""
        readings.append(
            PatientMetricFactory(
                patient=patient,
                measured_at=start + timedelta(seconds=5 * n, microseconds=1000 * (n % 3)),
                pulse=60 + n % 70,
                resp_rate=12 + n % 20,
                systolic=100 + n % 60,
                diastolic=60 + n % 30,
                spo2=0 if artefact else 88 + n % 12,
                temperature=round(35.5 + (n % 40) / 10, 1),
                on_oxygen=n % 2 == 1,
                consciousness="ACVPU"[n % 5],
                artefact=artefact,
                news2_score=None if artefact else n % 21,
                news2_risk=None if artefact else ("low", "low-medium", "medium", "high")[n % 4],
                spo2_scale=1 + n % 2,
            )
        )
    return readings
