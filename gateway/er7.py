"""HL7 v2 messages (ER7, the pipe-and-hat encoding) parsed to the depth the handlers read.

python-hl7's `hl7.parse` splits every field into repetitions, components and subcomponents
up front: some 150 containers for a 7-segment ORU^R01, two thirds of the gateway's time per
message (cProfile). The handlers (pcd01, adt) read each field's text and split it themselves,
so `message_parse` splits segments and fields only and gives the same `hl7.Message` (python-hl7's
own containers, separators and escape character; `segment()`, `segments()`, `unescape()`),
whose fields' `str()` is the text python-hl7 would give: tested equal on every test message
and on arbitrary ones (gateway/tests/test_er7.py)."""

import hl7
from hl7.parser import create_parse_plan

HEADERS = ("MSH", "BHS", "FHS")


def message_parse(text: str) -> hl7.Message:
    """`text` (segments separated by CR) as an hl7.Message of segments of fields; each field
    is its text, but the segment's name, which is an `hl7.Field` as python-hl7 makes it (and
    MSH-1, MSH-2). Raises what hl7.parse raises for a text that is not a message."""
    text = text.strip()
    plan = create_parse_plan(text)  # checks the MSH and reads its separators
    separators, esc = plan.separators, plan.esc
    field_separator = separators[1]

    def field(value: str) -> hl7.Field:
        return hl7.Field(sequence=[value], esc=esc, separators=separators)

    segments = []
    for line in text.split("\r"):
        if line[:3] in HEADERS and len(line) > 3:
            sep0 = line[3]
            end = line.find(sep0, 4)
            end = len(line) if end < 0 else end
            rest = line[end + 1 :]
            fields = [field(line[:3]), field(sep0), field(line[4:end])]
            if rest:
                fields += rest.split(sep0)
        else:
            fields = line.split(field_separator)
            fields[0] = field(fields[0])
        segments.append(hl7.Segment(sequence=fields, esc=esc, separators=separators))
    return hl7.Message(sequence=segments, esc=esc, separators=separators)
