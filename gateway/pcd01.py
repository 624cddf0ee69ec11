"""IHE PCD-01 (ORU^R01) to readings: see the module's owner (helper for issue 19)."""

from datetime import datetime

import hl7

from gateway.outcome import Outcome


def oru_handle(message: hl7.Message, *, received_at: datetime) -> Outcome:
    """The readings of one ORU^R01 as version 2 vitals messages (Outcome.messages), or why
    not (AE with ERR segments)."""
    raise NotImplementedError
