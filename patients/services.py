"""Writes to patients."""

import uuid

from patients.models import Patient


def patient_bulk_get_or_create(*, names_by_uuid: dict[uuid.UUID, str]) -> dict[uuid.UUID, int]:
    """Primary keys of the patients with these uuids, creating the missing ones.

    Three queries at most whatever the number of patients. The name is taken at creation only:
    a later rename in the admin is not undone by the next reading. Safe against a concurrent
    consumer creating the same patient (the uuid is unique; the loser re-reads).
    """
    ids = dict(Patient.objects.filter(uuid__in=names_by_uuid).values_list("uuid", "id"))
    missing = [Patient(uuid=u, name=name) for u, name in names_by_uuid.items() if u not in ids]
    if missing:
        Patient.objects.bulk_create(missing, ignore_conflicts=True)
        created = Patient.objects.filter(uuid__in=[p.uuid for p in missing])
        ids.update(created.values_list("uuid", "id"))
    return ids
