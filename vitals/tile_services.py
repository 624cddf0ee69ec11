"""Writes of the ward's snapshot: each patient's entry of the ward list, kept encoded
(patients.models.PatientTile), so that the central station's poll reads one row per patient
instead of compiling three queries and building every patient, alarm and reading.

One function writes it, `patient_tiles_refresh`, called in the transaction of every change that
alters an entry: the consumer's batch (readings, alarms, name conflicts, monitoring started
again), an alarm acknowledged, escalated, raised by a sweep or resolved by a clinician's action,
alarms switched off and on, a rename or a name confirmed, the monitoring ended, an admission
that restarts it, a discharge, the NEWS2 scale changed, readings pruned. The entry is built by
the same code as the list's own answer (`patient_list` and `patient_data`), so a tile is the
list's answer for that patient at the time of its transaction; the request adds its links.
"""

from collections.abc import Iterable

from django.db import connection, transaction
from django.utils import timezone

from core.renderers import json_encode
from patients.models import Patient, PatientTile
from vitals.patient_selectors import patient_list
from vitals.patient_serializers import PATIENT_LINKS, patient_data

# Bumped whenever what a tile holds changes: tiles of another version are not served (the
# list builds those patients itself) until rewritten (`manage.py rebuild_patient_tiles`).
TILE_VERSION = 1

# How the pieces of a tile join: head, url, metrics_url, alarm_limits_url, middle,
# monitoring_ended_by, monitoring_end_url, tail.
HEAD_KEYS = ("uuid", "name", "mrn", "mrn_authority", "name_conflicts")
MIDDLE_KEYS = ("hypercapnic_respiratory_failure", "monitoring_ended_at")
TAIL_KEYS = (
    "created_at",
    "updated_at",
    "news2",
    "active_alarms",
    "alarms_off",
    "latest_metric",
    "latest_signs",
)


def tile_key() -> str:
    """The key of the tiles written, and served, in the current time zone."""
    return f"{TILE_VERSION}:{timezone.get_current_timezone_name()}"


def _members(data: dict, keys: tuple[str, ...]) -> str:
    """The members of `data` named `keys`, encoded as in an object, without its braces."""
    return json_encode({key: data[key] for key in keys})[1:-1].decode()


def patient_tile_pieces(patient: Patient) -> tuple[str, str, str]:
    """(head, middle, tail) of a patient read by patient_list, in the current time zone."""
    data = patient_data(
        patient,
        tz=timezone.get_current_timezone(),
        urls=dict.fromkeys(PATIENT_LINKS),
        ended_by=None,
    )
    return (
        "{" + _members(data, HEAD_KEYS) + ',"url":',
        "," + _members(data, MIDDLE_KEYS) + ',"monitoring_ended_by":',
        "," + _members(data, TAIL_KEYS) + "}",
    )


def patient_tiles_refresh(*, patient_ids: Iterable[int]) -> int:
    """Write the tiles of these patients as the database now has them; return how many.

    Call it inside the transaction of the change, after the change: the tile commits with it.
    Three statements on SQLite (the patients, their open alarms, one upsert), one more on
    PostgreSQL: the patients' rows locked first (in id order), so that two transactions
    changing one patient at once (the consumer's batch and an acknowledgement) write its tile
    one after the other, the second seeing the first's change. A patient no longer there
    (deleted: its tile went with it) is skipped."""
    ids = sorted(set(patient_ids))
    if not ids:
        return 0
    key = tile_key()
    with transaction.atomic(savepoint=False):
        if connection.features.has_select_for_update:
            list(Patient.objects.select_for_update().filter(pk__in=ids).values_list("pk"))
        rows = [
            (patient.pk, key, *patient_tile_pieces(patient))
            for patient in patient_list().filter(pk__in=ids).order_by()
        ]
        _tiles_upsert(rows)
    return len(rows)


def _tiles_upsert(rows: list[tuple]) -> None:
    """One INSERT ... ON CONFLICT DO UPDATE a chunk (SQLite and PostgreSQL)."""
    if not rows:
        return
    quote = connection.ops.quote_name
    columns = ["patient_id", "key", "head", "middle", "tail"]
    table = quote(PatientTile._meta.db_table)
    updates = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in columns[1:])
    per_chunk = 6000  # 30,000 parameters: within SQLite's 32,766 and PostgreSQL's 65,535
    with connection.cursor() as cursor:
        for start in range(0, len(rows), per_chunk):
            chunk = rows[start : start + per_chunk]
            values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(chunk))
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(map(quote, columns))}) VALUES {values} "  # noqa: S608
                f"ON CONFLICT ({quote('patient_id')}) DO UPDATE SET {updates}",
                [value for row in chunk for value in row],
            )


def patient_tiles_rebuild(*, batch_size: int = 500) -> int:
    """Write every patient's tile (a new installation, a new TILE_VERSION, another TIME_ZONE):
    `batch_size` patients a transaction; return how many."""
    done = 0
    last = 0
    while True:
        ids = list(
            Patient.objects.filter(pk__gt=last)
            .order_by("pk")
            .values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            return done
        done += patient_tiles_refresh(patient_ids=ids)
        last = ids[-1]
