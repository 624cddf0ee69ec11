"""Patient identity: names a monitor sends that are not the patient's (patients.
PatientNameConflict), shown by the API until a clinician confirms the name or renames the
patient; both audited. The consumer's side is vitals/tests/test_services.py and, end to end,
vitals/tests/test_pipeline_e2e.py."""

import io
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command

from patients.models import Patient, PatientNameConflict
from patients.tests.test_api import iso, reading
from vitals.models import AuditEvent
from vitals.services import reading_bulk_store

pytestmark = pytest.mark.django_db

ALICE = uuid.UUID("11111111-1111-4111-8111-111111111111")
SEEN = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


def sightings(*names: str, start: int = 0) -> None:
    """One batch per name, a minute apart: readings of Alice carrying these names."""
    for i, name in enumerate(names):
        at = SEEN + timedelta(minutes=start + i)
        reading_bulk_store(readings=[reading(ALICE, name, start + i)], received_at=at)


@pytest.fixture
def alice() -> Patient:
    sightings("Alice", "Mallory Impostor", "Mallory Impostor", "Eve", "Mallory Impostor")
    return Patient.objects.get(uuid=ALICE)


def conflict(name: str, first: int, last: int, count: int) -> dict:
    return {
        "name": name,
        "first_seen_at": iso(SEEN + timedelta(minutes=first)),
        "last_seen_at": iso(SEEN + timedelta(minutes=last)),
        "count": count,
    }


def test_the_api_shows_the_names_seen_in_the_list_and_the_detail(api_client, alice):
    expected = [conflict("Mallory Impostor", 1, 4, 3), conflict("Eve", 3, 3, 1)]

    detail = api_client.get(f"/api/patients/{ALICE}/").json()
    [listed] = api_client.get("/api/patients/").json()["results"]

    assert detail["name"] == listed["name"] == "Alice"
    assert detail["name_conflicts"] == listed["name_conflicts"] == expected


def test_confirming_the_name_dismisses_every_name_seen_and_is_audited(api_client, user, alice):
    response = api_client.post(f"/api/patients/{ALICE}/confirm-name/")

    assert response.status_code == 200
    assert response.json()["name"] == "Alice"
    assert response.json()["name_conflicts"] == []
    assert list(
        PatientNameConflict.objects.values_list("name", "resolution", "resolved_by__username")
    ) == [("Mallory Impostor", "confirmed", "nurse"), ("Eve", "confirmed", "nurse")]
    [event] = AuditEvent.objects.all()
    assert (event.action, event.object_type, event.object_id, event.username) == (
        "patient.confirm_name",
        "patient",
        str(alice.pk),
        "nurse",
    )
    assert (event.patient_id, event.before, event.after) == (
        alice.pk,
        {"name": "Alice", "names_seen": ["Mallory Impostor", "Eve"]},
        {"name": "Alice"},
    )
    # A dismissed name stays dismissed; another one opens a new warning.
    sightings("Mallory Impostor", "Eve", "Trudy", start=10)
    names = api_client.get(f"/api/patients/{ALICE}/").json()["name_conflicts"]
    assert names == [conflict("Trudy", 12, 12, 1)]
    # Confirming again with nothing open changes nothing and records nothing more.
    sightings("Alice", start=20)
    PatientNameConflict.objects.filter(name="Trudy").update(resolved_at=SEEN)
    assert api_client.post(f"/api/patients/{ALICE}/confirm-name/").status_code == 200
    assert AuditEvent.objects.count() == 1


def test_renaming_the_patient_takes_the_name_closes_the_warning_and_is_audited(api_client, alice):
    response = api_client.post(
        f"/api/patients/{ALICE}/rename/", {"name": " Mallory Impostor "}, format="json"
    )

    assert response.status_code == 200
    assert (response.json()["name"], response.json()["name_conflicts"]) == ("Mallory Impostor", [])
    assert Patient.objects.get(uuid=ALICE).name == "Mallory Impostor"
    assert set(PatientNameConflict.objects.values_list("resolution", flat=True)) == {"renamed"}
    [event] = AuditEvent.objects.all()
    assert (event.action, event.before, event.after) == (
        "patient.rename",
        {"name": "Alice", "names_seen": ["Mallory Impostor", "Eve"]},
        {"name": "Mallory Impostor"},
    )
    # The monitor's name is now the patient's: no new warning; the old one is another name.
    sightings("Mallory Impostor", "Alice", start=10)
    names = api_client.get(f"/api/patients/{ALICE}/").json()["name_conflicts"]
    assert names == [conflict("Alice", 11, 11, 1)]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "This field may not be blank."),
        ("Bo\u200bb", "'patient_name' has zero-width character U+200B"),
        ("\u202eevil", "'patient_name' has bidi control U+202E"),
        ("x" * 201, "'patient_name' must be 1-200 characters, got 201"),
    ],
)
def test_a_new_name_follows_the_contracts_rule(api_client, alice, name, message):
    response = api_client.post(f"/api/patients/{ALICE}/rename/", {"name": name}, format="json")

    assert response.status_code == 400
    [error] = response.json()["error"]["fields"]["name"]
    assert error.startswith(message)
    assert Patient.objects.get(uuid=ALICE).name == "Alice"
    assert not AuditEvent.objects.exists()


def test_a_decomposed_new_name_is_stored_in_nfc(api_client, alice):
    response = api_client.post(f"/api/patients/{ALICE}/rename/", {"name": "Zoe\u0308"})

    assert response.status_code == 200
    assert Patient.objects.get(uuid=ALICE).name == "Zo\u00eb"


def test_a_viewer_may_neither_confirm_nor_rename(viewer_client, alice):
    for path, data in (("confirm-name/", None), ("rename/", {"name": "Eve"})):
        response = viewer_client.post(f"/api/patients/{ALICE}/{path}", data, format="json")
        assert response.status_code == 403
        assert "vitals.acknowledge_alarm" in response.json()["error"]["message"]
    assert Patient.objects.get(uuid=ALICE).name == "Alice"
    assert not PatientNameConflict.objects.filter(resolved_at__isnull=False).exists()
    assert not AuditEvent.objects.exists()


def test_the_list_reads_the_names_seen_in_its_own_queries(api_client, django_assert_num_queries):
    for n in range(20):
        patient_uuid = uuid.uuid4()
        reading_bulk_store(readings=[reading(patient_uuid, f"p-{n:02d}", 0)])
        reading_bulk_store(readings=[reading(patient_uuid, f"other-{n:02d}", 1)])

    # The token with its user's permissions, COUNT(*), the page's tiles (none: reading_bulk_store
    # alone does not write them, the consumer does), then patients (with their names seen) and
    # their alarms, built as before.
    with django_assert_num_queries(5):
        built = api_client.get("/api/patients/").json()["results"]
    call_command("rebuild_patient_tiles", stdout=io.StringIO())
    with django_assert_num_queries(3):  # the names seen on each tile
        results = api_client.get("/api/patients/").json()["results"]
    assert results == built

    assert [[c["name"] for c in p["name_conflicts"]] for p in results] == [
        [f"other-{n:02d}"] for n in range(20)
    ]
