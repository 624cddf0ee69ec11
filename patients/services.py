"""Writes to patients."""

import uuid

from patients.models import Patient


def patient_bulk_get_or_create(*, names_by_uuid: dict[uuid.UUID, str]) -> dict[uuid.UUID, Patient]:
    """The patients with these uuids, creating the missing ones (id, uuid, name and NEWS2
    scale loaded).

    Three queries at most whatever the number of patients. The name is taken at creation only:
    a later rename in the admin is not undone by the next reading. Safe against a concurrent
    consumer creating the same patient (the uuid is unique; the loser re-reads).
    """
    fields = ("id", "uuid", "name", "hypercapnic_respiratory_failure")
    found = {p.uuid: p for p in Patient.objects.filter(uuid__in=names_by_uuid).only(*fields)}
    missing = [Patient(uuid=u, name=name) for u, name in names_by_uuid.items() if u not in found]
    if missing:
        Patient.objects.bulk_create(missing, ignore_conflicts=True)
        created = Patient.objects.filter(uuid__in=[p.uuid for p in missing]).only(*fields)
        found.update((p.uuid, p) for p in created)
    return found
