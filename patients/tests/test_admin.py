"""The admin: patients searchable with their latest readings, readings shown but never edited."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from patients.models import Patient
from patients.tests.factories import PatientFactory
from vitals.models import PatientMetric
from vitals.tests.factories import T0, PatientMetricFactory

pytestmark = pytest.mark.django_db

PATIENTS = "/admin/patients/patient/"
METRICS = "/admin/vitals/patientmetric/"


def result_names(response) -> list[str]:
    return [patient.name for patient in response.context["cl"].result_list]


@pytest.fixture
def ward() -> dict[str, Patient]:
    return {name: PatientFactory(name=name) for name in ["Alice", "Bob", "Alina"]}


def test_patient_changelist(admin_client: Client, ward: dict[str, Patient]) -> None:
    metric = PatientMetricFactory(patient=ward["Bob"], measured_at=T0)
    ward["Bob"].latest_metric = metric
    ward["Bob"].save()

    response = admin_client.get(PATIENTS)

    assert response.status_code == 200
    assert result_names(response) == ["Alice", "Alina", "Bob"]
    content = response.content.decode()
    assert f'<td class="field-uuid">{ward["Bob"].uuid}</td>' in content
    assert '<td class="field-latest_reading_at nowrap">Nov. 23, 2026, 8 a.m.</td>' in content


@pytest.mark.parametrize(("query", "expected"), [("Ali", ["Alice", "Alina"]), ("bob", ["Bob"])])
def test_patient_search_by_name(
    admin_client: Client, ward: dict[str, Patient], query: str, expected: list[str]
) -> None:
    response = admin_client.get(PATIENTS, {"q": query})

    assert response.status_code == 200
    assert result_names(response) == expected


def test_patient_search_by_exact_uuid(admin_client: Client, ward: dict[str, Patient]) -> None:
    uuid = ward["Alina"].uuid

    exact = admin_client.get(PATIENTS, {"q": str(uuid)})
    upper = admin_client.get(PATIENTS, {"q": str(uuid).upper()})
    partial = admin_client.get(PATIENTS, {"q": str(uuid)[:8]})

    assert result_names(exact) == ["Alina"]
    assert result_names(upper) == ["Alina"]
    # `=uuid`: an exact match, not a substring search over the whole table.
    assert partial.status_code == 200
    assert result_names(partial) == []


def test_patient_search_by_exact_mrn_shown_in_the_list_and_read_only(admin_client: Client) -> None:
    ann = PatientFactory(name="Ann", mrn="MRN1", mrn_authority="HOSP")
    PatientFactory(name="Bob", mrn="MRN12", mrn_authority="HOSP")

    exact = admin_client.get(PATIENTS, {"q": "MRN1"})
    partial = admin_client.get(PATIENTS, {"q": "MRN"})
    page = admin_client.get(f"{PATIENTS}{ann.pk}/change/").content.decode()

    assert result_names(exact) == ["Ann"]
    assert result_names(partial) == []
    assert '<td class="field-mrn">MRN1</td>' in exact.content.decode()
    # Read only: the gateway derives the patient's uuid from it.
    assert re.search(r'<div class="readonly">MRN1</div>', page)
    assert re.search(r'<div class="readonly">HOSP</div>', page)
    assert 'name="mrn"' not in page


def test_patient_change_page_shows_the_latest_20_readings(admin_client: Client) -> None:
    patient = PatientFactory(name="Alice")
    # Created oldest last, so that neither insertion order nor pk gives the newest.
    metrics = [
        PatientMetricFactory(patient=patient, measured_at=T0 + timedelta(minutes=i), pulse=100 + i)
        for i in reversed(range(25))
    ]
    PatientMetricFactory(patient=PatientFactory(name="Other"), measured_at=T0 + timedelta(days=1))
    by_minute = {int((m.measured_at - T0).total_seconds() // 60): m for m in metrics}

    response = admin_client.get(f"{PATIENTS}{patient.pk}/change/")

    assert response.status_code == 200
    names_inline, limits_inline, inline = response.context["inline_admin_formsets"]
    assert names_inline.formset.prefix == "name_conflicts"
    assert limits_inline.formset.prefix == "alarm_limits"
    assert inline.formset.prefix == "metrics"
    shown = [form.instance.pk for form in inline.formset.forms]
    assert shown == [by_minute[i].pk for i in reversed(range(5, 25))]
    content = response.content.decode()
    assert "Latest 20 readings" in content
    pulses = re.findall(r'<td class="field-pulse">\s*<p>(\d+)</p>', content)
    assert pulses == [str(100 + i) for i in reversed(range(5, 25))]
    for i in range(5):
        assert f"{METRICS}{by_minute[i].pk}/change/" not in content
    for i in range(5, 25):
        assert f'href="{METRICS}{by_minute[i].pk}/change/"' in content
    # Read only: no editable inline fields, no way to add a reading from here.
    assert 'name="metrics-0-pulse"' not in content
    assert 'name="metrics-MAX_NUM_FORMS" value="0"' in content
    assert inline.has_add_permission is False


def test_metric_changelist_with_date_hierarchy(admin_client: Client) -> None:
    patient = PatientFactory(name="Alice")
    PatientMetricFactory(patient=patient, measured_at=T0)
    PatientMetricFactory(patient=patient, measured_at=T0 + timedelta(minutes=1))
    PatientMetricFactory(patient=patient, measured_at=datetime(2026, 12, 1, 6, 0, tzinfo=UTC))

    everything = admin_client.get(METRICS)
    december = admin_client.get(METRICS, {"measured_at__year": 2026, "measured_at__month": 12})

    assert everything.status_code == 200
    assert everything.context["cl"].date_hierarchy == "measured_at"
    assert [m.measured_at for m in everything.context["cl"].result_list] == [
        datetime(2026, 12, 1, 6, 0, tzinfo=UTC),
        T0 + timedelta(minutes=1),
        T0,
    ]
    content = everything.content.decode()
    assert '<a href="?measured_at__month=11&amp;measured_at__year=2026">November 2026</a>' in (
        content
    )
    assert '<a href="?measured_at__month=12&amp;measured_at__year=2026">December 2026</a>' in (
        content
    )
    assert december.status_code == 200
    assert [m.measured_at for m in december.context["cl"].result_list] == [
        datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
    ]


def test_metric_search_by_patient(admin_client: Client) -> None:
    alice, bob = PatientFactory(name="Alice"), PatientFactory(name="Bob")
    PatientMetricFactory(patient=alice)
    PatientMetricFactory(patient=bob)
    PatientMetricFactory(patient=bob)

    by_name = admin_client.get(METRICS, {"q": "bob"})
    by_uuid = admin_client.get(METRICS, {"q": str(alice.uuid)})

    assert {m.patient_id for m in by_name.context["cl"].result_list} == {bob.pk}
    assert len(by_name.context["cl"].result_list) == 2
    assert [m.patient_id for m in by_uuid.context["cl"].result_list] == [alice.pk]


def test_metric_add_is_forbidden(admin_client: Client) -> None:
    response = admin_client.get(f"{METRICS}add/")

    assert response.status_code == 403


def test_metric_change_view_is_read_only(admin_client: Client) -> None:
    metric = PatientMetricFactory(pulse=72)

    page = admin_client.get(f"{METRICS}{metric.pk}/change/")
    post = admin_client.post(f"{METRICS}{metric.pk}/change/", {"pulse": 200})

    assert page.status_code == 200
    content = page.content.decode()
    assert 'name="_save"' not in content
    assert 'name="pulse"' not in content
    assert '<div class="readonly">72</div>' in content
    assert post.status_code == 403
    metric.refresh_from_db()
    assert metric.pulse == 72


def test_metric_delete_is_forbidden(admin_client: Client) -> None:
    metric = PatientMetricFactory()

    response = admin_client.post(f"{METRICS}{metric.pk}/delete/", {"post": "yes"})

    assert response.status_code == 403
    assert PatientMetric.objects.filter(pk=metric.pk).exists()


@pytest.mark.parametrize("path", ["/admin/", PATIENTS, METRICS])
def test_non_staff_user_is_sent_to_the_admin_login(client: Client, user, path: str) -> None:
    client.force_login(user)

    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={path}"


def test_the_patient_page_shows_the_names_monitors_sent_read_only(admin_client: Client) -> None:
    from patients.models import PatientNameConflict

    patient = PatientFactory(name="Alice")
    PatientNameConflict.objects.create(
        patient=patient, name="Mallory Impostor", first_seen_at=T0, last_seen_at=T0, count=3
    )

    response = admin_client.get(f"{PATIENTS}{patient.pk}/change/")

    assert response.status_code == 200
    content = response.content.decode()
    assert "Names sent by monitors (identity conflicts)" in content
    assert re.search(r'<td class="field-name">\s*<p>Mallory Impostor</p>', content)
    assert re.search(r'<td class="field-count">\s*<p>3</p>', content)
    assert 'name="name_conflicts-0-name"' not in content  # shown, never edited


def test_the_end_monitoring_action_ends_it_audited_for_each_selected_patient(
    admin_client: Client, admin_user, ward: dict[str, Patient]
) -> None:
    from vitals.models import AuditEvent

    selected = [ward["Alice"].pk, ward["Bob"].pk]
    response = admin_client.post(
        PATIENTS, {"action": "end_monitoring", "_selected_action": selected}, follow=True
    )

    assert response.status_code == 200
    assert "Monitoring ended for 2 patient(s)." in response.content.decode()
    ended = Patient.objects.filter(monitoring_ended_at__isnull=False)
    assert sorted(ended.values_list("name", "monitoring_ended_by")) == [
        ("Alice", admin_user.pk),
        ("Bob", admin_user.pk),
    ]
    assert Patient.objects.get(name="Alina").monitoring_ended_at is None
    assert sorted(
        AuditEvent.objects.filter(action="patient.monitoring_end").values_list("object_id")
    ) == [(str(pk),) for pk in sorted(selected)]


def test_the_patient_page_tells_its_readings_apart(admin_client: Client) -> None:
    """Readings 5 s apart: each row shows its time to the second and is titled with the
    patient's name (not the internal id); being on air is a word, not a red cross."""
    patient = PatientFactory(name="Alice")
    for i in range(3):
        PatientMetricFactory(
            patient=patient, measured_at=T0 + timedelta(seconds=5 * i), on_oxygen=i == 2
        )

    content = admin_client.get(f"{PATIENTS}{patient.pk}/change/").content.decode()

    times = re.findall(r'<td class="field-measured_at_display">\s*<p>([^<]*)</p>', content)
    assert times == ["2026-11-23 08:00:10", "2026-11-23 08:00:05", "2026-11-23 08:00:00"]
    titles = re.findall(r'<td class="original">\s*<p>\s*([^<]*?)\s*<', content)
    assert titles == [
        "Alice at 2026-11-23 08:00:10",
        "Alice at 2026-11-23 08:00:05",
        "Alice at 2026-11-23 08:00:00",
    ]
    oxygen = re.findall(r'<td class="field-air_or_oxygen">\s*<p>([^<]*)</p>', content)
    assert oxygen == ["oxygen", "air", "air"]
    assert "icon-no.svg" not in content


def test_the_readings_list_shows_seconds_and_air_or_oxygen(admin_client: Client) -> None:
    patient = PatientFactory(name="Alice")
    PatientMetricFactory(patient=patient, measured_at=T0 + timedelta(seconds=5))
    PatientMetricFactory(patient=patient, measured_at=T0, on_oxygen=True)

    content = admin_client.get(METRICS).content.decode()

    times = re.findall(r'<th class="field-measured_at_display"><a [^>]*>([^<]*)</a>', content)
    assert times == ["2026-11-23 08:00:05", "2026-11-23 08:00:00"]
    oxygen = re.findall(r'<td class="field-air_or_oxygen">([^<]*)</td>', content)
    assert oxygen == ["air", "oxygen"]
    assert "icon-no.svg" not in content


def test_the_readings_show_every_sign_a_dash_where_not_measured(admin_client: Client) -> None:
    """A column per sign of vitals/signs.py (blood pressure as one); a partial reading's signs
    not measured are the admin's dash, blood pressure too unless both halves were."""
    patient = PatientFactory(name="Alice")
    PatientMetricFactory(patient=patient, measured_at=T0 + timedelta(seconds=5), map=93, etco2=41)
    absent = dict.fromkeys(("resp_rate", "systolic", "diastolic", "temperature"))
    PatientMetricFactory(patient=patient, measured_at=T0, pulse=88, spo2=95, **absent)

    listed = admin_client.get(METRICS).content.decode()
    page = admin_client.get(f"{PATIENTS}{patient.pk}/change/").content.decode()

    columns = ["pulse", "resp_rate", "bp_display", "map", "spo2", "temperature", "etco2"]
    rows = [
        [re.search(rf'<td class="field-{c}[^"]*">([^<]*)</td>', row)[1] for c in columns]
        for row in re.findall(r"<tr>(.*?)</tr>", listed, re.S)
        if "<td" in row and "field-bp_display" in row
    ]
    assert rows == [
        ["72", "14", "120/80", "93", "98", "36.8", "41"],
        ["88", "-", "-", "-", "95", "-", "-"],
    ]
    inline = [
        [re.search(rf'<td class="field-{c}">\s*<p>([^<]*)</p>', row)[1] for c in columns]
        for row in re.findall(r'<tr class="form-row[^"]*"[^>]*>(.*?)</tr>', page, re.S)
        if "field-bp_display" in row
    ]
    assert inline == rows
    # The alarm limits inline has every limit of the registry.
    for kind in ("map_low", "map_high", "etco2_low", "etco2_high", "spo2_low"):
        assert f'name="alarm_limits-0-{kind}"' in page
