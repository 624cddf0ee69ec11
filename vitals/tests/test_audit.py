"""The audit trail: who acknowledged which alarm, who changed which alarm limits from what to
what; written with the change, whether it came through the API or the admin; read by staff
in the admin and at `GET /api/audit/`."""

import uuid
from datetime import UTC, datetime

import pytest
from django.db import DatabaseError
from django.test import Client

from patients.models import Patient, PatientNameConflict
from patients.tests.factories import PatientFactory
from vitals.models import Alarm, AlarmEvent, AlarmLimits, AuditEvent
from vitals.services import alarm_acknowledge, alarm_limits_update
from vitals.tests.factories import T0, AlarmFactory
from vitals.tests.test_alarm_api import DEFAULTS

pytestmark = pytest.mark.django_db

ROW = ("user", "username", "action", "object_type", "object_id", "patient", "patient_uuid")


def rows() -> list[dict]:
    """The audit trail, oldest first, without the times (checked on their own)."""
    return list(AuditEvent.objects.order_by("id").values(*ROW, "before", "after"))


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- written by the services, through the API ------------------------------------------------
def test_an_acknowledgement_is_one_audit_event_with_who_when_and_whom(api_client, user):
    patient = PatientFactory(name="ann")
    alarm = AlarmFactory(patient=patient)
    started = datetime.now(tz=UTC)

    assert api_client.post(f"/api/alarms/{alarm.pk}/acknowledge/").status_code == 200
    # Acknowledging again changes nothing, so it records nothing.
    assert api_client.post(f"/api/alarms/{alarm.pk}/acknowledge/").status_code == 200

    assert rows() == [
        {
            "user": user.pk,
            "username": "nurse",
            "action": "alarm.acknowledge",
            "object_type": "alarm",
            "object_id": str(alarm.pk),
            "patient": patient.pk,
            "patient_uuid": patient.uuid,
            "before": {"state": "active"},
            "after": {
                "state": "acknowledged",
                "priority": "medium",
                "message": "SpO2 low: 88 % (< 90)",
            },
        }
    ]
    event = AuditEvent.objects.get()
    alarm.refresh_from_db()
    assert started <= event.at <= datetime.now(tz=UTC)
    assert abs((event.at - alarm.acknowledged_at).total_seconds()) < 1


def test_a_resolved_alarm_refused_is_not_in_the_trail(api_client):
    alarm = AlarmFactory(state="resolved")
    assert api_client.post(f"/api/alarms/{alarm.pk}/acknowledge/").status_code == 409
    assert rows() == []


def test_alarm_limits_changes_record_every_limit_before_and_after(api_client, user):
    patient = PatientFactory(name="bea")
    url = f"/api/patients/{patient.uuid}/alarm-limits/"
    put = {**DEFAULTS, "pulse_high": 140, "spo2_low": 88}

    assert api_client.put(url, put, format="json").status_code == 200
    assert api_client.patch(url, {"delay_readings": 3}, format="json").status_code == 200
    # Refused by validation: nothing changes, nothing is recorded.
    assert api_client.patch(url, {"pulse_low": 150}, format="json").status_code == 400

    common = {
        "user": user.pk,
        "username": "nurse",
        "action": "alarm_limits.update",
        "object_type": "alarm_limits",
        "object_id": str(patient.pk),
        "patient": patient.pk,
        "patient_uuid": patient.uuid,
    }
    assert rows() == [
        # The first change: before, the bedside defaults the patient had.
        {**common, "before": DEFAULTS, "after": put},
        {**common, "before": put, "after": {**put, "delay_readings": 3}},
    ]


def test_the_audit_event_is_written_in_the_changes_transaction(monkeypatch, user):
    """If the audit trail cannot be written, the change does not happen either."""
    alarm = AlarmFactory()
    patient = alarm.patient

    def refuse(**kwargs):
        raise DatabaseError("audit table unavailable")

    monkeypatch.setattr(AuditEvent.objects, "create", refuse)
    with pytest.raises(DatabaseError):
        alarm_acknowledge(alarm=alarm, user=user)
    with pytest.raises(DatabaseError):
        alarm_limits_update(patient=patient, user=user, pulse_high=150)

    alarm.refresh_from_db()
    assert (alarm.state, alarm.acknowledged_by) == ("active", None)
    assert not AlarmEvent.objects.exists()  # nor the outbox event of the acknowledgement
    assert not AlarmLimits.objects.exists()


def test_a_change_without_a_user_is_recorded_without_one():
    patient = PatientFactory()
    alarm_limits_update(patient=patient, user=None, pulse_high=130)
    (row,) = rows()
    assert (row["user"], row["username"], row["after"]["pulse_high"]) == (None, "", 130)


def test_the_trail_outlives_the_user_and_the_patient(api_client, user):
    alarm = AlarmFactory()
    patient_uuid = alarm.patient.uuid
    api_client.post(f"/api/alarms/{alarm.pk}/acknowledge/")

    user.delete()
    Patient.objects.filter(uuid=patient_uuid).delete()

    (row,) = rows()
    assert (row["user"], row["username"]) == (None, "nurse")
    assert (row["patient"], row["patient_uuid"]) == (None, patient_uuid)


# --- written by the admin, through the same services -----------------------------------------
def change_form_data(response) -> dict:
    """The POST data of an admin change form as the page shows it (every inline included)."""
    data = {}
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        forms += [inline.formset.management_form, *inline.formset.forms]
    for form in forms:
        for name in form.fields:
            value = form[name].value()
            if value is None or value is False:
                continue
            data[form.add_prefix(name)] = "on" if value is True else value
    return data


def test_the_admins_acknowledge_action_is_audited(admin_client, admin_user):
    first, second = AlarmFactory(), AlarmFactory(kind="pulse_high")
    AlarmFactory(state="resolved", kind="news2")
    page = admin_client.get("/admin/vitals/alarm/")
    assert "acknowledge" in dict(page.context["action_form"].fields["action"].choices)

    response = admin_client.post(
        "/admin/vitals/alarm/",
        {"action": "acknowledge", "_selected_action": [a.pk for a in Alarm.objects.all()]},
    )

    assert response.status_code == 302
    assert sorted((r["username"], r["action"], r["object_id"]) for r in rows()) == [
        ("admin", "alarm.acknowledge", str(first.pk)),
        ("admin", "alarm.acknowledge", str(second.pk)),
    ]
    assert AlarmEvent.objects.filter(type="acknowledged").count() == 2


def test_the_acknowledge_action_is_for_those_who_may_acknowledge(roles, django_user_model):
    """A staff viewer sees alarms in the admin but is not offered the action, and posting it
    anyway does nothing."""
    staff_viewer = django_user_model.objects.create_user("desk", password="x" * 16, is_staff=True)
    staff_viewer.groups.add(roles["viewer"])
    alarm = AlarmFactory()
    client = Client()
    client.force_login(staff_viewer)

    page = client.get("/admin/vitals/alarm/")
    assert page.status_code == 200
    assert page.context["cl"].result_list[0] == alarm
    assert page.context["action_form"] is None  # no action at all for this user

    client.post("/admin/vitals/alarm/", {"action": "acknowledge", "_selected_action": [alarm.pk]})
    alarm.refresh_from_db()
    assert alarm.state == "active"
    assert rows() == []


def test_the_admins_alarm_limits_inline_is_audited_set_changed_and_reset(admin_client, admin_user):
    patient = PatientFactory(name="cyd")
    url = f"/admin/patients/patient/{patient.pk}/change/"
    common = {
        "user": admin_user.pk,
        "username": "admin",
        "object_type": "alarm_limits",
        "object_id": str(patient.pk),
        "patient": patient.pk,
        "patient_uuid": patient.uuid,
    }

    # Set the first time (the inline's empty form, holding the defaults).
    data = change_form_data(admin_client.get(url))
    data["alarm_limits-0-pulse_high"] = 140
    assert admin_client.post(url, data).status_code == 302
    # Changed.
    data = change_form_data(admin_client.get(url))
    data["alarm_limits-0-spo2_low"] = 85
    assert admin_client.post(url, data).status_code == 302
    # Saved unchanged: nothing to record.
    assert admin_client.post(url, change_form_data(admin_client.get(url))).status_code == 302
    # Deleted: back to the bedside defaults.
    data = change_form_data(admin_client.get(url))
    data["alarm_limits-0-DELETE"] = "on"
    assert admin_client.post(url, data).status_code == 302

    set_, changed = {**DEFAULTS, "pulse_high": 140}, {**DEFAULTS, "pulse_high": 140, "spo2_low": 85}
    assert rows() == [
        {**common, "action": "alarm_limits.update", "before": DEFAULTS, "after": set_},
        {**common, "action": "alarm_limits.update", "before": set_, "after": changed},
        {**common, "action": "alarm_limits.reset", "before": changed, "after": DEFAULTS},
    ]
    assert not AlarmLimits.objects.exists()


def test_the_admins_name_and_news2_scale_changes_are_audited(admin_client, admin_user):
    """A rename in the admin is the API's (patient_rename: audited, the names monitors sent
    dismissed as renamed); the NEWS2 scale changed is audited too; saved unchanged, nothing."""
    patient = PatientFactory(name="cyd")
    PatientNameConflict.objects.create(
        patient=patient, name="Cyd Jones", first_seen_at=T0, last_seen_at=T0, count=3
    )
    url = f"/admin/patients/patient/{patient.pk}/change/"
    common = {
        "user": admin_user.pk,
        "username": "admin",
        "object_type": "patient",
        "object_id": str(patient.pk),
        "patient": patient.pk,
        "patient_uuid": patient.uuid,
    }

    data = change_form_data(admin_client.get(url))
    data["name"] = "Cyd Jones"
    assert admin_client.post(url, data).status_code == 302
    data = change_form_data(admin_client.get(url))
    data["hypercapnic_respiratory_failure"] = "on"
    assert admin_client.post(url, data).status_code == 302
    assert admin_client.post(url, change_form_data(admin_client.get(url))).status_code == 302

    assert rows() == [
        {
            **common,
            "action": "patient.rename",
            "before": {"name": "cyd", "names_seen": ["Cyd Jones"]},
            "after": {"name": "Cyd Jones"},
        },
        {
            **common,
            "action": "patient.news2_scale",
            "before": {"hypercapnic_respiratory_failure": False},
            "after": {"hypercapnic_respiratory_failure": True},
        },
    ]
    patient.refresh_from_db()
    assert (patient.name, patient.hypercapnic_respiratory_failure) == ("Cyd Jones", True)
    assert PatientNameConflict.objects.get().resolution == "renamed"


def test_the_admin_shows_the_trail_and_never_changes_it(admin_client, user):
    alarm = AlarmFactory()
    alarm_acknowledge(alarm=alarm, user=user)
    event = AuditEvent.objects.get()
    base = "/admin/vitals/auditevent/"

    listed = admin_client.get(base, {"action__exact": "alarm.acknowledge"})
    assert listed.status_code == 200
    assert [e.pk for e in listed.context["cl"].result_list] == [event.pk]
    assert admin_client.get(f"{base}{event.pk}/change/").status_code == 200  # view only
    assert admin_client.get(f"{base}add/").status_code == 403
    assert admin_client.post(f"{base}{event.pk}/change/", {"username": "x"}).status_code == 403
    assert admin_client.post(f"{base}{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert rows()[0]["username"] == "nurse"


# --- read at GET /api/audit/ -------------------------------------------------------------------
@pytest.fixture
def trail(user) -> dict:
    ann, bob = PatientFactory(name="ann"), PatientFactory(name="bob")
    alarm = AlarmFactory(patient=ann)
    alarm_acknowledge(alarm=alarm, user=user)
    alarm_limits_update(patient=bob, user=user, pulse_high=130)
    return {"ann": ann, "bob": bob, "alarm": alarm}


def test_staff_read_the_trail_newest_first(staff_client, trail):
    response = staff_client.get("/api/audit/")

    assert response.status_code == 200
    ack, limits = AuditEvent.objects.order_by("id")
    body = response.json()
    assert (body["count"], body["next"], body["previous"]) == (2, None, None)
    assert body["results"] == [
        {
            "id": limits.pk,
            "at": iso(limits.at),
            "user": "nurse",
            "action": "alarm_limits.update",
            "object_type": "alarm_limits",
            "object_id": str(trail["bob"].pk),
            "patient": str(trail["bob"].uuid),
            "before": DEFAULTS,
            "after": {**DEFAULTS, "pulse_high": 130},
        },
        {
            "id": ack.pk,
            "at": iso(ack.at),
            "user": "nurse",
            "action": "alarm.acknowledge",
            "object_type": "alarm",
            "object_id": str(trail["alarm"].pk),
            "patient": str(trail["ann"].uuid),
            "before": {"state": "active"},
            "after": {
                "state": "acknowledged",
                "priority": "medium",
                "message": "SpO2 low: 88 % (< 90)",
            },
        },
    ]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?patient={ann}", ["alarm.acknowledge"]),
        ("?patient={bob}", ["alarm_limits.update"]),
        (f"?patient={uuid.UUID(int=7)}", []),  # unknown (or deleted since): nothing, not 404
        ("?action=alarm.acknowledge", ["alarm.acknowledge"]),
        (
            "?action=alarm.acknowledge,alarm_limits.update",
            ["alarm_limits.update", "alarm.acknowledge"],
        ),
        ("?patient={ann}&action=alarm_limits.update", []),
    ],
)
def test_the_trail_filters_by_patient_and_action(staff_client, trail, query, expected):
    query = query.format(ann=trail["ann"].uuid, bob=trail["bob"].uuid)
    results = staff_client.get(f"/api/audit/{query}").json()["results"]
    assert [r["action"] for r in results] == expected


def test_bad_filters_are_400_in_the_error_shape(staff_client):
    response = staff_client.get("/api/audit/?action=alarm.snooze&patient=123")
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], sorted(error["fields"])) == ("invalid", ["action", "patient"])


def test_the_trail_is_for_staff_only(anon_client, api_client, viewer_client, trail):
    assert anon_client.get("/api/audit/").status_code == 401
    for client in (api_client, viewer_client):
        response = client.get("/api/audit/")
        assert response.status_code == 403
        assert response.json() == {
            "error": {
                "status": 403,
                "code": "permission_denied",
                "message": "Only staff may do this.",
            }
        }
