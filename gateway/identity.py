"""Who and where an HL7 message is about: the patient's uuid from their hospital identifier
(PID-3), the bed from a person location (PV1-3)."""

import uuid
from dataclasses import dataclass

# The namespace of the patients' uuids derived from a hospital identifier: fixed for ever (a
# change would give every patient a new uuid, and their history to a stranger).
PATIENT_NAMESPACE = uuid.UUID("5b0c3a52-7c1e-4f1e-9d0e-1c2a6e0b8f41")


def patient_uuid_for(*, authority: str, identifier: str) -> uuid.UUID:
    """The stable uuid of the patient an authority (PID-3.4, its namespace id; may be empty)
    identifies as `identifier` (PID-3.1): the same pair, the same uuid, in every process."""
    return uuid.uuid5(PATIENT_NAMESPACE, f"{authority.strip()}|{identifier.strip()}")


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
