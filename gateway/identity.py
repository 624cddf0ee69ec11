"""Who and where an HL7 message is about: the patient's uuid from their hospital identifier
(PID-3), the bed from a person location (PV1-3)."""

import uuid
from dataclasses import dataclass

# The assigning authority (PID-3.4) of the emulator's patients (`run_patient --via-hl7`):
# their identifier is the patient's uuid itself, taken as it is.
from vitals.pcd01 import EMULATOR_AUTHORITY

# The namespace of the patients' uuids derived from a hospital identifier: fixed for ever (a
# change would give every patient a new uuid, and their history to a stranger).
PATIENT_NAMESPACE = uuid.UUID("5b0c3a52-7c1e-4f1e-9d0e-1c2a6e0b8f41")
# Patient.mrn and Patient.mrn_authority hold this many characters: a longer PID-3.1 or PID-3.4
# is refused, never cut (two identifiers sharing their first 64 characters are two patients).
IDENTIFIER_MAX_LENGTH = 64


class IdentifierRefused(Exception):
    """PID-3 names no patient we may act on: `code` (HL7 table 0357) and `text` for the ERR
    on PID-3."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code, self.text = code, text


def identifier_check(*, authority: str, identifier: str) -> None:
    """IdentifierRefused (102) if the identifier or its authority is too long to be kept."""
    if max(len(authority), len(identifier)) > IDENTIFIER_MAX_LENGTH:
        raise IdentifierRefused(
            "102",
            f"PID-3: identifier and authority are at most {IDENTIFIER_MAX_LENGTH} characters",
        )


def patient_uuid_for(*, authority: str, identifier: str) -> uuid.UUID:
    """The stable uuid of the patient an authority (PID-3.4, its namespace id; may be empty)
    identifies as `identifier` (PID-3.1): the same pair, the same uuid, in every process."""
    return uuid.uuid5(PATIENT_NAMESPACE, f"{authority.strip()}|{identifier.strip()}")


def patient_uuid_of(*, authority: str, identifier: str) -> uuid.UUID:
    """The uuid PID-3 gives a patient: the emulator's patients' own (authority ICU-EMULATOR, a
    uuid as identifier), else patient_uuid_for. The ORU and the ADT handlers both use it, so
    that a patient's readings and admissions meet on one patient."""
    if authority == EMULATOR_AUTHORITY:
        try:
            return uuid.UUID(identifier)
        except ValueError:
            pass
    return patient_uuid_for(authority=authority, identifier=identifier)


@dataclass(frozen=True)
class Location:
    """A bed as HL7 names it in a PL field (PV1-3): point of care (our unit's code) ^ room ^
    bed (our bed's label)."""

    unit: str
    bed: str


def location_parse(components: list[str]) -> Location | None:
    """The unit and bed of a PL field's components (PL.1 point of care, PL.2 room, PL.3 bed);
    None without a point of care or a bed. A bed without a room is allowed (many gateways
    send `ICU^^5`)."""
    padded = [c.strip() for c in components] + ["", "", ""]
    unit, bed = padded[0], padded[2]
    if not unit or not bed:
        return None
    return Location(unit=unit, bed=bed)
