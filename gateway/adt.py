"""ADT^A01/A02/A03/A08 to units, beds and admissions: see the module's owner (issue 19)."""

import hl7

from gateway.outcome import Outcome


def adt_handle(message: hl7.Message) -> Outcome:
    """Admit (A01), transfer (A02), discharge (A03) or update (A08) the patient of PID-3 to
    the bed of PV1-3; AA, or AE saying which field and why."""
    raise NotImplementedError
