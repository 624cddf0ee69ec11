"""Reads of vital-sign readings."""

from datetime import datetime

from django.db.models import QuerySet

from patients.models import Patient
from vitals.models import PatientMetric


def metric_list(
    *, patient: Patient, since: datetime | None = None, until: datetime | None = None
) -> QuerySet[PatientMetric]:
    """A patient's readings, newest first, with since <= measured_at <= until.

    Served by the (patient, measured_at) unique index.
    """
    metrics = PatientMetric.objects.filter(patient=patient)
    if since is not None:
        metrics = metrics.filter(measured_at__gte=since)
    if until is not None:
        metrics = metrics.filter(measured_at__lte=until)
    return metrics.order_by("-measured_at")
