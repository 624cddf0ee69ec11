from uuid import UUID

from django.db.models import QuerySet

from access.models import PatientAccess


def patient_access_list(
    *, patient_uuid: UUID | None = None, username: str | None = None
) -> QuerySet[PatientAccess]:
    """Who read which patient's data, newest first; of one patient (by uuid: a patient deleted
    since is still found) and of one user (by username), when given."""
    rows = PatientAccess.objects.all()
    if patient_uuid is not None:
        rows = rows.filter(patient_uuid=patient_uuid)
    if username:
        rows = rows.filter(username=username)
    return rows.order_by("-first_at", "-id")
