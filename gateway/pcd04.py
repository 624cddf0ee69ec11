"""An alarm change from the alarms topic -> an IHE PCD-04 "Report Alert" (ORU^R40^ORU_R40), the
message a hospital's alarm manager (IHE PCD ACM, "Alert Manager") takes from an alert reporter.

Pure: no database, no Kafka. The forwarder (gateway/forwarder.py) reads the event, looks the
patient's MRN and bed up (gateway/selectors.py) and sends what this builds.

The message (one alert per message):

    MSH  ORU^R40^ORU_R40, MSH-10 = "ICU" + the event id (a resend of one event has the same
         control id, so a receiver may drop the copy), MSH-15/16 AL/NE, MSH-21 the ACM profile
    PID  PID-3: the MRN (type MR, its authority) if the patient has one, then our patient uuid
         (type PI, authority ICU_MONITOR); PID-5: "Family^Given" from our "Given Family" name
    PV1  PV1-3: the bed the patient occupied when the change happened (unit code ^^ bed label,
         as the gateway reads PV1-3 coming in), if any
    OBR  OBR-3: the alarm's id (one alert: the same in its start, continue and end messages),
         OBR-4: 196616^MDC_EVT_ALARM^MDC, OBR-7: when the change happened (the event's `at`)
    OBX 1  the alert: what happened (MDC event code, or our kind as a local code), its text
           (our message), OBX-8 abnormality (L/H) ~ priority (PH/PM/PL) ~ type (SP/ST),
           OBX-14 when the alarm was raised
    OBX 2  the source: the sign (its MDC code) with the value and the limit crossed (OBX-7) and
           UCUM units; or, for an alarm without a number of a sign, MDC_ATTR_ALERT_SOURCE
    OBX 3-7  event phase, alarm state, inactivation state, priority, alert type

Where each code was checked (never guessed):
- The structure, OBX-4 "1.0.0.0.n" rows, OBX-8 interpretation, the values of phase (start,
  continue, end), state (active, inactive) and inactivation state (enabled,
  alert-acknowledged): IHE PCD TF-2 rev. 9.0 section 3.4 (PCD-04) as summarised by the
  Dialysis Machine HL7 IG rev. 4.0 (github.com/Ahmed-Shehzad/Dialysis,
  docs/Dialysis_Implementation_Plan.md, "Alarm Reporting (PCD-04)"), and Dräger's ACM
  reference messages for the alert reporter -> alert manager leg.
- MSH-21 IHE_PCD_ACM_001^IHE PCD^1.3.6.1.4.1.19376.1.6.4.4^ISO: Dräger's ACM reference
  messages and an IHE PCD infusion-pump simulator's PCD-04 (both the same OID).
- 196616 MDC_EVT_ALARM, 196648 MDC_EVT_HI, 196650 MDC_EVT_HI_GT_LIM: HL7 Terminology's
  ValueSet devicealert-condition, expanded from the MDC nomenclature 2024-12-05
  (build.fhir.org/ig/HL7/UTG/ValueSet-devicealert-condition.html).
- 196672 MDC_EVT_LO_LT_LIM (3::64): Dräger's SDC library constants (CodedValueConstants.h),
  which give MDC_EVT_HI_GT_LIM as 196650 as HL7's value set does.
- 68480 MDC_ATTR_ALERT_SOURCE, 68481 MDC_ATTR_EVENT_PHASE, 68482 MDC_ATTR_ALARM_STATE, 68483
  MDC_ATTR_ALARM_INACTIVATION_STATE, 68484 MDC_ATTR_ALARM_PRIORITY, 68485 MDC_ATTR_ALERT_TYPE:
  the Dialysis IG above, a Mindray-shaped PCD-04 test and the pump simulator agree. Dräger's
  and GE's published examples use 68164-68168 for source, phase, state, inactivation and
  priority (an older numbering of the ACM supplement): a receiver on that numbering would need
  them changed here (ALERT_ATTRIBUTE_CODES).
- 99ICU: a local coding system ("99zzz", HL7 table 0396) for what the nomenclature has no
  code for in our hands (NEWS2, no data, clock skew, ...).
- Units: UCUM (OBX-6 "code^code^UCUM"), from the signs registry; no MDC_DIM code is sent.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.hl7_text import hl7_escape, hl7_timestamp
from gateway.identity import Location
from vitals.signs import LIMIT_BY_KIND, SIGN_BY_KEY, SIGN_OF_LIMIT, Code

SENDING_APPLICATION = "ICU_MONITOR"
# The assigning authority of our own patient uuids in PID-3.
PATIENT_UUID_AUTHORITY = "ICU_MONITOR"
PROFILE = "IHE_PCD_ACM_001^IHE PCD^1.3.6.1.4.1.19376.1.6.4.4^ISO"
LOCAL_SYSTEM = "99ICU"

MDC_EVT_ALARM = "196616^MDC_EVT_ALARM^MDC"
MDC_EVT_HI_GT_LIM = "196650^MDC_EVT_HI_GT_LIM^MDC"
MDC_EVT_LO_LT_LIM = "196672^MDC_EVT_LO_LT_LIM^MDC"
ALERT_ATTRIBUTE_CODES = {
    "source": "68480^MDC_ATTR_ALERT_SOURCE^MDC",
    "phase": "68481^MDC_ATTR_EVENT_PHASE^MDC",
    "state": "68482^MDC_ATTR_ALARM_STATE^MDC",
    "inactivation": "68483^MDC_ATTR_ALARM_INACTIVATION_STATE^MDC",
    "priority": "68484^MDC_ATTR_ALARM_PRIORITY^MDC",
    "type": "68485^MDC_ATTR_ALERT_TYPE^MDC",
}

PRIORITY = {"high": "PH", "medium": "PM", "low": "PL"}
# Event -> phase: an alarm starts, changes (priority, acknowledged, escalated) and ends.
PHASE = {"raised": "start", "resolved": "end"}
# Our alarm state -> (MDC_ATTR_ALARM_STATE, MDC_ATTR_ALARM_INACTIVATION_STATE).
STATE = {
    "active": ("active", "enabled"),
    "acknowledged": ("active", "alert-acknowledged"),
    "resolved": ("inactive", "enabled"),
}
TECHNICAL_KINDS = frozenset({"spo2_probe_off", "clock_skew", "sign_missing", "no_data"})


@dataclass(frozen=True)
class KindCoding:
    """How one alarm kind is told: its event code (OBX 1), its source (OBX 2) and which side
    of the limit is the alarm's (L below, H above, "" neither)."""

    event: str
    source: str
    unit: str = ""  # UCUM
    side: str = ""
    numeric: bool = True


def _cwe(code: Code) -> str:
    return f"{code.code}^{code.display}^MDC"


def _local(code: str, text: str) -> str:
    return f"{code}^{text}^{LOCAL_SYSTEM}"


def _kind_codings() -> dict[str, KindCoding]:
    codings = {}
    for kind, limit in LIMIT_BY_KIND.items():
        sign = SIGN_BY_KEY[SIGN_OF_LIMIT[kind]]
        codings[kind] = KindCoding(
            event=MDC_EVT_LO_LT_LIM if limit.low else MDC_EVT_HI_GT_LIM,
            source=_cwe(sign.mdc[0]),
            unit=sign.ucum,
            side="L" if limit.low else "H",
        )
    pulse, spo2 = SIGN_BY_KEY["pulse"], SIGN_BY_KEY["spo2"]
    codings.update(
        asystole=KindCoding(
            _local("asystole", "Asystole (no pulse)"), _cwe(pulse.mdc[0]), pulse.ucum, "L"
        ),
        news2=KindCoding(
            _local("news2", "NEWS2 escalation"), _local("news2_score", "NEWS2 score"), "", "H"
        ),
        spo2_probe_off=KindCoding(
            _local("spo2_probe_off", "SpO2 probe off"), _cwe(spo2.mdc[0]), numeric=False
        ),
        sign_missing=KindCoding(
            _local("sign_missing", "Sign without valid value (sensor off?)"),
            _local("signs_missing", "Signs missing"),
            "{signs}",
        ),
        clock_skew=KindCoding(
            _local("clock_skew", "Monitor clock off"),
            _local("clock_offset", "Monitor clock offset"),
            "s",
        ),
        no_data=KindCoding(
            _local("no_data", "No data from the monitor"),
            _local("time_without_data", "Time without data"),
            "s",
            "H",
        ),
    )
    return codings


KIND_CODINGS: dict[str, KindCoding] = _kind_codings()


@dataclass(frozen=True)
class AlarmContext:
    """What the event does not carry: the patient's hospital identifier and bed."""

    mrn: str = ""
    mrn_authority: str = ""
    location: Location | None = None


def hl7_time(value: str | None) -> str:
    """An ISO 8601 time stamp -> HL7 DTM with its offset, to the millisecond:
    YYYYMMDDHHMMSS.SSS+ZZZZ ("" for None)."""
    return hl7_timestamp(datetime.fromisoformat(value)) if value else ""


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else str(float(value))


def _segment(*fields: str) -> str:
    out = list(fields)
    while out and out[-1] == "":
        out.pop()
    return "|".join(out)


def _patient_name(name: str) -> str:
    """Our "Given Family" -> XPN "Family^Given" (one word: the family name)."""
    words = name.split()
    if not words:
        return ""
    if len(words) == 1:
        return hl7_escape(words[0])
    return f"{hl7_escape(words[-1])}^{hl7_escape(' '.join(words[:-1]))}"


def control_id(event_id: int) -> str:
    """MSH-10 of an event's message: the same for every attempt to send that event."""
    return f"ICU{event_id}"


def alarm_event_to_oru(event: Mapping[str, Any], *, context: AlarmContext = AlarmContext()) -> str:
    """The ORU^R40 (segments joined by CR, no MLLP framing) reporting one alarm event as
    published on KAFKA_ALARMS_TOPIC (docs/alarms.md: event_id, event, alarm, patient, at)."""
    alarm, patient = event["alarm"], event["patient"]
    kind = alarm["kind"]
    coding = KIND_CODINGS.get(kind) or KindCoding(
        _local(hl7_escape(kind), hl7_escape(kind)), ALERT_ATTRIBUTE_CODES["source"], numeric=False
    )
    at = hl7_time(event["at"])
    priority = PRIORITY[alarm["priority"]]
    alert_type = "ST" if kind in TECHNICAL_KINDS else "SP"
    alarm_state, inactivation = STATE[alarm["state"]]
    phase = PHASE.get(event["event"], "continue")

    identifiers = []
    if context.mrn:
        identifiers.append(f"{hl7_escape(context.mrn)}^^^{hl7_escape(context.mrn_authority)}^MR")
    identifiers.append(f"{patient['uuid']}^^^{PATIENT_UUID_AUTHORITY}^PI")
    location = ""
    if context.location is not None:
        location = f"{hl7_escape(context.location.unit)}^^{hl7_escape(context.location.bed)}"

    interpretation = "~".join(part for part in (coding.side, priority, alert_type) if part)
    unit = f"{coding.unit}^{coding.unit}^UCUM" if coding.unit else ""
    threshold = alarm.get("threshold")
    reference = ""
    if threshold is not None and coding.side:
        # The side of the crossed limit that is normal: above a low limit, below a high one.
        reference = (">" if coding.side == "L" else "<") + _number(threshold)
    if coding.numeric and alarm.get("value") is not None:
        source = ("NM", coding.source, _number(alarm["value"]), unit, reference)
    else:
        source = ("ST", ALERT_ATTRIBUTE_CODES["source"], coding.source, "", "")

    segments = [
        _segment(
            "MSH",
            "^~\\&",
            SENDING_APPLICATION,
            "",
            "",
            "",
            at,
            "",
            "ORU^R40^ORU_R40",
            control_id(event["event_id"]),
            "P",
            "2.6",
            "",
            "",
            "AL",
            "NE",
            "",
            "UNICODE UTF-8",
            "",
            "",
            PROFILE,
        ),
        _segment("PID", "", "", "~".join(identifiers), "", _patient_name(patient.get("name", ""))),
        _segment("PV1", "", "I", location),
        _segment("OBR", "1", "", f"{alarm['id']}^{SENDING_APPLICATION}", MDC_EVT_ALARM, "", "", at),
        _obx(
            1,
            "ST",
            coding.event,
            hl7_escape(alarm["message"]),
            interpretation=interpretation,
            time=hl7_time(alarm["raised_at"]),
        ),
        _obx(2, source[0], source[1], source[2], unit=source[3], reference=source[4], time=at),
        _obx(3, "ST", ALERT_ATTRIBUTE_CODES["phase"], phase),
        _obx(4, "ST", ALERT_ATTRIBUTE_CODES["state"], alarm_state),
        _obx(5, "ST", ALERT_ATTRIBUTE_CODES["inactivation"], inactivation),
        _obx(6, "ST", ALERT_ATTRIBUTE_CODES["priority"], priority),
        _obx(7, "ST", ALERT_ATTRIBUTE_CODES["type"], alert_type),
    ]
    return "\r".join(segments)


def _obx(
    row: int,
    value_type: str,
    identifier: str,
    value: str,
    *,
    unit: str = "",
    reference: str = "",
    interpretation: str = "",
    time: str = "",
) -> str:
    return _segment(
        "OBX",
        str(row),
        value_type,
        identifier,
        f"1.0.0.0.{row}",
        value,
        unit,
        reference,
        interpretation,
        "",
        "",
        "F",
        "",
        "",
        time,
    )
