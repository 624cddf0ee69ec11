import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.sql import values_in
from patients.models import Patient
from patients.tests.factories import PatientFactory

pytestmark = pytest.mark.django_db


def test_values_in_selects_what_an_in_list_does_with_one_parameter():
    patients = PatientFactory.create_batch(5)
    ids = [p.pk for p in patients[1:4]] + [10**9]  # and one that is nobody's
    uuids = [p.uuid for p in patients[:2]] + [uuid.UUID(int=7)]

    with CaptureQueriesContext(connection) as queries:
        by_id = set(Patient.objects.filter(pk__in=values_in(ids)).values_list("pk", flat=True))
        by_uuid = set(
            Patient.objects.filter(uuid__in=values_in(uuids)).values_list("pk", flat=True)
        )
        none = list(Patient.objects.filter(pk__in=values_in([])))

    assert by_id == set(Patient.objects.filter(pk__in=ids).values_list("pk", flat=True))
    assert by_id == {p.pk for p in patients[1:4]}
    assert by_uuid == {p.pk for p in patients[:2]}
    assert none == []
    assert len(queries) == 3
    # Each list is one parameter, whatever its length: no placeholder per value.
    _, params = Patient.objects.filter(pk__in=values_in(range(1, 501))).query.sql_with_params()
    assert len(params) == 1
