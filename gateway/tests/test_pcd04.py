"""The IHE PCD-04 ORU^R40 of each kind and state of alarm, segment by segment."""

import json
from datetime import timedelta

import hl7
import pytest
from hl7apy.parser import parse_message

from gateway.identity import Location
from gateway.pcd04 import AlarmContext, alarm_event_to_oru, hl7_escape, hl7_time
from gateway.selectors import alarm_context_get
from patients.tests.factories import PatientFactory
from units.models import Admission, Bed, Unit
from vitals.models import AlarmEvent
from vitals.services import alarm_event_record
from vitals.tests.factories import T0, AlarmFactory

UUID = "cfa69147-133e-59d7-a7fc-cfb87241a69f"
MSH = (
    "MSH|^~\\&|ICU_MONITOR||||20261123101525.731+0000||ORU^R40^ORU_R40|ICU31|P|2.6|||AL|NE||"
    "UNICODE UTF-8|||IHE_PCD_ACM_001^IHE PCD^1.3.6.1.4.1.19376.1.6.4.4^ISO"
)
OBR = "OBR|1||12^ICU_MONITOR|196616^MDC_EVT_ALARM^MDC|||20261123101525.731+0000"


def event(type: str = "raised", name: str = "Ada Lovelace", **alarm) -> dict:
    """An alarm event as the consumer publishes it (docs/alarms.md)."""
    return {
        "event_id": 31,
        "event": type,
        "alarm": {
            "id": 12,
            "kind": "spo2_low",
            "priority": "medium",
            "state": "active",
            "message": "SpO2 low: 88 % (< 90)",
            "value": 88.0,
            "threshold": 90.0,
            "raised_at": "2026-11-23T10:15:25.250000+00:00",
            **alarm,
        },
        "patient": {"uuid": UUID, "name": name},
        "at": "2026-11-23T10:15:25.731+00:00",
    }


def segments(text: str) -> list[str]:
    assert "\n" not in text
    return text.split("\r")


def attributes(phase: str, state: str, inactivation: str, priority: str, kind: str) -> list[str]:
    return [
        f"OBX|3|ST|68481^MDC_ATTR_EVENT_PHASE^MDC|1.0.0.0.3|{phase}||||||F",
        f"OBX|4|ST|68482^MDC_ATTR_ALARM_STATE^MDC|1.0.0.0.4|{state}||||||F",
        f"OBX|5|ST|68483^MDC_ATTR_ALARM_INACTIVATION_STATE^MDC|1.0.0.0.5|{inactivation}||||||F",
        f"OBX|6|ST|68484^MDC_ATTR_ALARM_PRIORITY^MDC|1.0.0.0.6|{priority}||||||F",
        f"OBX|7|ST|68485^MDC_ATTR_ALERT_TYPE^MDC|1.0.0.0.7|{kind}||||||F",
    ]


def test_a_raised_limit_alarm_with_mrn_and_bed():
    context = AlarmContext(mrn="123456", mrn_authority="HOSP", location=Location("icu-a", "5"))
    assert segments(alarm_event_to_oru(event(), context=context)) == [
        MSH,
        f"PID|||123456^^^HOSP^MR~{UUID}^^^ICU_MONITOR^PI||Lovelace^Ada",
        "PV1||I|icu-a^^5",
        OBR,
        "OBX|1|ST|196672^MDC_EVT_LO_LT_LIM^MDC|1.0.0.0.1|SpO2 low: 88 % (< 90)|||L~PM~SP|||F|||"
        "20261123101525.250+0000",
        "OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.0.0.0.2|88|%^%^UCUM|>90||||F|||"
        "20261123101525.731+0000",
        *attributes("start", "active", "enabled", "PM", "SP"),
    ]


def test_an_acknowledged_alarm_of_a_patient_known_only_by_uuid_and_in_no_bed():
    text = alarm_event_to_oru(event("acknowledged", state="acknowledged"))
    assert segments(text)[1:3] == [f"PID|||{UUID}^^^ICU_MONITOR^PI||Lovelace^Ada", "PV1||I"]
    assert segments(text)[-5:] == attributes("continue", "active", "alert-acknowledged", "PM", "SP")


def test_a_resolved_high_alarm_ends_the_alert():
    alarm = {
        "kind": "pulse_high",
        "priority": "high",
        "state": "resolved",
        "message": "Pulse high: 155 /min (> 120)",
        "value": 155.0,
        "threshold": 120.0,
    }
    lines = segments(alarm_event_to_oru(event("resolved", **alarm)))
    assert lines[4:6] == [
        "OBX|1|ST|196650^MDC_EVT_HI_GT_LIM^MDC|1.0.0.0.1|Pulse high: 155 /min (> 120)|||H~PH~SP"
        "|||F|||20261123101525.250+0000",
        "OBX|2|NM|147842^MDC_ECG_HEART_RATE^MDC|1.0.0.0.2|155|/min^/min^UCUM|<120||||F|||"
        "20261123101525.731+0000",
    ]
    assert lines[6:] == attributes("end", "inactive", "enabled", "PH", "SP")


@pytest.mark.parametrize(
    ("alarm", "obx1", "obx2"),
    [
        (
            {"kind": "temperature_high", "value": 39.4, "threshold": 39.0, "message": "T"},
            "OBX|1|ST|196650^MDC_EVT_HI_GT_LIM^MDC|1.0.0.0.1|T|||H~PM~SP",
            "OBX|2|NM|150364^MDC_TEMP_BODY^MDC|1.0.0.0.2|39.4|Cel^Cel^UCUM|<39",
        ),
        (
            {"kind": "news2", "priority": "high", "value": 9.0, "threshold": 7.0, "message": "N"},
            "OBX|1|ST|news2^NEWS2 escalation^99ICU|1.0.0.0.1|N|||H~PH~SP",
            "OBX|2|NM|news2_score^NEWS2 score^99ICU|1.0.0.0.2|9||<7",
        ),
        (
            {
                "kind": "asystole",
                "priority": "high",
                "value": 0.0,
                "threshold": 20.0,
                "message": "A",
            },
            "OBX|1|ST|asystole^Asystole (no pulse)^99ICU|1.0.0.0.1|A|||L~PH~SP",
            "OBX|2|NM|147842^MDC_ECG_HEART_RATE^MDC|1.0.0.0.2|0|/min^/min^UCUM|>20",
        ),
        (
            {"kind": "no_data", "value": 47.2, "threshold": 30.0, "message": "No data for 47 s"},
            "OBX|1|ST|no_data^No data from the monitor^99ICU|1.0.0.0.1|No data for 47 s|||H~PM~ST",
            "OBX|2|NM|time_without_data^Time without data^99ICU|1.0.0.0.2|47.2|s^s^UCUM|<30",
        ),
        (
            {
                "kind": "clock_skew",
                "priority": "low",
                "value": -290.0,
                "threshold": 30.0,
                "message": "Monitor clock 290 s behind",
            },
            "OBX|1|ST|clock_skew^Monitor clock off^99ICU|1.0.0.0.1|Monitor clock 290 s behind|||"
            "PL~ST",
            "OBX|2|NM|clock_offset^Monitor clock offset^99ICU|1.0.0.0.2|-290|s^s^UCUM",
        ),
        (
            {
                "kind": "spo2_probe_off",
                "priority": "low",
                "value": 0.0,
                "threshold": None,
                "message": "SpO2 probe off: no oximetry",
            },
            "OBX|1|ST|spo2_probe_off^SpO2 probe off^99ICU|1.0.0.0.1|SpO2 probe off: no oximetry|||"
            "PL~ST",
            "OBX|2|ST|68480^MDC_ATTR_ALERT_SOURCE^MDC|1.0.0.0.2|150456^MDC_PULS_OXIM_SAT_O2^MDC",
        ),
    ],
)
def test_each_kind_has_its_event_code_and_source(alarm, obx1, obx2):
    lines = segments(alarm_event_to_oru(event(**alarm)))
    assert lines[4].startswith(obx1 + "|")
    assert lines[5].startswith(obx2 + "|")


def test_delimiters_in_names_and_messages_are_escaped():
    text = alarm_event_to_oru(
        event(name="Jo|Ann O^Neil", message="a&b~c\\d|e^f\nnext line"),
        context=AlarmContext(mrn="12|34", mrn_authority="H^1"),
    )
    lines = segments(text)
    assert (
        lines[1] == f"PID|||12\\F\\34^^^H\\S\\1^MR~{UUID}^^^ICU_MONITOR^PI||O\\S\\Neil^Jo\\F\\Ann"
    )
    assert lines[4].split("|")[5] == "a\\T\\b\\R\\c\\E\\d\\F\\e\\S\\f next line"
    # python-hl7 reads the text back.
    parsed = hl7.parse(text)
    assert parsed.unescape(str(parsed.segment("OBX")[5])) == "a&b~c\\d|e^f next line"


def test_an_independent_parser_reads_the_message():
    """hl7apy (a second HL7 implementation) reads the message as an ORU^R40 of version 2.6."""
    message = parse_message(alarm_event_to_oru(event()), find_groups=False)
    assert message.msh.msh_9.to_er7() == "ORU^R40^ORU_R40"
    assert message.msh.msh_21.to_er7() == "IHE_PCD_ACM_001^IHE PCD^1.3.6.1.4.1.19376.1.6.4.4^ISO"
    assert [obx.obx_3.obx_3_1.to_er7() for obx in message.obx] == [
        "196672",
        "150456",
        "68481",
        "68482",
        "68483",
        "68484",
        "68485",
    ]


def test_hl7_time_keeps_the_offset_to_the_millisecond():
    assert hl7_time("2026-11-23T11:15:25.250999+01:00") == "20261123111525.250+0100"
    assert hl7_time(None) == ""
    assert hl7_escape("plain") == "plain"


@pytest.mark.django_db
def test_the_consumers_payload_is_what_the_message_is_built_from():
    """The event as vitals.services writes it to the outbox, with the MRN and the bed the
    patient was in at the event's time (a later transfer does not move the alarm)."""
    patient = PatientFactory(name="Ada Lovelace", mrn="123456", mrn_authority="HOSP")
    unit = Unit.objects.create(code="icu-a", name="ICU A")
    five = Bed.objects.create(unit=unit, label="5", position=1)
    six = Bed.objects.create(unit=unit, label="6", position=2)
    alarm = AlarmFactory(patient=patient)
    outbox = alarm_event_record(alarm=alarm, type=AlarmEvent.Type.RAISED)
    published = json.loads(json.dumps({"event_id": outbox.pk, **outbox.payload}))
    at = T0 + timedelta(minutes=5)
    Admission.objects.create(
        patient=patient,
        bed=five,
        admitted_at=T0,
        discharged_at=at + timedelta(minutes=1),
        end_reason="transfer",
    )
    Admission.objects.create(patient=patient, bed=six, admitted_at=at + timedelta(minutes=1))

    context = alarm_context_get(patient_uuid=str(patient.uuid), at=at)
    assert context == AlarmContext(
        mrn="123456", mrn_authority="HOSP", location=Location("icu-a", "5")
    )
    lines = segments(alarm_event_to_oru(published, context=context))
    assert lines[1] == f"PID|||123456^^^HOSP^MR~{patient.uuid}^^^ICU_MONITOR^PI||Lovelace^Ada"
    assert lines[2] == "PV1||I|icu-a^^5"
    assert lines[3].startswith(f"OBR|1||{alarm.pk}^ICU_MONITOR|196616^MDC_EVT_ALARM^MDC|||")
    assert alarm_context_get(patient_uuid=str(patient.uuid), at=at + timedelta(minutes=2)) == (
        AlarmContext(mrn="123456", mrn_authority="HOSP", location=Location("icu-a", "6"))
    )
    assert (
        alarm_context_get(patient_uuid="00000000-0000-0000-0000-000000000000", at=at)
        == AlarmContext()
    )
