"""Writes to patients."""

import unicodedata
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import connection

from core.sql import values_in
from patients.models import Patient, PatientNameConflict


def patient_bulk_get_or_create(*, names_by_uuid: dict[uuid.UUID, str]) -> dict[uuid.UUID, Patient]:
    """The patients with these uuids, creating the missing ones (id, uuid, name and NEWS2
    scale loaded).

    Three queries at most whatever the number of patients. The name is taken at creation only:
    a later rename in the admin is not undone by the next reading (a reading with another name
    is an identity conflict: `patient_name_conflicts_record`). Safe against a concurrent
    consumer creating the same patient (the uuid is unique; the loser re-reads).
    """
    fields = (
        *("id", "uuid", "name", "hypercapnic_respiratory_failure", "latest_signs", "mrn"),
        "latest_metric",  # its id: the consumer's alarm engine checks its memory against it
    )
    found = {p.uuid: p for p in Patient.objects.filter(uuid__in=names_by_uuid).only(*fields)}
    missing = [Patient(uuid=u, name=name) for u, name in names_by_uuid.items() if u not in found]
    if missing:
        Patient.objects.bulk_create(missing, ignore_conflicts=True)
        created = Patient.objects.filter(uuid__in=[p.uuid for p in missing]).only(*fields)
        found.update((p.uuid, p) for p in created)
    return found


def patients_lock(*, patient_ids: Iterable[int]) -> dict[int, int | None]:
    """Lock these patients' rows until the transaction ends (FOR UPDATE, in id order), on
    PostgreSQL; nothing on SQLite, whose writers take turns. Call it inside a transaction.
    Return each locked patient's `latest_metric_id` as the lock found it (the newest committed:
    the consumer's batch tells from it whether another consumer stored readings since its
    alarm engine judged the patient); {} on SQLite.

    The lock order of every writer: the patients first, then their alarms, then their tiles
    (vitals/tile_services.py). The consumer's batch takes its patients' rows first (it updates
    `latest_metric`), then their alarms; a writer taking an alarm first (a clinician's ALARM OFF,
    an acknowledgement, a sweep, a discharge) and then the patient (for the tile) would deadlock
    with a batch, one of them aborted after `deadlock_timeout`. Its row locked first, a patient
    is changed by one writer at a time, the others waiting their turn."""
    ids = sorted(set(patient_ids))
    if ids and connection.features.has_select_for_update:
        # The ids as one parameter (values_in): a placeholder each was parsed by psycopg in
        # Python, some 8 ms for a consumer's batch of 1,000 patients.
        return dict(
            Patient.objects.select_for_update()
            .filter(pk__in=values_in(ids))
            .order_by("pk")
            .values_list("pk", "latest_metric_id")
        )
    return {}


@dataclass(frozen=True)
class NameMismatch:
    """Readings of a batch whose name is not their patient's: what the consumer logs."""

    patient_uuid: uuid.UUID
    patient_name: str
    name_seen: str
    readings: int


def patient_name_conflicts_record(
    *,
    patients: dict[uuid.UUID, Patient],
    names_seen: Iterable[tuple[uuid.UUID, str]],
    seen_at: datetime,
) -> list[NameMismatch]:
    """Record the names (one per stored reading, NFC) that differ from their patient's.

    One row per (patient, name) ever seen, upserted: count and last_seen_at brought up to date,
    resolved_at left as it is (a confirmed name stays dismissed). One statement for the whole
    batch, none when every name matches (the usual case). Call it in the batch's transaction.
    """
    own = {u: unicodedata.normalize("NFC", p.name) for u, p in patients.items()}
    counts = Counter((u, name) for u, name in names_seen if name != own[u])
    if not counts:
        return []
    table = PatientNameConflict._meta
    quote = connection.ops.quote_name
    columns = ["patient_id", "name", "first_seen_at", "last_seen_at", "count", "resolution"]
    at = connection.ops.adapt_datetimefield_value(seen_at)
    rows = [(patients[u].pk, name, at, at, n, "") for (u, name), n in counts.items()]
    values = ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * len(rows))
    count = quote("count")
    sql = (
        f"INSERT INTO {quote(table.db_table)} ({', '.join(map(quote, columns))}) "  # noqa: S608
        f"VALUES {values} ON CONFLICT ({quote('patient_id')}, {quote('name')}) DO UPDATE SET "
        f"{quote('last_seen_at')} = excluded.{quote('last_seen_at')}, "
        f"{count} = {quote(table.db_table)}.{count} + excluded.{count}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [value for row in rows for value in row])
    return [
        NameMismatch(patient_uuid=u, patient_name=patients[u].name, name_seen=name, readings=n)
        for (u, name), n in counts.items()
    ]
