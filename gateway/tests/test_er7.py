"""gateway.er7.message_parse gives what python-hl7's hl7.parse gives, to the depth the handlers
read: the same segments, each field's same text, the same separators and escape character."""

import hl7
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.er7 import message_parse
from gateway.tests import test_pcd01


def shape(message: hl7.Message) -> tuple:
    return (
        message.separators,
        message.esc,
        [[str(field) for field in segment] for segment in message],
    )


VENDOR_MESSAGES = [
    test_pcd01.mindray(test_pcd01.nm(1, test_pcd01.HR, "82", test_pcd01.BPM)),
    [
        "MSH|^~\\&|PIC iX^0009FBFFFF9B42B3^EUI-64|Philips|||20261203051500.496-0400||"
        "ORU^R01^ORU_R01|HP1203|P|2.6|||AL|NE||8859/1|EN^English^ISO639",
        'PID|1||""~12345^^^Philips^MR~6789^^^Philips^VN||LastName^""^""^^^^L||19710108|U',
        "OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.3.1.1|96|262688^MDC_DIM_PERCENT^MDC|||||F",
    ],
    # Other separators (MSH-1 '#', MSH-2 '$%*!'), escapes, repetitions, subcomponents.
    ["MSH#$%*!#A#B#C#D#20261203##ORU$R01#1#P#2.6", "PID###1$$$X$MR%2!x##Sm*T*ith$Anna"],
    [
        "MSH|^~\\&|ADT|CITYHOSP|ICU|CITYHOSP|20261203||ADT^A01^ADT_A01|ADT-1|P|2.5",
        "EVN|A01|20261203",
        "PID|||MRN-1001^^^CITYHOSP^MR||Smith^Anna",
        "PV1||I|ICU^^2",
    ],
]


@pytest.mark.parametrize("segments", VENDOR_MESSAGES)
def test_vendor_shaped_messages_parse_as_python_hl7_parses_them(segments):
    text = "\r".join(segments) + "\r"
    assert shape(message_parse(text)) == shape(hl7.parse(text))
    parsed = message_parse(text)
    assert str(parsed.segment(segments[1][:3])[0]) == segments[1][:3]
    assert len(parsed.segments("MSH")) == 1


field = st.text(alphabet="AB1 |^~&\\#.-\u00e9", max_size=12)
names = st.sampled_from(["PID", "PV1", "OBR", "OBX", "NTE", "ZXX"])
segment = st.tuples(names, st.lists(field, max_size=8)).map(lambda p: "|".join([p[0], *p[1]]))


@settings(max_examples=300, deadline=None)
@given(
    msh_fields=st.lists(field, min_size=1, max_size=12),
    segments=st.lists(segment, max_size=6),
    line_end=st.sampled_from(["", "\r"]),
)
def test_any_message_parses_as_python_hl7_parses_it(msh_fields, segments, line_end):
    text = "\r".join(["|".join(["MSH", "^~\\&", *msh_fields]), *segments]) + line_end
    assert shape(message_parse(text)) == shape(hl7.parse(text))


def test_what_is_not_a_message_is_refused_as_python_hl7_refuses_it():
    for text in ("PID|||1", "", "hello"):
        with pytest.raises(hl7.ParseException):
            hl7.parse(text)
        with pytest.raises(hl7.ParseException):
            message_parse(text)
