"""Patient.latest_metric: a pointer the consumer rewrites for every patient of every batch,
kept without an index or a foreign-key constraint in the database, so that on PostgreSQL the
rewrite is a HOT update (no index entry, the page's dead versions pruned in place: issue 20,
ingest), and kept right by its writers: the consumer points it at readings it has just inserted
(same transaction); pruning clears it under the patient's lock (vitals/tests/test_prune.py);
a reading deleted through the ORM clears it (on_delete=SET_NULL, done by Django)."""

import pytest
from django.db import connection

from patients.models import Patient
from patients.tests.factories import PatientFactory
from vitals.tests.factories import PatientMetricFactory

pytestmark = pytest.mark.django_db


def test_the_latest_reading_pointer_has_no_index_or_constraint_to_keep_up():
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, "patients_patient")
    on_pointer = {
        name: (c["unique"], c["index"], c["foreign_key"])
        for name, c in constraints.items()
        if "latest_metric_id" in c["columns"]
    }
    assert on_pointer == {}


def test_a_reading_deleted_through_the_orm_leaves_its_patient_without_a_latest_reading():
    patient = PatientFactory()
    older, newest = PatientMetricFactory.create_batch(2, patient=patient)
    other = PatientFactory()
    Patient.objects.filter(pk=patient.pk).update(latest_metric=newest)
    Patient.objects.filter(pk=other.pk).update(latest_metric=older)

    newest.delete()

    assert Patient.objects.get(pk=patient.pk).latest_metric is None
    assert Patient.objects.get(pk=other.pk).latest_metric == older


def test_a_patient_deleted_with_their_readings_goes_cleanly():
    patient = PatientFactory()
    reading = PatientMetricFactory(patient=patient)
    Patient.objects.filter(pk=patient.pk).update(latest_metric=reading)

    patient.delete()

    assert not Patient.objects.filter(pk=patient.pk).exists()
