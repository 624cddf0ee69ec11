"""One HL7 message's text to its Outcome: parsed with python-hl7, routed by MSH-9.

ORU^R01 goes to gateway.pcd01.oru_handle (IHE PCD-01 observations), ADT^A01/A02/A03/A08 to
gateway.adt.adt_handle; any other type is an AR (ERR 200 unsupported message type, or 201
unsupported event code). Two messages in one frame (a second MSH) are an AR (ERR 100). A text
that is no HL7 message is an AR (ERR 100 without an MSH first, 102 when python-hl7 cannot
parse it). A handler that raises is an AR (ERR 207), logged with its
traceback: never a dropped connection. Runs in a worker thread: the database connection is
checked before and after each message, as a request would have it.
"""

import logging
from dataclasses import dataclass
from datetime import datetime

import hl7
from django.db import close_old_connections

from gateway import adt, pcd01
from gateway.ack import Header
from gateway.er7 import message_parse
from gateway.outcome import Hl7Error, Outcome

logger = logging.getLogger("gateway.dispatch")

ADT_EVENTS = frozenset({"A01", "A02", "A03", "A08"})
# ERR segments an acknowledgement lists (and its log line): a 1 MiB message of bad OBX would
# otherwise be answered by a larger ACK and logged whole. The others are counted.
ERRORS_LISTED = 100


@dataclass(frozen=True)
class Handled:
    """A message's header (for its ACK and the logs) and what handling it came to."""

    header: Header
    outcome: Outcome

    @property
    def message_type(self) -> str:
        """e.g. "ORU^R01"; "" when the MSH could not be read."""
        h = self.header
        return f"{h.message_type}^{h.trigger}" if h.trigger else h.message_type


def rejected(code: str, text: str, **location) -> Outcome:
    return Outcome(code="AR", errors=[Hl7Error(code=code, text=text, **location)])


def message_handle(*, text: str, received_at: datetime) -> Handled:
    """Handle one message (segments already separated by CR: core.mllp.segments_normalise)."""
    header = Header.read(text)
    if not header.readable:
        return Handled(header, rejected("100", "the message does not start with a readable MSH"))
    try:
        message = message_parse(text)
    except Exception as exc:  # python-hl7 raises ParseException, IndexError, ...
        return Handled(header, rejected("102", f"not parseable as HL7 v2: {exc}"))
    if f"\rMSH{header.field_separator}" in text:  # text starts with the MSH (readable)
        # Two messages in one frame (a batch without BHS, a sender's bug): handled as one, the
        # second one's observations would go to the first one's patient.
        return Handled(
            header,
            rejected("100", "one message per MLLP frame: a second MSH", segment="MSH", sequence=2),
        )
    route = (header.message_type.upper(), header.trigger.upper())
    if not route[0]:
        return Handled(header, rejected("101", "MSH-9 message type missing", **_msh(9, 1)))
    if route == ("ORU", "R01"):
        handler = _oru
    elif route[0] == "ADT" and route[1] in ADT_EVENTS:
        handler = _adt
    elif route[0] in ("ORU", "ADT"):
        return Handled(
            header,
            rejected(
                "201", f"unsupported event {route[1] or '(none)'} of {route[0]}", **_msh(9, 2)
            ),
        )
    else:
        return Handled(
            header, rejected("200", f"unsupported message type {route[0]}", **_msh(9, 1))
        )
    close_old_connections()
    try:
        outcome = handler(message, received_at)
    except Exception:
        logger.exception(
            "HL7 handler failed",
            extra={"control_id": header.control_id, "type": f"{route[0]}^{route[1]}"},
        )
        outcome = rejected("207", "application internal error")
    finally:
        close_old_connections()
    if len(outcome.errors) > ERRORS_LISTED:
        outcome.counts["errors_not_listed"] += len(outcome.errors) - ERRORS_LISTED
        del outcome.errors[ERRORS_LISTED:]
    return Handled(header, outcome)


def _msh(field: int, component: int) -> dict:
    return {"segment": "MSH", "sequence": 1, "field": field, "component": component}


def _oru(message: hl7.Message, received_at: datetime) -> Outcome:
    # Looked up at each call, so that tests can stand in for the handler.
    return pcd01.oru_handle(message, received_at=received_at)


def _adt(message: hl7.Message, received_at: datetime) -> Outcome:
    return adt.adt_handle(message)
