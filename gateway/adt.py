"""ADT^A01/A02/A03/A08 from the hospital's ADT system to units, beds and admissions.

The ADT system is the authority on where a patient is; each message is applied through
units/services.py (audited: the actor is "HL7 ADT <event> <MSH-10>", no user) and answered:

- A01 (admit) and A02 (transfer) both say "the patient of PID-3 is now in the bed of PV1-3":
  in no bed, they are admitted; in another bed, transferred (an A01 for a patient admitted
  elsewhere, or an A02 for one in no bed, is applied with a warning ERR: a message was missed);
  in that bed already, nothing changes (a re-sent message). Bed held by another patient: AE
  (ERR PV1-3, 205); unknown unit or bed: AE (ERR PV1-3.1 or PV1-3.3, 103); no bed: AE (101).
- A03 (discharge): the patient's admission ends through admission_discharge (alarms
  resolved, monitoring ended). Discharged already (re-sent, or by a clinician): AA, nothing
  changes. Never admitted here: AE (ERR PID-3, 204): the A03 arrived before its A01; the
  sender's retry, after the A01, is applied.
- A08 (update patient information): the name of PID-5 ("Given Family") if it changed
  (vitals.services.patient_rename, audited). A bed in PV1-3 other than the patient's is not a
  transfer: ignored, with a warning ERR (code 0, "message accepted"). An unknown patient: AA,
  nothing created.
- A message applied once is not applied again: an admission opened or closed by the same
  event and control id (its reason) makes it AA with nothing changed.

Table 0357 codes (checked in HL7 v2 table 0357, terminology.hl7.org CodeSystem v2-0357): 101
required field missing, 103 table value not found (PV1-3.1 point of care and PV1-3.3 bed are
IS fields over user tables 0302 and 0304), 201 unsupported event code, 204 unknown key
identifier ("not found; occurs for transactions other than additions"), 205 duplicate key
identifier ("already exists; occurs in response to addition transactions, e.g. new Admit"):
the bed already has its admission. 206 ("application record locked") only for a race lost to a
clinician's click between the checks and the write (a retry may pass); an occupied bed is not
a lock that a retry clears. Warnings (severity W, with AA) say what was applied differently
from the message's letter.
"""

import logging
from collections import Counter

import hl7
from django.db import transaction

from gateway import pcd01
from gateway.identity import IdentifierRefused, Location, identifier_check, location_parse
from gateway.outcome import Hl7Error, Outcome
from gateway.selectors import (
    bed_get_by_location,
    patient_get_by_identifier,
    unit_get_by_point_of_care,
)
from patients.models import Patient
from units.errors import AlreadyAdmitted, BedOccupied, NotAdmitted
from units.models import Admission, Bed
from units.services import admission_create, admission_discharge, admission_transfer
from vitals.contract import patient_name_parse
from vitals.errors import InvalidReading
from vitals.services import patient_identify, patient_rename

logger = logging.getLogger(__name__)

EVENTS = ("A01", "A02", "A03", "A08")

# PID and PV1 fields read (HL7 v2.5+ chapter 3).
PID_IDENTIFIER = 3  # CX: .1 id, .4 assigning authority
PID_NAME = 5  # XPN: .1 family name, .2 given name
PV1_LOCATION = 3  # PL: .1 point of care (our unit), .2 room, .3 bed (our bed's label)
PV1_PRIOR_LOCATION = 6
MAX_CONTROL_ID = 130


class _Rejected(Exception):
    def __init__(self, error: Hl7Error) -> None:
        super().__init__(error.text)
        self.error = error


def _field(message: hl7.Message, segment: str, field: int) -> list[list[str]]:
    """The first repetition of a field as components, each a list of its subcomponents,
    unescaped; [] when the segment or the field is absent."""
    try:
        raw = str(message.segment(segment)[field])
    except (KeyError, IndexError):
        return []
    separators = message.separators  # segment, field, repetition, component, subcomponent
    repetition = raw.split(separators[2])[0]
    return [
        [message.unescape(sub) for sub in component.split(separators[4])]
        for component in repetition.split(separators[3])
    ]


def _component(components: list[list[str]], index: int) -> str:
    """Component `index` (from 1), its first subcomponent, stripped."""
    return components[index - 1][0].strip() if len(components) >= index else ""


def _patient_key(message: hl7.Message) -> tuple[str, str]:
    """(authority, identifier) of PID-3's first identifier."""
    cx = _field(message, "PID", PID_IDENTIFIER)
    identifier = _component(cx, 1)
    if not identifier:
        raise _Rejected(
            Hl7Error("101", "PID-3: no patient identifier", segment="PID", field=PID_IDENTIFIER)
        )
    return _component(cx, 4), identifier


def _name(message: hl7.Message) -> tuple[str, str]:
    """PID-5 as "Given Family", and "" ; or "" and why it is not a name (the contract's rule:
    vitals.contract.patient_name_parse); ("", "") when absent."""
    xpn = _field(message, "PID", PID_NAME)
    raw = " ".join(part for part in (_component(xpn, 2), _component(xpn, 1)) if part)
    if not raw:
        return "", ""
    try:
        return patient_name_parse(raw=raw), ""
    except InvalidReading as refused:
        return "", refused.message


def _location(message: hl7.Message, field: int = PV1_LOCATION) -> Location | None:
    return location_parse([component[0] for component in _field(message, "PV1", field)])


def _bed(location: Location | None) -> Bed:
    if location is None:
        raise _Rejected(
            Hl7Error(
                "101",
                "PV1-3: no bed (point of care ^ room ^ bed)",
                segment="PV1",
                field=PV1_LOCATION,
            )
        )
    unit = unit_get_by_point_of_care(code=location.unit)
    if unit is None:
        raise _Rejected(
            Hl7Error(
                "103",
                f"PV1-3.1: no unit '{location.unit}'",
                segment="PV1",
                field=PV1_LOCATION,
                component=1,
            )
        )
    bed = bed_get_by_location(location=location)
    if bed is None:
        raise _Rejected(
            Hl7Error(
                "103",
                f"PV1-3.3: no bed '{location.bed}' in unit '{unit.code}'",
                segment="PV1",
                field=PV1_LOCATION,
                component=3,
            )
        )
    return bed


def _warning(code: str, text: str, segment: str, field: int) -> Hl7Error:
    return Hl7Error(code, text, segment=segment, field=field, severity="W")


def adt_handle(message: hl7.Message) -> Outcome:
    """Admit (A01), transfer (A02), discharge (A03) or update (A08) the patient of PID-3 to
    the bed of PV1-3; AA (perhaps with warnings), or AE saying which field and why. Nothing
    is changed by an AE."""
    event = _component(_field(message, "MSH", 9), 2).upper()
    if event not in EVENTS:
        error = Hl7Error(
            "201",
            f"MSH-9.2: ADT event '{event}' not supported ({', '.join(EVENTS)})",
            segment="MSH",
            field=9,
            component=2,
        )
        return Outcome("AE", errors=[error])
    control_id = _component(_field(message, "MSH", 10), 1)
    if not control_id:
        # The control id is what makes a re-sent message recognisable (see _place).
        error = Hl7Error("101", "MSH-10: no message control id", segment="MSH", field=10)
        return Outcome("AE", errors=[error])
    # Kept as the audit's username (150 characters) and the admission's reason (200).
    actor = f"HL7 ADT {event} {control_id[:MAX_CONTROL_ID]}"
    counts: Counter = Counter()
    try:
        with transaction.atomic():
            warnings = _apply(message, event=event, actor=actor, counts=counts)
    except _Rejected as rejected:
        counts[f"{event.lower()}_rejected"] += 1
        logger.warning(
            "ADT message refused",
            extra={"event": event, "control_id": control_id, "error": rejected.error.text},
        )
        return Outcome("AE", errors=[rejected.error], counts=counts)
    except BedOccupied:
        # Taken between the check and the write (a clinician's click): the index decided.
        counts[f"{event.lower()}_rejected"] += 1
        return Outcome("AE", errors=[_occupied()], counts=counts)
    except (AlreadyAdmitted, NotAdmitted) as race:
        # A clinician admitted or discharged the patient between the checks and the write.
        counts[f"{event.lower()}_rejected"] += 1
        error = Hl7Error("206", f"changed meanwhile, retry: {race}", segment="PID", field=3)
        return Outcome("AE", errors=[error], counts=counts)
    if counts["rename"]:
        # Committed: this process's ORU handler reads their new name at its next reading.
        authority, identifier = _patient_key(message)
        pcd01.known_patient_forget(authority=authority, identifier=identifier)
    return Outcome("AA", errors=warnings, counts=counts)


def _occupied(detail: str = "") -> Hl7Error:
    return Hl7Error(
        "205",
        f"PV1-3: the bed is occupied{detail}",
        segment="PV1",
        field=PV1_LOCATION,
    )


def _apply(message: hl7.Message, *, event: str, actor: str, counts: Counter) -> list[Hl7Error]:
    authority, identifier = _patient_key(message)
    try:
        identifier_check(authority=authority, identifier=identifier)
        # As for their monitors' readings: the patient with this MRN, else its uuid's.
        patient_uuid, patient = patient_get_by_identifier(
            identifier=identifier, authority=authority
        )
    except IdentifierRefused as refused:
        raise _Rejected(
            Hl7Error(refused.code, refused.text, segment="PID", field=PID_IDENTIFIER)
        ) from None
    name, not_a_name = _name(message)
    if event in ("A03", "A08"):
        if event == "A03":
            return _discharge(patient, actor=actor, counts=counts)
        warnings = _update(message, patient, name=name, actor=actor, counts=counts)
        if not_a_name and patient is not None:
            # An AA alone would let the sender believe the patient renamed.
            warnings.insert(
                0, _warning("102", f"PID-5: not renamed: {not_a_name}", "PID", PID_NAME)
            )
        return warnings
    # Without a usable PID-5 the MRN names them, as the ORU handler does without one.
    placeholders = {f"{authority} {identifier}".strip(), f"MRN {identifier}"}
    if patient is None or not patient.mrn:
        patient = patient_identify(
            patient_uuid=patient_uuid,
            name=name or f"{authority} {identifier}".strip(),
            mrn=identifier,
            mrn_authority=authority,
            actor=actor,
        )
    if name and patient.name in placeholders and patient.name != name:
        # Named by their MRN (their monitor's readings came first, without PID-5): the
        # admission's name is the first real one; an A08 would rename them too.
        patient = patient_rename(patient=patient, user=None, name=name, actor=actor)
        counts["rename"] += 1
    return _place(message, patient, event=event, actor=actor, counts=counts)


def _place(
    message: hl7.Message, patient: Patient, *, event: str, actor: str, counts: Counter
) -> list[Hl7Error]:
    """A01 and A02: the patient is now in PV1-3's bed."""
    bed = _bed(_location(message))
    if Admission.objects.filter(patient=patient, reason=actor).exists():
        counts["duplicate"] += 1
        return []
    current = (
        Admission.objects.select_related("bed__unit")
        .filter(patient=patient, discharged_at__isnull=True)
        .first()
    )
    if current is not None and current.bed_id == bed.pk:
        counts[f"{event.lower()}_unchanged"] += 1
        return []
    holder = Admission.objects.filter(bed=bed, discharged_at__isnull=True).first()
    if holder is not None:
        raise _Rejected(_occupied(f" by another patient ({bed})"))
    warnings = []
    if current is None:
        admission_create(patient=patient, bed=bed, by=None, reason=actor, actor=actor)
        counts["admit"] += 1
        if event == "A02":
            warnings.append(
                _warning("204", "A02 for a patient in no bed: admitted", "PID", PID_IDENTIFIER)
            )
        return warnings
    prior = _location(message, PV1_PRIOR_LOCATION)
    if event == "A01":
        warnings.append(
            _warning("205", f"A01 for a patient in {current.bed}: transferred", "PID", 3)
        )
    elif prior is not None and (prior.unit.lower(), prior.bed.lower()) != (
        current.bed.unit.code.lower(),
        current.bed.label.lower(),
    ):
        warnings.append(
            _warning(
                "0",
                f"PV1-6: the patient was in {current.bed}, not {prior.unit} bed {prior.bed}",
                "PV1",
                PV1_PRIOR_LOCATION,
            )
        )
    admission_transfer(patient=patient, bed=bed, by=None, reason=actor, actor=actor)
    counts["transfer"] += 1
    return warnings


def _discharge(patient: Patient | None, *, actor: str, counts: Counter) -> list[Hl7Error]:
    admissions = Admission.objects.filter(patient=patient) if patient is not None else None
    if admissions is None or not admissions.exists():
        raise _Rejected(
            Hl7Error(
                "204",
                "PID-3: the patient was never admitted here (an A03 before its A01?)",
                segment="PID",
                field=PID_IDENTIFIER,
            )
        )
    if admissions.filter(discharge_reason=actor).exists():
        counts["duplicate"] += 1  # this A03 was applied (the patient may be back since)
        return []
    if not admissions.filter(discharged_at__isnull=True).exists():
        counts["a03_unchanged"] += 1  # discharged already: re-sent, or by a clinician
        return []
    admission_discharge(patient=patient, by=None, reason=actor, actor=actor)
    counts["discharge"] += 1
    return []


def _update(
    message: hl7.Message, patient: Patient | None, *, name: str, actor: str, counts: Counter
) -> list[Hl7Error]:
    if patient is None:
        counts["a08_unknown_patient"] += 1
        return []
    warnings = []
    if name and name != patient.name:
        patient_rename(patient=patient, user=None, name=name, actor=actor)
        counts["rename"] += 1
    else:
        counts["a08_unchanged"] += 1
    location = _location(message)
    current = (
        Admission.objects.select_related("bed__unit")
        .filter(patient=patient, discharged_at__isnull=True)
        .first()
    )
    if location is not None and (
        current is None
        or (location.unit.lower(), location.bed.lower())
        != (current.bed.unit.code.lower(), current.bed.label.lower())
    ):
        where = f"in {current.bed}" if current is not None else "in no bed"
        warnings.append(
            _warning(
                "0",
                f"PV1-3: A08 does not move a patient ({where}; send an A02): bed ignored",
                "PV1",
                PV1_LOCATION,
            )
        )
    return warnings
