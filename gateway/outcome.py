"""What handling one HL7 message came to: the acknowledgement code, its ERR segments, and the
vitals messages to deliver to Kafka before an AA may be sent."""

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

AckCode = Literal["AA", "AE", "AR"]


@dataclass(frozen=True)
class Hl7Error:
    """One ERR segment (HL7 v2.6 ERR): where and why.

    `code`: HL7 table 0357 (message error condition codes), e.g. "101" required field
    missing, "102" data type error, "103" table value not found, "200" unsupported message
    type, "201" unsupported event code, "204" unknown key identifier, "207" application
    internal error. `severity`: table 0516, "E" error, "W" warning, "I" information.
    """

    code: str
    text: str
    segment: str = ""  # "PID", "OBX", ...
    sequence: int = 1  # which occurrence of the segment in the message, from 1
    field: int | None = None
    component: int | None = None
    severity: Literal["E", "W", "I"] = "E"


@dataclass
class Outcome:
    """AA: processed (after `messages` are delivered); AE: understood but wrong (`errors` say
    which field and why; nothing of it delivered, or only its valid part: see the handler);
    AR: not processable (unsupported type, unreadable, the broker unreachable)."""

    code: AckCode
    errors: list[Hl7Error] = field(default_factory=list)
    # (key, value) Kafka messages for the vitals topic (contract version 2), in order.
    messages: list[tuple[bytes, bytes]] = field(default_factory=list)
    # What the handler counted, for the logs and metrics: "readings", "signs_skipped_unit",
    # "signs_skipped_special_value", "signs_skipped_status", "admit", ...
    counts: Counter = field(default_factory=Counter)
