"""reading_bulk_store: exactly-once storage of a batch, patients created on first reading."""

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from patients.models import Patient
from patients.services import patient_bulk_get_or_create
from patients.tests.factories import PatientFactory
from vitals import services
from vitals.contract import Reading
from vitals.models import PatientMetric
from vitals.services import PatientCache, reading_bulk_store
from vitals.signs import SIGN_KEYS

pytestmark = pytest.mark.django_db

# PostgreSQL: each write of many rows (the readings, latest_metric) COPYs them into a temporary
# table first, which takes one statement more (its CREATE IF NOT EXISTS; TRUNCATE; the COPY
# goes around Django's cursor wrapper, uncounted).
STAGED = 1 if connection.vendor == "postgresql" else 0
# PostgreSQL: a batch locks its patients' rows first, in id order (patients_lock): one SELECT
# ... FOR UPDATE; SQLite's writers take turns, nothing to lock.
LOCKED = 1 if connection.vendor == "postgresql" else 0
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
BOB = uuid.UUID("6f1c2a9e-8d4b-4c3e-9f0a-1b2c3d4e5f60")
ANN = uuid.UUID("0a9b8c7d-6e5f-4a3b-8c1d-2e3f4a5b6c7d")


def reading(patient_uuid: uuid.UUID = BOB, seconds: float = 0, pulse: int = 72, **kw) -> Reading:
    values = {
        "patient_name": "bob" if patient_uuid == BOB else "ann",
        "resp_rate": 14,
        "systolic": 120,
        "diastolic": 80,
        "spo2": 98,
        "temperature": 36.8,
        **kw,
    }
    return Reading(
        patient_uuid=patient_uuid,
        measured_at=T0 + timedelta(seconds=seconds),
        pulse=pulse,
        **values,
    )


def stored() -> list[tuple]:
    return list(
        PatientMetric.objects.order_by("patient__name", "measured_at").values_list(
            "patient__name", "measured_at", "pulse", "systolic", "diastolic", "temperature"
        )
    )


def test_stores_readings_and_creates_patients_on_first_reading():
    received = T0 + timedelta(seconds=10)
    result = reading_bulk_store(
        readings=[reading(BOB, 0, 70), reading(BOB, 5, 75), reading(ANN, 0, 90, temperature=38.4)],
        received_at=received,
    )

    assert (result.stored, result.duplicates, result.patients) == (3, 0, 2)
    assert sorted(Patient.objects.values_list("name", "uuid")) == [("ann", ANN), ("bob", BOB)]
    assert stored() == [
        ("ann", T0, 90, 120, 80, 38.4),
        ("bob", T0, 70, 120, 80, 36.8),
        ("bob", T0 + timedelta(seconds=5), 75, 120, 80, 36.8),
    ]
    assert set(PatientMetric.objects.values_list("received_at", flat=True)) == {received}


def test_duplicates_within_a_batch_are_stored_once_first_copy_wins():
    conflicting = reading(seconds=0, pulse=99)
    result = reading_bulk_store(
        readings=[reading(seconds=0, pulse=70), reading(seconds=0, pulse=70), conflicting]
    )

    # The exact copy is a silent duplicate; the one with other values is returned.
    assert (result.stored, result.duplicates) == (1, 1)
    assert result.conflicting == [conflicting]
    assert stored() == [("bob", T0, 70, 120, 80, 36.8)]


def test_a_reading_conflicting_with_a_stored_one_is_returned_in_one_query(
    django_assert_num_queries,
):
    reading_bulk_store(readings=[reading(BOB, s, 70) for s in range(4)])
    batch = [
        reading(BOB, 0, 70),  # an exact copy: a duplicate
        reading(BOB, 0, 70, patient_name="Robert"),  # the name is the patient's, not the reading's
        reading(BOB, 1, 71),  # another pulse
        reading(BOB, 2, 70, on_oxygen=True),  # on oxygen
        reading(BOB, 3, 70, artefact="motion"),  # flagged as an artefact
        reading(ANN, 0, 90),  # new
    ]

    # As a batch without conflicts (7) plus ONE select of the stored rows it did not insert.
    with django_assert_num_queries(8 + 2 * STAGED + LOCKED):
        result = reading_bulk_store(readings=batch)

    assert (result.stored, result.duplicates) == (1, 2)
    assert result.conflicting == batch[2:5]
    assert stored() == [
        ("ann", T0, 90, 120, 80, 36.8),
        *(("bob", T0 + timedelta(seconds=s), 70, 120, 80, 36.8) for s in range(4)),
    ]
    assert set(PatientMetric.objects.values_list("on_oxygen", "artefact")) == {(False, "")}


def test_redelivered_batch_changes_nothing():
    batch = [reading(seconds=s, pulse=60 + s) for s in range(5)]
    reading_bulk_store(readings=batch)
    before = stored()

    again = reading_bulk_store(readings=[*batch, reading(seconds=99, pulse=101)])

    assert (again.stored, again.duplicates) == (1, 5)
    assert stored() == [*before, ("bob", T0 + timedelta(seconds=99), 101, 120, 80, 36.8)]
    assert Patient.objects.count() == 1


def test_latest_metric_is_the_newest_reading_received_whatever_its_stamp():
    # Issue 14: a monitor clock running 290 s fast made its future reading "latest" until real
    # time caught up, and the readings after it were never shown.
    reading_bulk_store(readings=[reading(seconds=300, pulse=80)])
    bob = Patient.objects.get(uuid=BOB)
    assert bob.latest_metric.pulse == 80

    # Received after it, stamped before it: the latest is what was received last.
    reading_bulk_store(readings=[reading(seconds=10, pulse=65)])
    bob.refresh_from_db()
    assert (bob.latest_metric.measured_at, bob.latest_metric.pulse) == (
        T0 + timedelta(seconds=10),
        65,
    )

    # Within a batch, the last one received (the batch is in arrival order).
    reading_bulk_store(readings=[reading(seconds=15, pulse=91), reading(seconds=12, pulse=88)])
    bob.refresh_from_db()
    assert bob.latest_metric.pulse == 88

    # A reading delivered again is not received anew: the latest stays.
    reading_bulk_store(readings=[reading(seconds=300, pulse=80)])
    bob.refresh_from_db()
    assert bob.latest_metric.pulse == 88


def test_existing_patient_keeps_its_name_when_a_reading_carries_another():
    PatientFactory(uuid=BOB, name="Robert Smith (bed 4)")

    reading_bulk_store(readings=[reading(BOB, 0)])

    assert Patient.objects.get(uuid=BOB).name == "Robert Smith (bed 4)"
    assert Patient.objects.count() == 1


def test_empty_batch_writes_nothing():
    result = reading_bulk_store(readings=[])
    assert (result.stored, result.duplicates, result.patients) == (0, 0, 0)
    assert PatientMetric.objects.count() == 0


def test_query_count_does_not_grow_with_the_batch(django_assert_num_queries):
    """One write of the readings per batch: 200 readings of 50 patients in 7 queries."""
    patients = [uuid.UUID(int=i + 1) for i in range(50)]
    batch = [reading(p, seconds=s) for p in patients for s in range(4)]
    # SAVEPOINT, patients select, patients insert, re-select, ONE insert of the 200 readings,
    # latest_metric update, RELEASE.
    with django_assert_num_queries(7 + 2 * STAGED + LOCKED):
        result = reading_bulk_store(readings=batch)
    assert (result.stored, result.patients) == (200, 50)
    assert (
        Patient.objects.filter(latest_metric__measured_at=T0 + timedelta(seconds=3)).count() == 50
    )


def test_patient_bulk_get_or_create_returns_old_and_new_patients():
    old = PatientFactory(uuid=ANN, name="ann", hypercapnic_respiratory_failure=True)

    found = patient_bulk_get_or_create(names_by_uuid={ANN: "ann", BOB: "bob"})

    assert {u: (p.pk, p.name, p.spo2_scale) for u, p in found.items()} == {
        ANN: (old.pk, "ann", 2),
        BOB: (Patient.objects.get(uuid=BOB).pk, "bob", 1),
    }
    again = patient_bulk_get_or_create(names_by_uuid={BOB: "renamed"})
    assert {u: (p.pk, p.name) for u, p in again.items()} == {BOB: (found[BOB].pk, "bob")}


def test_a_batch_is_one_insert_that_knows_which_rows_went_in(django_assert_num_queries):
    patients = [uuid.UUID(int=i + 1) for i in range(50)]
    first = reading_bulk_store(readings=[reading(p, seconds=0) for p in patients[:10]])
    batch = [reading(p, seconds=s) for p in patients for s in range(4)]  # 10 already stored

    # SAVEPOINT, patients select, insert, re-select, ONE insert of 200 rows, ONE select of the
    # 10 it skipped (to tell exact copies from conflicting ones), update, RELEASE.
    with django_assert_num_queries(8 + 2 * STAGED + LOCKED) as captured:
        result = reading_bulk_store(readings=batch)

    inserts = [q["sql"] for q in captured if q["sql"].startswith('INSERT INTO "vitals_')]
    assert len(inserts) == 1
    assert "RETURNING" in inserts[0]
    # PostgreSQL: no parameter at all, the rows COPYed into a temporary table.
    assert ('FROM "stage_vitals_patientmetric_' in inserts[0]) is bool(STAGED)
    assert (" VALUES " in inserts[0]) is not bool(STAGED)
    assert (result.stored, result.duplicates, result.conflicting) == (190, 10, [])
    stored = dict(
        PatientMetric.objects.exclude(pk__in=[m.pk for m in first.new]).values_list(
            "pk", "measured_at"
        )
    )
    assert {m.pk: m.measured_at for m in result.new} == stored


def test_sqlite_splits_a_batch_at_its_limit_on_parameters_and_still_knows_which_rows_went_in(
    monkeypatch, django_assert_num_queries
):
    """A statement holds at most SQLite's limit of parameters: a limit of 3 rows' worth plus
    one lets 3 rows through, so 10 readings take 4 INSERTs; the rows already stored are told
    apart in every one."""
    if connection.vendor != "sqlite":
        pytest.skip("the limit on parameters that splits a batch is SQLite's")
    limit = 3 * len(services._INSERT_FIELDS) + 1
    monkeypatch.setattr(services, "_max_query_params", lambda: limit)
    first = reading_bulk_store(readings=[reading(seconds=s) for s in (1, 4, 7)])

    # 4 INSERTs, the 4 other queries, and the one SELECT of the 3 rows skipped.
    with django_assert_num_queries(4 + 4 + 1) as captured:
        result = reading_bulk_store(readings=[reading(seconds=s) for s in range(10)])

    inserts = [q["sql"] for q in captured if q["sql"].startswith('INSERT INTO "vitals_')]
    assert len(inserts) == 4
    assert (result.stored, result.duplicates, result.conflicting) == (7, 3, [])
    assert [m.measured_at for m in result.new] == [
        T0 + timedelta(seconds=s) for s in (0, 2, 3, 5, 6, 8, 9)
    ]
    assert {m.pk for m in result.new}.isdisjoint(m.pk for m in first.new)
    assert dict(PatientMetric.objects.values_list("pk", "measured_at")) == {
        m.pk: m.measured_at for m in first.new + result.new
    }


def test_the_row_written_is_what_django_would_write_for_every_column():
    """The write path skips Field.get_db_prep_save() for speed (only datetimes are adapted):
    for every column, the value it sends must be the one Django would have sent."""
    patient = PatientFactory(hypercapnic_respiratory_failure=True)
    artefact = reading(seconds=0.25, artefact="motion", on_oxygen=True, consciousness="V")
    partial = reading(seconds=0.5, spo2=None, systolic=None, diastolic=None, etco2=38)
    for one in (artefact, partial):
        metric = services._reading(
            one, patient, T0 + timedelta(seconds=1), {}, settings.SIGN_VALIDITY
        )
        expected = [
            f.get_db_prep_save(getattr(metric, f.attname), connection)
            for f in services._INSERT_FIELDS
        ]
        written = services._reading_db_values(metric)
        # The batch's remembered adaptation (equal instants in other offsets too) is the same.
        adapt = services._datetime_adapter()
        adapt(metric.measured_at.astimezone(timezone(timedelta(hours=-3, minutes=-30))))
        assert services._reading_db_values(metric, adapt) == written
        # JSON: the same document (PostgreSQL's adapter holds it as `obj`, cast from the text
        # the write path sends).
        for i in services._JSON_COLUMNS:
            if expected[i] is not None:
                prepared = expected[i]
                expected[i] = json.loads(prepared) if isinstance(prepared, str) else prepared.obj
                written[i] = json.loads(written[i])

        assert written == expected
    assert (metric.news2_subscores["spo2"], metric.news2_missing) == (None, ["spo2", "systolic"])
    assert {f.name for f in services._INSERT_FIELDS} == {
        f.name for f in PatientMetric._meta.concrete_fields
    } - {"id"}


def test_a_reading_built_without_model_init_is_what_django_would_build():
    """`_reading` builds its PatientMetric without Model.__init__ (speed): every field, the
    patient and the instance's state must be what `PatientMetric(...)` gives."""
    patient = PatientFactory(hypercapnic_respiratory_failure=True)
    sent = T0 - timedelta(seconds=2)
    for one in (
        reading(seconds=0.25, artefact="motion", on_oxygen=True, consciousness="V"),
        reading(seconds=0.5, spo2=None, systolic=None, diastolic=None, etco2=38, sent_at=sent),
    ):
        built = services._reading(
            one, patient, T0 + timedelta(seconds=1), {}, settings.SIGN_VALIDITY
        )
        django = PatientMetric(
            patient=patient,
            measured_at=one.measured_at,
            **{key: getattr(one, key) for key in SIGN_KEYS},
            on_oxygen=one.on_oxygen,
            consciousness=one.consciousness,
            artefact=one.artefact or "",
            spo2_scale=patient.spo2_scale,
            received_at=T0 + timedelta(seconds=1),
            sent_at=one.sent_at,
            news2_score=built.news2_score,
            news2_risk=built.news2_risk,
            news2_subscores=built.news2_subscores,
            news2_missing=built.news2_missing,
        )
        fields = [f.attname for f in PatientMetric._meta.concrete_fields]
        assert [getattr(built, name) for name in fields] == [
            getattr(django, name) for name in fields
        ]
        assert built.patient is patient
        assert (built._state.adding, built._state.db) == (True, None)
        # What the alarm engine reads besides the fields: the score, whether it is late, and
        # the signs the contract refused in it.
        assert set(built.__dict__) - {"news2", "late", "refused"} == set(django.__dict__)
        assert (built.late, built.refused) == (False, ())


def test_rows_written_in_bulk_keep_every_character_and_value_on_both_engines():
    """Bulk writes send their values as parameters (SQLite) or through COPY's text format
    (PostgreSQL: `_copy_stage`, escaped): tabs, newlines, backslashes, a text that reads as
    COPY's NULL, JSON holding them, a null and an offset datetime come back as sent."""
    ann, bob = PatientFactory(name="ann"), PatientFactory(name="bob")
    tricky = "a\tb\nc\\N \\ \r end ü"
    signs = {"pulse": {"value": 72, "measured_at": "2026-11-23T10:00:00+01:00", "note": tricky}}
    services._rows_update(
        model=Patient,
        fields=["name", "latest_signs", "monitoring_ended_at"],
        rows=[
            (
                ann.pk,
                tricky,
                signs,
                datetime(2026, 11, 23, 11, 0, tzinfo=timezone(timedelta(hours=1))),
            ),
            (bob.pk, "\\N", {}, None),
        ],
    )

    assert list(
        Patient.objects.order_by("pk").values_list("name", "latest_signs", "monitoring_ended_at")
    ) == [(tricky, signs, T0), ("\\N", {}, None)]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="COPY: PostgreSQL's")
def test_copy_stage_writes_each_kind_of_value_as_postgresql_reads_it():
    """The staged rows are read back as they were given: NULL, text with COPY's special
    characters, a model's choice (a str subclass: its value), floats, a time at another
    offset (the same instant), booleans, integers, JSON as its text."""
    from vitals.models import Alarm, AlarmState

    def staged(model, names: tuple[str, ...], rows: list[list]) -> list[list]:
        fields = [model._meta.get_field(name) for name in names]
        with connection.cursor() as cursor:
            stage = services._copy_stage(cursor, model=model, fields=fields, rows=rows)
            cursor.execute(f"SELECT * FROM {stage}")  # noqa: S608 (a name _copy_stage made)
            return [list(row) for row in cursor.fetchall()]

    offset = timezone(timedelta(hours=-3, minutes=-30))
    text = "a\tb\nc\rd\\e \\N"
    alarms = ("message", "state", "value", "threshold", "raised_at", "activated_at")
    assert staged(
        Alarm, alarms, [[text, AlarmState.RESOLVED, 36.8, None, T0.astimezone(offset), None]]
    ) == [[text, "resolved", 36.8, None, T0, None]]
    metrics = ("on_oxygen", "pulse", "temperature", "news2_subscores")
    assert staged(
        PatientMetric, metrics, [[True, 72, -0.5, '{"a": "\\t"}'], [False, 0, None, None]]
    ) == [[True, 72, -0.5, '{"a": "\\t"}'], [False, 0, None, None]]  # jsonb, read as its text


def test_a_batch_after_one_rolled_back_is_stored_whole():
    """The rows of a batch whose transaction failed are gone with it, and so is what it
    staged on PostgreSQL (the temporary table, when that batch created it): the next batch
    stores exactly its own rows."""

    def failing_batch() -> None:
        with transaction.atomic():
            reading_bulk_store(readings=[reading(BOB, s) for s in range(3)])
            raise RuntimeError("the alarm engine failed")

    with pytest.raises(RuntimeError):
        failing_batch()
    result = reading_bulk_store(readings=[reading(BOB, s) for s in range(2, 5)])
    again = reading_bulk_store(readings=[reading(BOB, s) for s in range(4, 6)])

    assert (result.stored, again.stored, again.duplicates) == (3, 1, 1)
    assert list(
        PatientMetric.objects.order_by("measured_at").values_list("measured_at", flat=True)
    ) == [T0 + timedelta(seconds=s) for s in range(2, 6)]


def test_alarms_and_events_inserted_in_bulk_are_the_rows_django_would_write_with_their_ids():
    """`_objects_insert` (the alarm writes) prepares values without get_db_prep_save() and
    sets ids from RETURNING: for every column of an alarm and an event the value sent is
    Django's, the rows stored are the instances, in order, each with its own id, across
    SQLite's split of a statement (a limit of 3 rows' worth) and PostgreSQL's COPY."""
    from django.contrib.auth import get_user_model

    from vitals.models import Alarm, AlarmEvent

    patient = PatientFactory()
    nurse = get_user_model().objects.create_user("nurse")
    alarms = [
        Alarm(
            patient=patient,
            kind=f"kind_{n}",
            priority="high",
            state="acknowledged",
            message=f"Pulse high: {130 + n} /min (> 120)\tnote",
            value=130 + n,  # an int, as a reading's value is: stored as a float
            threshold=None if n % 2 else 120.5,
            raised_at=T0 + timedelta(seconds=n),
            activated_at=T0,
            acknowledged_at=T0 + timedelta(seconds=30),
            acknowledged_by=nurse,
            acknowledged_priority="medium",
            resolved_at=None,
        )
        for n in range(7)
    ]
    fields = [f for f in Alarm._meta.concrete_fields if not f.primary_key]
    for alarm in alarms[:1]:
        expected = [f.get_db_prep_save(f.pre_save(alarm, True), connection) for f in fields]
        sent = services._db_values(fields, [f.pre_save(alarm, True) for f in fields])
        created = fields.index(Alarm._meta.get_field("created_at"))
        expected[created] = sent[created] = None  # auto_now_add: each call its own now
        assert sent == expected

    limit = 3 * len(fields) + 1
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(services, "_max_query_params", lambda: limit)
        inserted = services._objects_insert(model=Alarm, objs=alarms)
    events = services._objects_insert(
        model=AlarmEvent,
        objs=[
            AlarmEvent(alarm=a, type="raised", payload={"alarm": {"id": a.pk}, "m": a.message})
            for a in alarms
        ],
    )

    assert inserted == alarms
    assert len({a.pk for a in alarms}) == 7
    stored = {a.pk: a for a in Alarm.objects.all()}
    for alarm in alarms:
        row = stored[alarm.pk]
        assert (row.kind, row.message, row.value, row.threshold, row.raised_at) == (
            alarm.kind,
            alarm.message,
            float(alarm.value),
            alarm.threshold,
            alarm.raised_at,
        )
        assert (row.acknowledged_by_id, row.created_at) == (nurse.pk, alarm.created_at)
        assert not alarm._state.adding
    assert list(AlarmEvent.objects.order_by("pk").values_list("pk", "alarm_id", "payload")) == [
        (e.pk, e.alarm_id, {"alarm": {"id": e.alarm_id}, "m": e.alarm.message}) for e in events
    ]


# --- Patient identity: a name that differs from the patient's -----------------------------------


def test_a_reading_with_another_name_is_stored_under_its_uuid_and_recorded_once_per_name(
    django_assert_num_queries,
):
    from patients.models import PatientNameConflict

    reading_bulk_store(readings=[reading(BOB, 0)], received_at=T0)
    first, second = T0 + timedelta(seconds=10), T0 + timedelta(seconds=20)
    batch = [
        reading(BOB, 1, patient_name="Mallory Impostor"),
        reading(BOB, 2, patient_name="Mallory Impostor"),
        reading(BOB, 3, patient_name="bob"),
        reading(ANN, 1, patient_name="ann"),
    ]

    # SAVEPOINT, patients select, insert ann, re-select, readings insert, ONE upsert of the
    # names seen, latest_metric update, RELEASE.
    with django_assert_num_queries(8 + 2 * STAGED + LOCKED):
        result = reading_bulk_store(readings=batch, received_at=first)
    again = reading_bulk_store(
        readings=[reading(BOB, 4, patient_name="Mallory Impostor"), *batch],  # batch: replayed
        received_at=second,
    )

    assert Patient.objects.get(uuid=BOB).name == "bob"  # the uuid is the identity
    assert PatientMetric.objects.filter(patient__uuid=BOB).count() == 5
    assert [
        (m.patient_uuid, m.patient_name, m.name_seen, m.readings) for m in result.name_mismatches
    ] == [(BOB, "bob", "Mallory Impostor", 2)]
    # A replayed reading is no new sighting: only the new one counts.
    assert [(m.name_seen, m.readings) for m in again.name_mismatches] == [("Mallory Impostor", 1)]
    assert list(
        PatientNameConflict.objects.values_list(
            "patient__uuid", "name", "first_seen_at", "last_seen_at", "count", "resolved_at"
        )
    ) == [(BOB, "Mallory Impostor", first, second, 3, None)]


def test_names_that_match_cost_no_query_and_record_nothing():
    from patients.models import PatientNameConflict

    reading_bulk_store(readings=[reading(BOB, 0)])
    result = reading_bulk_store(readings=[reading(BOB, 1), reading(ANN, 1)])

    assert result.name_mismatches == []
    assert PatientNameConflict.objects.count() == 0


def test_a_new_patient_takes_the_first_name_of_the_batch_and_the_others_are_conflicts():
    from patients.models import PatientNameConflict

    result = reading_bulk_store(
        readings=[
            reading(BOB, 0, patient_name="Bob Smith"),
            reading(BOB, 1, patient_name="Mallory Impostor"),
        ]
    )

    assert Patient.objects.get(uuid=BOB).name == "Bob Smith"
    assert [(m.name_seen, m.readings) for m in result.name_mismatches] == [("Mallory Impostor", 1)]
    assert list(PatientNameConflict.objects.values_list("name", "count")) == [
        ("Mallory Impostor", 1)
    ]


# --- Partial readings: NEWS2 from each parameter's newest valid value, Patient.latest_signs -------

NOT_MEASURED = dict.fromkeys(("pulse", "resp_rate", "systolic", "diastolic", "spo2", "temperature"))


def partial(seconds: float, **measured) -> Reading:
    return reading(BOB, seconds, **{**NOT_MEASURED, **measured})


def news2_rows() -> list[tuple]:
    return list(
        PatientMetric.objects.order_by("measured_at").values_list(
            "measured_at", "news2_score", "news2_risk", "news2_subscores", "news2_missing"
        )
    )


def subscores(**scores: int | None) -> dict:
    keys = ("resp_rate", "spo2", "on_oxygen", "systolic", "pulse", "consciousness", "temperature")
    return {key: scores.get(key, 0) for key in keys}


def test_partial_readings_are_scored_with_each_parameters_newest_value_within_its_window():
    minute = 60
    reading_bulk_store(readings=[reading(BOB, 0, map=93)])  # every sign: NEWS2 0, complete
    batch = [
        partial(1 * minute, spo2=91),
        partial(5 * minute + 1, pulse=131),  # resp. rate of T0: 5 min 1 s old
        partial(30 * minute, systolic=85, diastolic=50, map=62, resp_rate=25),
        partial(60 * minute, temperature=39.1),  # systolic of 30 min: 30 min old, valid
    ]
    reading_bulk_store(readings=batch)

    at = [T0 + timedelta(seconds=s) for s in (0, 60, 301, 1800, 3600)]
    assert news2_rows() == [
        (at[0], 0, "low", subscores(), []),
        (at[1], 3, "low-medium", subscores(spo2=3), []),
        (at[2], 6, "medium", subscores(spo2=3, pulse=3, resp_rate=None), ["resp_rate"]),
        (
            at[3],
            6,
            "medium",
            subscores(resp_rate=3, systolic=3, spo2=None, pulse=None),
            ["spo2", "pulse"],
        ),
        (
            at[4],
            5,
            "medium",
            subscores(systolic=3, temperature=2, resp_rate=None, spo2=None, pulse=None),
            ["resp_rate", "spo2", "pulse"],
        ),
    ]
    newest = PatientMetric.objects.order_by("measured_at").last().news2
    assert (newest.score, newest.complete, newest.missing) == (
        5,
        False,
        ("resp_rate", "spo2", "pulse"),
    )
    assert tuple(newest.subscores) == tuple(subscores())
    # The stored row says not measured: null.
    assert PatientMetric.objects.values_list("pulse", "spo2", "map", "etco2").get(
        measured_at=at[4]
    ) == (None, None, None, None)

    def value(v, seconds):
        return {"value": v, "measured_at": (T0 + timedelta(seconds=seconds)).isoformat()}

    expected = {
        "pulse": value(131, 301),
        "resp_rate": value(25, 1800),
        "systolic": value(85, 1800),
        "diastolic": value(50, 1800),
        "map": value(62, 1800),
        "spo2": value(91, 60),
        "temperature": value(39.1, 3600),
        "consciousness": value("A", 3600),
        "on_oxygen": value(False, 3600),
    }
    assert Patient.objects.get(uuid=BOB).latest_signs == expected

    # Delivered again: nothing stored, nothing newer taken.
    reading_bulk_store(readings=batch)
    assert Patient.objects.get(uuid=BOB).latest_signs == expected
    assert len(news2_rows()) == 5


def test_latest_signs_keep_each_time_as_its_reading_gave_it():
    at = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    # The same instant as another reading sent it (equal, and hashed alike): its own text.
    same_instant = at.astimezone(timezone(timedelta(hours=1)))
    later = at + timedelta(seconds=1, microseconds=250_000)
    latest = {
        "pulse": (72, at),
        "spo2": (97, at),
        "temperature": (36.8, same_instant),
        "on_oxygen": (False, later),
    }

    assert services._latest_signs_dump(latest) == {
        "pulse": {"value": 72, "measured_at": "2026-11-23T10:00:00+00:00"},
        "spo2": {"value": 97, "measured_at": "2026-11-23T10:00:00+00:00"},
        "temperature": {"value": 36.8, "measured_at": "2026-11-23T11:00:00+01:00"},
        "on_oxygen": {"value": False, "measured_at": "2026-11-23T10:00:01.250000+00:00"},
    }


def test_a_reading_without_a_sign_conflicts_with_a_stored_one_with_it():
    reading_bulk_store(readings=[reading(BOB, 0, etco2=38)])

    result = reading_bulk_store(
        readings=[reading(BOB, 0, etco2=38), reading(BOB, 0), reading(BOB, 0, etco2=39)]
    )

    assert (result.stored, result.duplicates) == (0, 1)
    assert [r.etco2 for r in result.conflicting] == [None, 39]


def test_rows_stored_before_partial_readings_are_scored_from_their_own_values():
    reading_bulk_store(readings=[reading(BOB, 0, pulse=131)])
    PatientMetric.objects.update(news2_subscores=None)  # as the migration left older rows

    news2 = PatientMetric.objects.get().news2
    assert (news2.score, news2.complete, news2.subscores["pulse"]) == (3, True, 3)


# --- the consumer's patient cache across batches ------------------------------------------------


def test_the_patient_cache_reads_the_scale_and_name_again_and_keeps_the_newest_values():
    cache = PatientCache()
    reading_bulk_store(readings=[reading(BOB, 0, spo2=90)], received_at=T0, cache=cache)
    assert PatientMetric.objects.get().spo2_scale == 1
    # A clinician changes the SpO2 scale and the name between two batches.
    patient = Patient.objects.get(uuid=BOB)
    patient.hypercapnic_respiratory_failure, patient.name = True, "robert"
    patient.save()

    # SpO2 only: the other parameters of its NEWS2 are the first reading's, from memory.
    signs = {"resp_rate": None, "systolic": None, "diastolic": None, "temperature": None}
    second = reading(BOB, 5, pulse=None, spo2=90, **signs)
    with CaptureQueriesContext(connection) as queries:
        result = reading_bulk_store(readings=[second], received_at=T0, cache=cache)

    metric = PatientMetric.objects.get(measured_at=T0 + timedelta(seconds=5))
    # Scale 2: SpO2 90 on air scores 0 (scale 1: 2); pulse 72, resp 14, BP 120, 36.8 score 0.
    assert (metric.spo2_scale, metric.news2_score, metric.news2_missing) == (2, 0, [])
    assert [(m.patient_name, m.name_seen) for m in result.name_mismatches] == [("robert", "bob")]
    # The look-up read four plain columns, not the patient's stored newest values...
    [look_up] = [q["sql"] for q in queries.captured_queries if "patients_patient" in q["sql"]][:1]
    assert look_up.startswith('SELECT "patients_patient"."uuid" AS "uuid", "patients_patient"."id"')
    assert "latest_signs" not in look_up
    assert "ORDER BY" not in look_up
    # ...and the values written are those a look-up from the database gives.
    signs = Patient.objects.get(uuid=BOB).latest_signs
    assert {key: signs[key]["measured_at"] for key in ("pulse", "spo2")} == {
        "pulse": T0.isoformat(),
        "spo2": (T0 + timedelta(seconds=5)).isoformat(),
    }
    assert cache.latest[BOB] == services._latest_signs_load(signs)


def test_the_patient_cache_drops_a_patient_whose_values_the_batch_did_not_write():
    cache = PatientCache()
    reading_bulk_store(readings=[reading(BOB, 0), reading(ANN, 0)], received_at=T0, cache=cache)
    assert set(cache.patients) == set(cache.latest) == {BOB, ANN}

    # Bob's reading again (a duplicate, not stored), Ann's next one.
    reading_bulk_store(readings=[reading(BOB, 0), reading(ANN, 5)], received_at=T0, cache=cache)

    assert set(cache.patients) == set(cache.latest) == {ANN}


def test_the_patient_cache_looks_up_a_patient_deleted_and_created_again():
    cache = PatientCache()
    reading_bulk_store(readings=[reading(BOB, 0)], received_at=T0, cache=cache)
    Patient.objects.filter(uuid=BOB).delete()
    again = PatientFactory(uuid=BOB, name="bob")

    reading_bulk_store(readings=[reading(BOB, 5)], received_at=T0, cache=cache)

    assert cache.patients[BOB].pk == again.pk
    assert list(PatientMetric.objects.values_list("patient_id", flat=True)) == [again.pk]


def test_two_consumers_storing_a_patient_in_turn_keep_the_values_the_other_stored():
    """A moved partition's old owner still finishing its batch: consumer B stores SpO2 98
    after consumer A's 84; A's next, blood pressure only, is scored with B's 98 (sub-score 0),
    and the patient's newest SpO2 stays B's, not A's memory of 84."""
    first, second = PatientCache(), PatientCache()
    reading_bulk_store(readings=[reading(BOB, 0, spo2=84)], received_at=T0, cache=first)
    reading_bulk_store(readings=[reading(BOB, 5, spo2=98)], received_at=T0, cache=second)
    bp_only = {"resp_rate": None, "spo2": None, "temperature": None}

    result = reading_bulk_store(
        readings=[reading(BOB, 10, pulse=None, **bp_only)], received_at=T0, cache=first
    )

    [metric] = result.new
    assert metric.news2_subscores["spo2"] == 0
    assert Patient.objects.get(uuid=BOB).latest_signs["spo2"] == {
        "value": 98,
        "measured_at": (T0 + timedelta(seconds=5)).isoformat(),
    }
