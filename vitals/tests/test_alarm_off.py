"""Alarm limits that cannot switch an alarm off unseen (issue 14, item 9): every limit has a
clinically sensible range, refused outside it by the model, the database, the service, the API
and the admin; switching a limit alarm off is explicit (per kind, with a reason), audited, and
shown with the patient; NEWS2, asystole and technical alarms cannot be switched off."""

from dataclasses import fields
from datetime import UTC, datetime

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from patients.tests.factories import PatientFactory
from vitals.alarms import ALARM_OFF_KINDS, LIMIT_RANGES, LIMIT_RULES, Limits
from vitals.errors import AlarmOffRefused
from vitals.models import Alarm, AlarmEvent, AlarmLimits, AlarmOff, AuditEvent
from vitals.selectors import alarm_limits_for
from vitals.services import alarm_limits_update, alarm_switch_off, alarm_switch_on
from vitals.signs import LIMIT_DEFAULTS, SIGN_OF_LIMIT
from vitals.tests.factories import AlarmFactory, AlarmLimitsFactory
from vitals.tests.test_audit import change_form_data, rows

pytestmark = pytest.mark.django_db


# --- the registry ------------------------------------------------------------------------------
@pytest.mark.django_db(False)
def test_limits_model_and_rules_are_the_registrys_for_every_kind():
    """Every limit kind of vitals/signs.py: the model's field (its default and range, which the
    migrations hold), the detector's Limits and its rule, all equal to the registry's."""
    model = {
        f.name: f.default
        for f in AlarmLimits._meta.concrete_fields
        if f.name not in ("patient", "updated_at", "updated_by")
    }
    detector = {f.name: f.default for f in fields(Limits) if f.name != "off"}
    registry = {limit.kind: limit.default for limit in LIMIT_DEFAULTS} | {"delay_readings": 2}

    assert model == detector == registry
    assert Limits() == Limits(**registry)
    for limit in LIMIT_DEFAULTS:
        field = AlarmLimits._meta.get_field(limit.kind)
        bounds = sorted(v.limit_value for v in field.validators if hasattr(v, "limit_value"))
        assert tuple(bounds) == LIMIT_RANGES[limit.kind] == limit.settable
    rules = {
        rule.kind: (rule.sign, rule.label, rule.hysteresis, rule.critical) for rule in LIMIT_RULES
    }
    assert rules == {
        limit.kind: (SIGN_OF_LIMIT[limit.kind], limit.label, limit.hysteresis, limit.critical)
        for limit in LIMIT_DEFAULTS
    }
    assert tuple(limit.kind for limit in LIMIT_DEFAULTS) == ALARM_OFF_KINDS
    assert {"map_low", "map_high", "etco2_low", "etco2_high"} <= set(ALARM_OFF_KINDS)
    assert [c for c, _ in AlarmOff._meta.get_field("kind").choices] == list(ALARM_OFF_KINDS)


# --- ranges ----------------------------------------------------------------------------------
def test_the_model_and_the_database_refuse_a_limit_that_switches_an_alarm_off():
    patient = PatientFactory()
    limits = AlarmLimits(patient=patient, spo2_low=0, pulse_low=0, pulse_high=300)
    with pytest.raises(ValidationError) as refused:
        limits.full_clean()
    assert refused.value.message_dict == {
        "spo2_low": ["Ensure this value is greater than or equal to 80."],
        "pulse_low": ["Ensure this value is greater than or equal to 30."],
        "pulse_high": ["Ensure this value is less than or equal to 200."],
    }

    AlarmLimitsFactory(patient=patient)
    # Past the validators (a raw UPDATE): the database refuses too.
    for field, value in [("spo2_low", 0), ("pulse_high", 300), ("temperature_low", 30.0)]:
        with pytest.raises(IntegrityError), transaction.atomic():
            AlarmLimits.objects.filter(patient=patient).update(**{field: value})
    assert AlarmLimits.objects.values_list("spo2_low", "pulse_high", "temperature_low").get() == (
        90,
        120,
        35.0,
    )


def test_the_service_refuses_out_of_range_limits_and_records_nothing():
    patient = PatientFactory()
    with pytest.raises(ValidationError) as refused:
        alarm_limits_update(patient=patient, user=None, spo2_low=0, delay_readings=11)
    assert refused.value.message_dict == {
        "spo2_low": ["Ensure this value is greater than or equal to 80."],
        "delay_readings": ["Ensure this value is less than or equal to 10."],
    }
    assert not AlarmLimits.objects.exists()
    assert rows() == []
    # The ends of each range are allowed.
    limits = alarm_limits_update(
        patient=patient, user=None, spo2_low=80, pulse_low=30, pulse_high=200, temperature_low=33
    )
    assert (limits.spo2_low, limits.pulse_low, limits.pulse_high) == (80, 30, 200)


def test_the_api_answers_400_with_each_limit_out_of_range(api_client):
    patient = PatientFactory()
    url = f"/api/patients/{patient.uuid}/alarm-limits/"

    response = api_client.patch(
        url,
        {"spo2_low": 0, "pulse_low": 0, "pulse_high": 300, "temperature_high": 45},
        format="json",
    )

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "status": 400,
            "code": "invalid",
            "message": "Invalid input.",
            "fields": {
                "spo2_low": ["Ensure this value is greater than or equal to 80."],
                "pulse_low": ["Ensure this value is greater than or equal to 30."],
                "pulse_high": ["Ensure this value is less than or equal to 200."],
                "temperature_high": ["Ensure this value is less than or equal to 41.0."],
            },
        }
    }
    assert not AlarmLimits.objects.exists()
    assert rows() == []


def test_the_admin_refuses_a_limit_out_of_range(admin_client):
    patient = PatientFactory(name="cyd")
    url = f"/admin/patients/patient/{patient.pk}/change/"
    data = change_form_data(admin_client.get(url))
    data["alarm_limits-0-pulse_high"] = 300

    response = admin_client.post(url, data)

    assert response.status_code == 200  # the form again, with the error
    [limits_inline] = [
        inline
        for inline in response.context["inline_admin_formsets"]
        if inline.formset.model is AlarmLimits
    ]
    assert limits_inline.formset.errors[0] == {
        "pulse_high": ["Ensure this value is less than or equal to 200."]
    }
    assert not AlarmLimits.objects.exists()
    assert rows() == []


# --- switching off and on --------------------------------------------------------------------
def test_a_clinician_switches_an_alarm_off_with_a_reason_and_on_again_audited(api_client, user):
    patient = PatientFactory(name="ann")
    open_alarm = AlarmFactory(patient=patient, kind="spo2_low")
    news2 = AlarmFactory(patient=patient, kind="news2")
    url = f"/api/patients/{patient.uuid}/alarms-off/"
    started = datetime.now(tz=UTC)

    response = api_client.post(
        url, {"kind": "spo2_low", "reason": "  probe on a cold finger  "}, format="json"
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    off = AlarmOff.objects.get()
    assert body == {
        "kind": "spo2_low",
        "reason": "probe on a cold finger",
        "by": "nurse",
        "at": off.at.isoformat().replace("+00:00", "Z"),
    }
    assert (off.patient, off.by, off.by_username) == (patient, user, "nurse")
    assert started <= off.at <= datetime.now(tz=UTC)
    # IEC 60601-1-8 ALARM OFF ends that alarm condition: the open one resolves, on the topic too.
    open_alarm.refresh_from_db()
    assert (open_alarm.state, open_alarm.resolved_at) == ("resolved", off.at)
    assert list(AlarmEvent.objects.values_list("alarm_id", "type")) == [(open_alarm.pk, "resolved")]
    news2.refresh_from_db()
    assert news2.state == "active"
    # The patient shows it, in the list and alone.
    assert api_client.get(f"/api/patients/{patient.uuid}/").json()["alarms_off"] == [body]
    assert api_client.get("/api/patients/").json()["results"][0]["alarms_off"] == [body]
    assert alarm_limits_for(patient_ids=[patient.pk])[patient.pk].off == frozenset({"spo2_low"})

    on = api_client.delete(f"{url}spo2_low/")
    assert on.status_code == 204
    # On already: nothing to do, nothing recorded.
    assert api_client.delete(f"{url}spo2_low/").status_code == 204
    assert not AlarmOff.objects.exists()
    assert api_client.get(f"/api/patients/{patient.uuid}/").json()["alarms_off"] == []

    common = {
        "user": user.pk,
        "username": "nurse",
        "object_type": "alarm_off",
        "object_id": str(off.pk),
        "patient": patient.pk,
        "patient_uuid": patient.uuid,
    }
    switched_off = {"kind": "spo2_low", "off": True, "reason": "probe on a cold finger"}
    assert rows() == [
        {
            **common,
            "action": "alarm.off",
            "before": {"kind": "spo2_low", "off": False},
            "after": {**switched_off, "by": "nurse", "resolved_alarm": open_alarm.pk},
        },
        {
            **common,
            "action": "alarm.on",
            "before": {**switched_off, "by": "nurse"},
            "after": {"kind": "spo2_low", "off": False},
        },
    ]


@pytest.mark.parametrize("kind", ["news2", "asystole", "spo2_probe_off", "pulse"])
def test_news2_asystole_and_technical_alarms_cannot_be_switched_off(api_client, kind):
    patient = PatientFactory()
    url = f"/api/patients/{patient.uuid}/alarms-off/"

    response = api_client.post(url, {"kind": kind, "reason": "too noisy"}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "status": 400,
            "code": "alarm_off_refused",
            "message": f"'{kind}' cannot be switched off: only the limit alarms can (pulse_low, "
            "pulse_high, resp_rate_low, resp_rate_high, systolic_low, systolic_high, "
            "diastolic_low, diastolic_high, map_low, map_high, spo2_low, temperature_low, "
            "temperature_high, etco2_low, etco2_high); NEWS2 escalation, asystole and the "
            "technical alarms always sound.",
        }
    }
    assert api_client.delete(f"{url}{kind}/").status_code == 400
    assert not AlarmOff.objects.exists()
    assert not AuditEvent.objects.exists()
    # Nor behind the API's back: the service and the database refuse too.
    with pytest.raises(AlarmOffRefused):
        alarm_switch_off(patient=patient, kind=kind, reason="too noisy", user=None)
    with pytest.raises(IntegrityError), transaction.atomic():
        AlarmOff.objects.create(patient=patient, kind=kind, reason="too noisy")


def test_switching_off_needs_a_reason_and_the_clinician_role(api_client, viewer_client):
    patient = PatientFactory()
    url = f"/api/patients/{patient.uuid}/alarms-off/"

    blank = api_client.post(url, {"kind": "pulse_high", "reason": "  "}, format="json")
    assert blank.status_code == 400
    assert blank.json()["error"]["fields"] == {"reason": ["This field may not be blank."]}
    missing = api_client.post(url, {"kind": "pulse_high"}, format="json")
    assert missing.json()["error"]["fields"] == {"reason": ["This field is required."]}
    with pytest.raises(ValidationError) as refused:
        alarm_switch_off(patient=patient, kind="pulse_high", reason=" ", user=None)
    assert refused.value.message_dict == {"reason": ["This field cannot be blank."]}

    viewer = viewer_client.post(url, {"kind": "pulse_high", "reason": "x"}, format="json")
    assert viewer.status_code == 403
    assert viewer.json()["error"]["message"] == (
        "Your role does not allow this; it takes the permissions patients.view_patient, "
        "vitals.view_alarmlimits, vitals.change_alarmlimits."
    )
    alarm_switch_off(patient=patient, kind="pulse_high", reason="pacing", user=None)
    assert viewer_client.delete(f"{url}pulse_high/").status_code == 403
    assert list(AlarmOff.objects.values_list("kind", "reason")) == [("pulse_high", "pacing")]


def test_switching_off_again_records_the_new_reason():
    patient = PatientFactory()
    first = alarm_switch_off(patient=patient, kind="resp_rate_high", reason="crying", user=None)
    again = alarm_switch_off(patient=patient, kind="resp_rate_high", reason="physio", user=None)
    assert (again.pk, AlarmOff.objects.get().reason) == (first.pk, "physio")
    assert [(r["action"], r["before"], r["after"]) for r in rows()] == [
        (
            "alarm.off",
            {"kind": "resp_rate_high", "off": False},
            {"kind": "resp_rate_high", "off": True, "reason": "crying", "by": ""},
        ),
        (
            "alarm.off",
            {"kind": "resp_rate_high", "off": True, "reason": "crying", "by": ""},
            {"kind": "resp_rate_high", "off": True, "reason": "physio", "by": ""},
        ),
    ]
    alarm_switch_on(patient=patient, kind="resp_rate_high", user=None)
    assert Alarm.objects.count() == 0
    assert [r["action"] for r in rows()] == ["alarm.off", "alarm.off", "alarm.on"]


def test_the_admin_lists_the_alarms_off_and_changes_none(admin_client):
    patient = PatientFactory(name="gil")
    off = alarm_switch_off(patient=patient, kind="temperature_high", reason="cooling", user=None)

    page = admin_client.get("/admin/vitals/alarmoff/")

    assert page.status_code == 200
    assert list(page.context["cl"].result_list) == [off]
    assert admin_client.get("/admin/vitals/alarmoff/add/").status_code == 403
    assert (
        admin_client.post(f"/admin/vitals/alarmoff/{off.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert AlarmOff.objects.get() == off
