"""The HL7 v2 acknowledgement in original mode: MSH, MSA and one ERR per error.

- MSH: the message's sending and receiving application and facility swapped (MSH-3/4 <->
  MSH-5/6), MSH-7 now, MSH-9 `ACK^<trigger>^ACK`, MSH-10 a new control id, MSH-11 (processing
  id) and MSH-12 (version) copied. The message's own separators are kept, so that the copied
  fields stay valid as they are.
- MSA: MSA-1 AA, AE or AR; MSA-2 the message's MSH-10.
- ERR (v2.5 and later): ERR-2 error location (ERL: segment id ^ sequence ^ field ^ field
  repetition ^ component), ERR-3 the error code (CWE: code ^ text ^ HL70357), ERR-4 the
  severity (table 0516: E, W, I). ERR-1 (the v2.4 "error code and location") is left empty.
  Checked against the ERL data type of HL7 v2.5.1 (integrationsoup.com/hl7-reference/datatypes/
  erl; build.fhir.org/ig/HL7/v2ig/StructureDefinition-ERL.html) and table 0357
  (terminology.hl7.org/CodeSystem/v2-0357).

A message whose MSH cannot be parsed still gets an AR: `Header.read` takes what it can from the
raw text (the names to swap and MSH-10 if the first segment is an MSH), else leaves them empty.
"""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from core.hl7_text import hl7_escape, hl7_timestamp
from gateway.outcome import AckCode, Hl7Error

STANDARD_SEPARATORS = "|^~\\&"


@dataclass(frozen=True)
class Header:
    """What an acknowledgement copies from a message's MSH: raw field texts (escapes kept)."""

    field_separator: str = "|"
    encoding: str = "^~\\&"  # component, repetition, escape, subcomponent
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    message_type: str = ""  # MSH-9.1, e.g. ORU
    trigger: str = ""  # MSH-9.2, e.g. R01
    control_id: str = ""  # MSH-10
    processing_id: str = ""  # MSH-11
    version: str = ""  # MSH-12
    readable: bool = False  # the first segment is an MSH with sane separators

    @classmethod
    def read(cls, text: str) -> "Header":
        """The header of a message's text (segments separated by CR), as far as it can be
        read: an empty Header when the first segment is not an MSH with sane separators."""
        first = text.split("\r", 1)[0]
        if not first.startswith("MSH") or len(first) < 8:
            return cls()
        separator = first[3]
        encoding = first[4:].split(separator, 1)[0]
        if (
            separator.isalnum()
            or separator.isspace()
            or len(encoding) < 4
            or len(set(separator + encoding[:4])) != 5
            or any(c.isalnum() or c.isspace() for c in encoding[:4])
        ):
            return cls()
        encoding = encoding[:4]
        # fields[n] is MSH-n (MSH-1 is the separator itself, MSH-2 the encoding characters).
        fields = ["MSH", separator, *first[4:].split(separator)]
        fields = [*fields, *[""] * (13 - len(fields))]
        message_type = fields[9].split(encoding[1], 1)[0].split(encoding[0])
        message_type += ["", ""]
        return cls(
            field_separator=separator,
            encoding=encoding,
            sending_application=fields[3],
            sending_facility=fields[4],
            receiving_application=fields[5],
            receiving_facility=fields[6],
            message_type=message_type[0].strip(),
            trigger=message_type[1].strip(),
            control_id=fields[10],
            processing_id=fields[11],
            version=fields[12],
            readable=True,
        )


def control_id_new() -> str:
    """A new MSH-10: 20 characters (the length HL7 v2.5 allows)."""
    return uuid.uuid4().hex[:20]


def text_escape(text: str, header: Header) -> str:
    """A text for an ST/TX component, escaped with the message's own separators."""
    component, repetition, escape, subcomponent = header.encoding
    return hl7_escape(
        text,
        field=header.field_separator,
        component=component,
        repetition=repetition,
        escape=escape,
        subcomponent=subcomponent,
    )


def ack_build(
    *,
    header: Header,
    code: AckCode,
    errors: list[Hl7Error] = (),
    now: datetime | None = None,
    control_id: str | None = None,
    application: str = "ICU-MONITOR",
) -> str:
    """The acknowledgement's text, segments separated by CR (no trailing CR). Our MSH-3 is the
    message's MSH-5, or `application` when the message named none."""
    f = header.field_separator
    c = header.encoding[0]
    now = now or datetime.now(UTC)
    trigger = f"{c}{header.trigger}{c}ACK" if header.trigger else ""
    msh = f.join(
        [
            "MSH",
            header.encoding,
            header.receiving_application or application,
            header.receiving_facility,
            header.sending_application,
            header.sending_facility,
            hl7_timestamp(now),
            "",
            f"ACK{trigger}",
            control_id or control_id_new(),
            header.processing_id or "P",
            header.version or "2.6",
        ]
    )
    segments = [msh, f.join(["MSA", code, header.control_id])]
    for error in errors:
        location = [
            error.segment,
            str(error.sequence) if error.segment else "",
            "" if error.field is None else str(error.field),
            "",
            "" if error.component is None else str(error.component),
        ]
        segments.append(
            f.join(
                [
                    "ERR",
                    "",
                    c.join(location).rstrip(c),
                    c.join([error.code, text_escape(error.text, header), "HL70357"]),
                    error.severity,
                ]
            )
        )
    return "\r".join(segments)
