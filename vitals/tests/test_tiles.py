"""The ward's snapshot (patients.models.PatientTile, vitals/tile_services.py): written by the
consumer's batch and by every other change that alters a patient's entry, so that the ward
list shows the change at once, byte for byte what it builds without the snapshot."""

import json
import uuid
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from gateway import pcd01
from gateway.adt import adt_handle
from gateway.identity import patient_uuid_for
from gateway.tests.test_adt import adt
from gateway.tests.test_pcd01 import BPM, HR, handle, mindray, nm
from patients.models import Patient, PatientTile
from patients.tests.test_api import reading
from patients.tests.ward import tiles_stale, ward_current, ward_fast_and_slow
from units.models import Bed, Unit
from units.services import admission_create, admission_discharge, admission_transfer
from vitals.models import Alarm
from vitals.services import (
    alarm_acknowledge,
    alarm_escalation_sweep,
    alarm_limits_update,
    alarm_no_data_sweep,
    alarm_switch_off,
    alarm_switch_on,
    patient_monitoring_end,
    patient_name_confirm,
    patient_rename,
    reading_prune_batch,
)
from vitals.tests.factories import T0, AlarmFactory
from vitals.tests.fakes import worker_create
from vitals.tests.test_audit import change_form_data
from vitals.tile_services import patient_tiles_refresh

pytestmark = pytest.mark.django_db


@pytest.fixture
def ward() -> SimpleNamespace:
    """Ann (SpO2 85: an alarm) and Bob (normal), stored by the consumer, which wrote their
    tiles; `batch(*readings)` stores more the same way."""
    worker, consumer, _ = worker_create()

    def batch(*readings) -> None:
        consumer.add_readings(list(readings))
        assert worker.process_batch() == len(readings)

    ann, bob = uuid.uuid4(), uuid.uuid4()
    batch(*(reading(ann, "Ann", m, spo2=85) for m in range(3)), reading(bob, "Bob", 0))
    return SimpleNamespace(
        batch=batch, ann=Patient.objects.get(uuid=ann), bob=Patient.objects.get(uuid=bob)
    )


def by_name(patients: list[dict]) -> dict[str, dict]:
    return {p["name"]: p for p in patients}


def test_the_consumer_writes_the_tiles_of_the_patients_of_its_batch(
    api_client, monkeypatch, ward
) -> None:
    before = by_name(ward_current(api_client, monkeypatch))
    assert sorted(a["kind"] for a in before["Ann"]["active_alarms"]) == ["news2", "spo2_low"]
    assert before["Ann"]["latest_metric"]["pulse"] == 72

    ward.batch(reading(ward.ann.uuid, "Ann", 3, pulse=131, spo2=97))
    after = by_name(ward_current(api_client, monkeypatch))
    assert after["Ann"]["latest_metric"]["pulse"] == 131
    assert after["Ann"]["latest_signs"]["pulse"]["value"] == 131
    assert after["Ann"]["news2"] != before["Ann"]["news2"]
    assert after["Bob"] == before["Bob"]


def test_a_tile_refresh_takes_the_same_statements_for_one_patient_as_for_many(ward) -> None:
    def statements(ids: list[int]) -> int:
        with CaptureQueriesContext(connection) as queries:
            assert patient_tiles_refresh(patient_ids=ids) == len(ids)
        return len(queries)

    many = [ward.ann.pk, ward.bob.pk] + [Patient.objects.create(name=f"p{n}").pk for n in range(20)]
    # The patients, their open alarms, one upsert; PostgreSQL locks the patients' rows first,
    # and stages the tiles (CREATE TEMPORARY TABLE IF NOT EXISTS; TRUNCATE: the COPY goes
    # around Django's cursor, uncounted).
    expected = 5 if connection.features.has_select_for_update else 3
    assert statements([ward.ann.pk]) == statements(many) == expected
    assert patient_tiles_refresh(patient_ids=[]) == 0


def test_a_batch_of_alarm_churn_writes_the_tiles_a_rebuild_would(
    api_client, monkeypatch, ward
) -> None:
    """The consumer builds its batch's tiles from the readings it holds (not read back): the
    same bytes as the list's own read, whatever the batch holds: values jumping across the
    NEWS2 bands and limits (alarms raised and resolved within it), partial readings, oxygen,
    confusion, artefacts, send times, a reading re-delivered, one older than the last."""
    rng = __import__("random").Random(20)
    sent = T0 + timedelta(minutes=9, seconds=58)
    patients = [(uuid.uuid4(), f"Churn {n}") for n in range(6)] + [(ward.ann.uuid, "Ann")]
    readings = [
        reading(
            patient,
            name,
            10 + step,
            pulse=rng.choice([None, 40, 72, 135]),
            resp_rate=rng.randint(6, 30),
            spo2=rng.choice([84, 93, 99]),
            temperature=rng.choice([None, 35.2, 36.8, 39.4]),
            on_oxygen=rng.random() < 0.3,
            consciousness=rng.choice("AAAC"),
            artefact=rng.choice([None, None, "motion", "spo2_probe_off"]),
            sent_at=rng.choice([None, sent]),
            schema_version=2,
        )
        for step in range(4)
        for patient, name in patients
    ]
    old = reading(ward.ann.uuid, "Ann", 5, pulse=50)  # before her last: still stored last
    ward.batch(*readings, readings[0], old)
    assert Alarm.objects.filter(state="resolved").exists()
    ann = Patient.objects.get(pk=ward.ann.pk)
    assert ann.latest_metric.measured_at == old.measured_at
    patients = by_name(ward_current(api_client, monkeypatch))
    assert patients["Ann"]["latest_metric"]["pulse"] == 50
    # What the batch left last covers what a tile may show: an artefact, no score, a score.
    latest = [p["latest_metric"] for name, p in patients.items() if name.startswith("Churn")]
    assert {m["artefact"] for m in latest} == {"", "motion", "spo2_probe_off"}
    assert {m["news2"] is None for m in latest} == {True, False}


def test_the_consumers_refresh_takes_the_same_statements_for_one_patient_as_for_many(
    monkeypatch, ward
) -> None:
    counts = []

    def counted(**kwargs) -> int:
        with CaptureQueriesContext(connection) as queries:
            written = patient_tiles_refresh(**kwargs)
        counts.append((written, len(queries)))
        return written

    monkeypatch.setattr("vitals.tile_services.patient_tiles_refresh", counted)
    ward.batch(reading(ward.bob.uuid, "Bob", 1))
    ward.batch(*(reading(uuid.uuid4(), f"p{n}", 0, spo2=85 + n % 10) for n in range(30)))
    # The patients, their open alarms, one upsert; PostgreSQL stages the tiles (CREATE
    # TEMPORARY TABLE IF NOT EXISTS; TRUNCATE: the COPY goes around Django's cursor,
    # uncounted). No lock: the batch locked its patients' rows first (reading_bulk_store),
    # and holds them (it was 5 on PostgreSQL, the rows locked a second time).
    expected = 4 if connection.features.has_select_for_update else 3
    assert counts == [(1, expected), (30, expected)]


def test_a_tile_that_cannot_be_built_costs_the_batch_nothing(
    api_client, monkeypatch, ward, caplog
) -> None:
    """A bug building a tile escaped the batch's transaction: the consumer crashed, and met
    the same batch again at every restart. Now the readings and alarms are stored, the
    batch's patients' tiles dropped (the list builds them itself: the same answer), the error
    logged; their next batch writes them again."""
    before = by_name(ward_current(api_client, monkeypatch))

    def broken(patient, **kwargs):
        raise ValueError("no tile today")

    cy = uuid.uuid4()
    with monkeypatch.context() as bug:
        bug.setattr("vitals.tile_services.patient_tile_pieces", broken)
        ward.batch(
            reading(ward.ann.uuid, "Ann", 3, pulse=131),
            *(reading(cy, "Cy", m, spo2=85) for m in range(3)),
        )

    assert Patient.objects.get(uuid=cy).metrics.count() == 3
    assert ward.ann.metrics.count() == 4
    assert sorted(Alarm.objects.filter(patient__uuid=cy).values_list("kind", flat=True)) == [
        "news2",
        "spo2_low",
    ]
    assert list(PatientTile.objects.values_list("patient__name", flat=True)) == ["Bob"]
    assert sorted(tiles_stale()) == ["Ann", "Cy"]
    fast, slow = ward_fast_and_slow(api_client, monkeypatch)
    assert fast == slow
    patients = by_name(json.loads(fast)["results"])
    assert patients["Ann"]["latest_metric"]["pulse"] == 131
    assert patients["Bob"] == before["Bob"]
    [record] = [r for r in caplog.records if r.name == "vitals.tile_services"]
    assert (record.levelname, record.getMessage()) == (
        "ERROR",
        "patient tiles not built: dropped, the ward list builds these patients itself",
    )
    assert (record.patients, record.error) == (2, "ValueError: no tile today")
    assert record.exc_info[0] is ValueError

    ward.batch(reading(ward.ann.uuid, "Ann", 4), reading(cy, "Cy", 3))
    assert by_name(ward_current(api_client, monkeypatch))["Cy"]["latest_metric"]["pulse"] == 72


def test_a_latest_reading_not_given_is_read_back(ward) -> None:
    """`latest` is what the caller holds: a patient whose latest reading is another (or not
    given) has it read, all such patients in one more statement."""
    older = ward.ann.metrics.order_by("measured_at").first()
    assert older.pk != ward.ann.latest_metric_id
    cy = Patient.objects.create(name="Cy")  # no reading at all
    with CaptureQueriesContext(connection) as queries:
        patient_tiles_refresh(
            patient_ids=[ward.ann.pk, ward.bob.pk, cy.pk], latest={ward.ann.pk: older}
        )
    expected = 5 if connection.features.has_select_for_update else 3  # as above
    assert len(queries) == expected + 1
    assert tiles_stale() == []


def test_an_acknowledgement_shows_at_once(api_client, monkeypatch, ward, user) -> None:
    alarm_acknowledge(alarm=Alarm.objects.get(patient=ward.ann, kind="spo2_low"), user=user)
    ann = by_name(ward_current(api_client, monkeypatch))["Ann"]
    states = {a["kind"]: a["state"] for a in ann["active_alarms"]}
    assert states == {"spo2_low": "acknowledged", "news2": "active"}


def test_a_silence_the_sweep_finds_shows_its_alarm(api_client, monkeypatch, ward) -> None:
    later = timezone.now() + timedelta(minutes=5)
    assert len(alarm_no_data_sweep(silent_for=timedelta(minutes=1), now=later)) == 2
    patients = by_name(ward_current(api_client, monkeypatch))
    assert [a["kind"] for a in patients["Bob"]["active_alarms"]] == ["no_data"]


def test_an_escalation_shows_at_once(api_client, monkeypatch, ward) -> None:
    alarm = AlarmFactory(patient=ward.bob, kind="pulse_high", priority="high", activated_at=T0)
    patient_tiles_refresh(patient_ids=[ward.bob.pk])  # as the consumer raising it would
    alarm_escalation_sweep(unanswered_for=timedelta(minutes=1))
    bob = by_name(ward_current(api_client, monkeypatch))["Bob"]
    alarm.refresh_from_db()
    assert alarm.escalated_at is not None
    assert bob["active_alarms"][0]["escalated_at"] is not None


def test_the_monitoring_ended_and_its_user_renamed_show_at_once(
    api_client, monkeypatch, ward, user
) -> None:
    patient_monitoring_end(patient=ward.bob, user=user)
    bob = by_name(ward_current(api_client, monkeypatch))["Bob"]
    assert bob["monitoring_ended_at"] is not None
    assert bob["monitoring_ended_by"] == user.username
    # The username is read with the tile, not kept in it.
    user.username = "nurse-renamed"
    user.save()
    bob = by_name(ward_current(api_client, monkeypatch))["Bob"]
    assert bob["monitoring_ended_by"] == "nurse-renamed"
    # A reading starts the monitoring again (the consumer's batch).
    ward.batch(reading(ward.bob.uuid, "Bob", 9))
    assert by_name(ward_current(api_client, monkeypatch))["Bob"]["monitoring_ended_at"] is None


def test_names_seen_confirmed_and_a_rename_show_at_once(
    api_client, monkeypatch, ward, user
) -> None:
    ward.batch(reading(ward.ann.uuid, "Ann Smith", 5, spo2=85))
    ann = by_name(ward_current(api_client, monkeypatch))["Ann"]
    assert [c["name"] for c in ann["name_conflicts"]] == ["Ann Smith"]

    patient_name_confirm(patient=ward.ann, user=user)
    assert by_name(ward_current(api_client, monkeypatch))["Ann"]["name_conflicts"] == []

    patient_rename(patient=ward.ann, user=user, name="Ann Jones")
    patients = by_name(ward_current(api_client, monkeypatch))
    assert patients["Ann Jones"]["uuid"] == str(ward.ann.uuid)


def test_alarms_switched_off_and_on_show_at_once(api_client, monkeypatch, ward, user) -> None:
    alarm_switch_off(patient=ward.ann, kind="spo2_low", reason="probe", user=user)
    ann = by_name(ward_current(api_client, monkeypatch))["Ann"]
    assert [a["kind"] for a in ann["alarms_off"]] == ["spo2_low"]
    assert [a["kind"] for a in ann["active_alarms"]] == ["news2"]  # spo2_low resolved

    alarm_switch_on(patient=ward.ann, kind="spo2_low", user=user)
    assert by_name(ward_current(api_client, monkeypatch))["Ann"]["alarms_off"] == []


def test_limits_changed_leave_the_ward_as_it_was(api_client, monkeypatch, ward, user) -> None:
    before = ward_current(api_client, monkeypatch)
    alarm_limits_update(patient=ward.ann, user=user, pulse_high=100)
    assert ward_current(api_client, monkeypatch) == before  # limits are not on a tile


def test_the_scale_changed_in_the_admin_shows_at_once(
    api_client, monkeypatch, ward, admin_client
) -> None:
    url = f"/admin/patients/patient/{ward.ann.pk}/change/"
    data = change_form_data(admin_client.get(url))
    data["hypercapnic_respiratory_failure"] = "on"
    assert admin_client.post(url, data).status_code == 302
    ann = by_name(ward_current(api_client, monkeypatch))["Ann"]
    assert ann["hypercapnic_respiratory_failure"] is True


def test_admission_transfer_and_discharge_show_at_once(api_client, monkeypatch, ward, user) -> None:
    icu = Unit.objects.create(code="icu-a", name="ICU A")
    hdu = Unit.objects.create(code="hdu", name="HDU")
    a1 = Bed.objects.create(unit=icu, label="A1", position=1)
    h1 = Bed.objects.create(unit=hdu, label="H1", position=1)
    patient_monitoring_end(patient=ward.ann, user=user)
    ward.ann.refresh_from_db()

    def names(unit: str) -> list[str]:
        return [p["name"] for p in ward_current(api_client, monkeypatch, {"unit": unit})]

    admission_create(patient=ward.ann, bed=a1, by=user)
    assert names("icu-a") == ["Ann"]
    assert by_name(ward_current(api_client, monkeypatch))["Ann"]["monitoring_ended_at"] is None

    admission_transfer(patient=ward.ann, bed=h1, by=user)
    assert (names("icu-a"), names("hdu")) == ([], ["Ann"])

    admission_discharge(patient=ward.ann, by=user)
    assert names("hdu") == []
    ann = by_name(ward_current(api_client, monkeypatch))["Ann"]
    assert ann["active_alarms"] == []
    assert ann["monitoring_ended_by"] == user.username


def test_an_hl7_admission_giving_the_mrn_shows_at_once(api_client, monkeypatch, ward) -> None:
    icu = Unit.objects.create(code="icu-a", name="ICU A")
    Bed.objects.create(unit=icu, label="A1", position=1)
    # Known by their monitor first (the uuid the gateway derives from the MRN), without it.
    ward.batch(reading(patient_uuid_for(authority="HOSP", identifier="MRN1"), "Cy", 0))
    assert by_name(ward_current(api_client, monkeypatch))["Cy"]["mrn"] == ""

    assert adt_handle(adt("A01", "MSG1")).code == "AA"
    cy = by_name(ward_current(api_client, monkeypatch, {"unit": "icu-a"}))["Cy"]
    assert (cy["mrn"], cy["mrn_authority"]) == ("MRN1", "HOSP")


def test_a_pcd01_identification_giving_the_mrn_shows_at_once(api_client, monkeypatch, ward) -> None:
    """A monitor's ORU (IHE PCD-01) names a patient known without an MRN (their readings came
    first, under the uuid the gateway derives): patient_identify gives them the MRN, and
    their tile shows it, as the list's own build does."""
    anna = patient_uuid_for(authority="CITYHOSP", identifier="MRN-1001")
    ward.batch(reading(anna, "Anna Smith", 0))
    assert by_name(ward_current(api_client, monkeypatch))["Anna Smith"]["mrn"] == ""

    pcd01.known_clear()
    try:
        outcome = handle(*mindray(nm(1, HR, "80", BPM)))
    finally:
        pcd01.known_clear()
    assert [json.loads(value)["patient_uuid"] for _, value in outcome.messages] == [str(anna)]
    patient = by_name(ward_current(api_client, monkeypatch))["Anna Smith"]
    assert (patient["mrn"], patient["mrn_authority"]) == ("MRN-1001", "CITYHOSP")


def test_readings_pruned_show_at_once(api_client, monkeypatch, ward) -> None:
    assert reading_prune_batch(older_than=timezone.now() + timedelta(days=1), batch_size=100) == 4
    patients = by_name(ward_current(api_client, monkeypatch))
    assert [patients[name]["latest_metric"] for name in ("Ann", "Bob")] == [None, None]


def test_a_patient_deleted_leaves_the_ward_with_their_tile(api_client, monkeypatch, ward) -> None:
    ward.bob.delete()
    assert list(by_name(ward_current(api_client, monkeypatch))) == ["Ann"]
    assert PatientTile.objects.count() == 1


def test_a_patient_without_a_tile_of_this_zone_is_built_as_before(
    api_client, monkeypatch, ward
) -> None:
    """Tiles are encoded in one time zone: in another (TIME_ZONE changed), or without a tile
    (a patient no writer has touched yet), the list builds the patient itself, the same
    answer; `rebuild_patient_tiles` writes them again."""
    Patient.objects.create(name="Cy")  # no tile
    assert tiles_stale() == ["Cy"]
    fast, slow = ward_fast_and_slow(api_client, monkeypatch)
    assert fast == slow
    with timezone.override("America/St_Johns"):
        assert sorted(tiles_stale()) == ["Ann", "Bob", "Cy"]
        fast, slow = ward_fast_and_slow(api_client, monkeypatch)
        assert fast == slow
        assert b"-03:30" in fast
    call_command("rebuild_patient_tiles", stdout=(out := __import__("io").StringIO()))
    assert out.getvalue() == "3 patient tile(s) written.\n"
    assert ward_current(api_client, monkeypatch)


def test_rebuild_patient_tiles_writes_every_tile_in_batches(ward, capsys) -> None:
    PatientTile.objects.all().delete()
    for n in range(3):
        Patient.objects.create(name=f"p{n}")
    call_command("rebuild_patient_tiles", "--batch-size", "2")
    assert capsys.readouterr().out == "5 patient tile(s) written.\n"
    assert tiles_stale() == []
    with pytest.raises(CommandError, match="between 1 and 6000"):
        call_command("rebuild_patient_tiles", "--batch-size", "0")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="fill factor: PostgreSQL's")
def test_the_consumers_updates_of_tiles_stay_in_their_page(ward) -> None:
    """The tables the consumer rewrites every batch leave room in each page (migration
    patients/0009): a tile's update is a HOT update (no index entry, pruned in place), a
    patient's stays in its page. Counted in this transaction's own statistics."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, reloptions FROM pg_class WHERE relname IN "
            "('patients_patient', 'patients_patienttile') ORDER BY relname"
        )
        assert cursor.fetchall() == [
            ("patients_patient", ["fillfactor=50"]),
            ("patients_patienttile", ["fillfactor=40"]),
        ]

        def updates() -> tuple[int, int]:
            cursor.execute(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables "
                "WHERE relname = 'patients_patienttile'"
            )
            return cursor.fetchone()

        before = updates()
        ward.batch(reading(ward.ann.uuid, "Ann", 10, spo2=85), reading(ward.bob.uuid, "Bob", 10))
        after = updates()
    assert (after[0] - before[0], after[1] - before[1]) == (2, 2)
