"""Writes of the ward's snapshot: each patient's entry of the ward list, kept encoded
(patients.models.PatientTile), so that the central station's poll reads one row per patient
instead of compiling three queries and building every patient, alarm and reading.

One function writes it, `patient_tiles_refresh`, called in the transaction of every change that
alters an entry: the consumer's batch (readings, alarms, name conflicts, monitoring started
again), an alarm acknowledged, escalated, raised by a sweep or resolved by a clinician's action,
alarms switched off and on, a rename or a name confirmed, the monitoring ended, an admission
that restarts it, a discharge, the NEWS2 scale changed, readings pruned, an MRN given
(patient_identify: ADT and PCD-01). Every writer locks the patient's row first, then alarms,
then the tile (patients.services.patients_lock). The entry is built by
the same code as the list's own answer (`patient_list` and `patient_data`), so a tile is the
list's answer for that patient at the time of its transaction; the request adds its links.
"""

import logging
from collections.abc import Iterable, Mapping
from datetime import tzinfo

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from core.renderers import json_encode
from core.sql import values_in
from patients.models import Patient, PatientTile
from patients.services import patients_lock
from vitals.models import PatientMetric
from vitals.patient_selectors import open_alarms_prefetch, patient_list
from vitals.patient_serializers import PATIENT_LINKS, patient_data

# Bumped whenever what a tile holds changes: tiles of another version are not served (the
# list builds those patients itself) until rewritten (`manage.py rebuild_patient_tiles`).
TILE_VERSION = 1

logger = logging.getLogger(__name__)

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


def patient_tile_pieces(patient: Patient, *, tz: tzinfo | None = None) -> tuple[str, str, str]:
    """(head, middle, tail) of a patient read by patient_list, in the time zone `tz` (the
    current one if not given: a refresh looks it up once, not once a patient)."""
    data = patient_data(
        patient,
        tz=tz or timezone.get_current_timezone(),
        urls=dict.fromkeys(PATIENT_LINKS),
        ended_by=None,
    )
    return (
        "{" + _members(data, HEAD_KEYS) + ',"url":',
        "," + _members(data, MIDDLE_KEYS) + ',"monitoring_ended_by":',
        "," + _members(data, TAIL_KEYS) + "}",
    )


def patient_tiles_refresh(
    *,
    patient_ids: Iterable[int],
    latest: Mapping[int, PatientMetric] | None = None,
    locked: bool = False,
) -> int:
    """Write the tiles of these patients as the database now has them; return how many.

    Call it inside the transaction of the change, after the change: the tile commits with it.
    Three statements on SQLite (the patients, their open alarms, one upsert), one more on
    PostgreSQL: the patients' rows locked first (in id order), so that two transactions
    changing one patient at once (the consumer's batch and an acknowledgement) write its tile
    one after the other, the second seeing the first's change. A patient no longer there
    (deleted: its tile went with it) is skipped.

    `latest`: readings the caller holds in memory, by patient id (the consumer's batch, which
    has just pointed each patient's `latest_metric` at them): a patient whose `latest_metric`
    is the one given is built from it instead of reading it back (joining the readings and
    building a model instance of each was a third of the refresh); any other latest reading
    is read in one more statement. The tile is the same either way (tested).

    `locked`: the caller already holds these patients' row locks in this transaction
    (patients_lock, taken first: the consumer's batch), so they are not locked again (one
    SELECT ... FOR UPDATE of up to 1,000 rows a batch saved)."""
    ids = sorted(set(patient_ids))
    if not ids:
        return 0
    key = tile_key()
    tz = timezone.get_current_timezone()
    with transaction.atomic(savepoint=False):
        if not locked:
            patients_lock(patient_ids=ids)
        # The ids as one parameter (values_in), here and for the open alarms: Django's IN list
        # of a placeholder each, parsed by psycopg in Python, cost some 10 ms a batch of 1,000.
        queryset = patient_list().filter(pk__in=values_in(ids)).order_by().prefetch_related(None)
        if latest is None:
            patients = list(queryset)
        else:
            rows = queryset.select_related(None).values()
            patients = _latest_metrics_attach([_TilePatient(row) for row in rows], latest)
        _open_alarms_attach(patients, ids)
        rows = [(patient.pk, key, *patient_tile_pieces(patient, tz=tz)) for patient in patients]
        _tiles_upsert(rows)
    return len(rows)


def patient_tiles_refresh_or_drop(
    *,
    patient_ids: Iterable[int],
    latest: Mapping[int, PatientMetric] | None = None,
    locked: bool = False,
) -> int:
    """`patient_tiles_refresh` in a savepoint, for a caller whose own change must commit
    whatever happens to the tiles (the consumer's batch: a tile that cannot be built must not
    stop the ingest, which would meet the same batch again at every restart). Should building
    a tile fail (anything but a database error, which is the caller's), these patients' tiles
    are deleted instead (the list builds those patients itself, the slow path, until their
    next change writes them), the error logged with the exception; return the tiles written,
    0 then. A database error goes up as from patient_tiles_refresh."""
    ids = sorted(set(patient_ids))
    try:
        with transaction.atomic():  # a savepoint
            return patient_tiles_refresh(patient_ids=ids, latest=latest, locked=locked)
    except DatabaseError:
        raise
    except Exception as exc:
        PatientTile.objects.filter(patient_id__in=values_in(ids)).delete()
        logger.error(
            "patient tiles not built: dropped, the ward list builds these patients itself",
            exc_info=exc,
            extra={"patients": len(ids), "error": f"{type(exc).__name__}: {exc}"},
        )
        return 0


class _TilePatient:
    """A patient as patient_list reads them, for a tile: the row's values (what `.values()`
    gives, the same converters as the model's) as attributes, without building a Patient
    (Model.__init__ and from_db for every patient of a batch were a tenth of the refresh).
    Only what patient_data reads of a patient, and `pk`."""

    def __init__(self, row: dict) -> None:
        self.__dict__.update(row)
        self.pk = row["id"]


def _open_alarms_attach(patients: list["Patient | _TilePatient"], ids: list[int]) -> None:
    """Set each patient's `open_alarms` as patient_list's prefetch gives them (its queryset,
    so its order), the ids one parameter."""
    by_patient: dict[int, list] = {patient.pk: [] for patient in patients}
    alarms = open_alarms_prefetch().queryset.filter(patient_id__in=values_in(ids))
    for alarm in alarms:
        by_patient[alarm.patient_id].append(alarm)
    for patient in patients:
        patient.open_alarms = by_patient[patient.pk]


def _latest_metrics_attach(
    patients: list["Patient | _TilePatient"], latest: Mapping[int, PatientMetric]
) -> list["Patient | _TilePatient"]:
    """Set each patient's `latest_metric` (read without it) from `latest` when it is the one
    the row points at, the others read in one statement (none in the consumer's batch)."""
    missing = []
    for patient in patients:
        metric = latest.get(patient.pk)
        if patient.latest_metric_id is None:
            patient.latest_metric = None
        elif metric is not None and metric.pk == patient.latest_metric_id:
            patient.latest_metric = metric
        else:
            missing.append(patient)
    if missing:
        metrics = PatientMetric.objects.in_bulk([p.latest_metric_id for p in missing])
        for patient in missing:
            patient.latest_metric = metrics[patient.latest_metric_id]
    return patients


def _tiles_upsert(rows: list[tuple]) -> None:
    """INSERT ... ON CONFLICT DO UPDATE. On PostgreSQL the rows go through COPY into a
    temporary table (vitals.services._copy_stage, as the batch's other writes), then one
    INSERT ... SELECT: the server reads each tile as it is. A JSON array of the rows, split by
    json_array_elements, made the server parse every 1.6 kB tile once for each of its five
    ->> (a third of the batch's server time, 30 us a tile). On SQLite, whose driver binds
    parameters natively, a VALUES list a chunk."""
    if not rows:
        return
    quote = connection.ops.quote_name
    fields = [
        PatientTile._meta.get_field(name) for name in ("patient", "key", "head", "middle", "tail")
    ]
    names = ", ".join(quote(f.column) for f in fields)
    head = f"INSERT INTO {quote(PatientTile._meta.db_table)} ({names}) "
    updates = ", ".join(f"{quote(f.column)} = excluded.{quote(f.column)}" for f in fields[1:])
    tail = f" ON CONFLICT ({quote(fields[0].column)}) DO UPDATE SET {updates}"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            from vitals.services import _copy_stage  # here: vitals.services imports this module

            stage = _copy_stage(cursor, model=PatientTile, fields=fields, rows=rows)
            cursor.execute(f"{head}SELECT {names} FROM {stage}{tail}")  # noqa: S608 (names only)
            return
        per_chunk = 6000  # 30,000 parameters: within SQLite's 32,766
        for start in range(0, len(rows), per_chunk):
            chunk = rows[start : start + per_chunk]
            values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(chunk))
            cursor.execute(
                f"{head}VALUES {values}{tail}",
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
