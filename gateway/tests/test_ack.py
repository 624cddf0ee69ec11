"""The HL7 acknowledgement (original mode) and the routing of a message to its handler."""

import logging
from datetime import UTC, datetime

import pytest
from hl7apy.parser import parse_message

from gateway import dispatch
from gateway.ack import Header, ack_build
from gateway.outcome import Hl7Error, Outcome

NOW = datetime(2026, 12, 3, 13, 50, 4, 123456, tzinfo=UTC)
ORU = (
    "MSH|^~\\&|MINDRAY_EGATEWAY^00A037EB00000001^EUI-64|MINDRAY|ICU-MONITOR|HOSP"
    "|20261203144500+0100||ORU^R01^ORU_R01|MSG-00042|P|2.6|||AL|NE||UNICODE UTF-8\r"
    "PID|||12345^^^HOSP^MR||Lovelace^Ada\r"
    "OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.1|97|262688^MDC_DIM_PERCENT^MDC|||||R"
)


def test_aa_swaps_the_names_and_answers_the_control_id():
    ack = ack_build(header=Header.read(ORU), code="AA", now=NOW, control_id="ACK-1")
    assert ack == (
        "MSH|^~\\&|ICU-MONITOR|HOSP|MINDRAY_EGATEWAY^00A037EB00000001^EUI-64|MINDRAY"
        "|20261203135004.123+0000||ACK^R01^ACK|ACK-1|P|2.6\r"
        "MSA|AA|MSG-00042"
    )
    parsed = parse_message(ack)  # a second implementation reads it
    assert parsed.msa.msa_2.to_er7() == "MSG-00042"


def test_ae_has_one_err_per_error_with_its_location_and_escaped_text():
    errors = [
        Hl7Error(code="101", text="PID-3 missing | no bed", segment="PID", field=3),
        Hl7Error(
            code="103",
            text="unit kPa^2",
            segment="OBX",
            sequence=2,
            field=6,
            component=1,
            severity="W",
        ),
    ]
    ack = ack_build(header=Header.read(ORU), code="AE", errors=errors, now=NOW, control_id="A2")
    assert ack.split("\r")[1:] == [
        "MSA|AE|MSG-00042",
        "ERR||PID^1^3|101^PID-3 missing \\F\\ no bed^HL70357|E",
        "ERR||OBX^2^6^^1|103^unit kPa\\S\\2^HL70357|W",
    ]
    parsed = parse_message(ack)
    assert parsed.err[1].err_3.to_er7() == "103^unit kPa\\S\\2^HL70357"


@pytest.mark.parametrize(
    ("text", "msh", "msa"),
    [
        ("garbage", "MSH|^~\\&|ICU-MONITOR||||20261203135004.123+0000||ACK|A3|P|2.6", "MSA|AR|"),
        (
            "MSH|^~\\&|MON|WARD|||x||ADT",
            "MSH|^~\\&|ICU-MONITOR||MON|WARD|20261203135004.123+0000||ACK|A3|P|2.6",
            "MSA|AR|",
        ),
        ("MSH#^~\\&#MON###", "MSH#^~\\&#ICU-MONITOR||MON||20261203135004.123+0000#", None),
    ],
)
def test_an_unreadable_message_still_gets_an_ar(text, msh, msa):
    ack = ack_build(header=Header.read(text), code="AR", now=NOW, control_id="A3")
    if msa is None:  # its own separators kept
        assert ack.startswith("MSH#^~\\&#ICU-MONITOR##MON##20261203135004.123+0000##ACK#A3#P#2.6")
        return
    assert ack.split("\r")[:2] == [msh, msa]


def handled(text, received_at=NOW):
    return dispatch.message_handle(text=text, received_at=received_at)


@pytest.fixture
def handlers(monkeypatch, db):
    """Stand-ins for the handlers. `db`: the dispatcher closes old connections around each
    handler, which touches the database connection a previous test may have left open."""
    seen = []

    def oru(message, *, received_at):
        seen.append(("oru", str(message.segment("MSH")[10]), received_at))
        return Outcome(code="AA", messages=[(b"k", b"v")])

    def adt(message):
        seen.append(("adt", str(message.segment("MSH")[9])))
        return Outcome(code="AE", errors=[Hl7Error(code="204", text="no such bed")])

    monkeypatch.setattr("gateway.pcd01.oru_handle", oru)
    monkeypatch.setattr("gateway.adt.adt_handle", adt)
    return seen


def test_routes_by_msh_9(handlers):
    oru = handled(ORU)
    assert (oru.outcome.code, oru.outcome.messages, oru.message_type) == (
        "AA",
        [(b"k", b"v")],
        "ORU^R01",
    )
    adt = handled("MSH|^~\\&|ADT|H|||20261203||ADT^A02^ADT_A02|9|P|2.5\rPID|||1")
    assert (adt.outcome.code, adt.header.control_id) == ("AE", "9")
    assert handlers == [("oru", "MSG-00042", NOW), ("adt", "ADT^A02^ADT_A02")]


@pytest.mark.parametrize(
    ("msh_9", "error"),
    [
        ("ORM^O01", Hl7Error("200", "unsupported message type ORM", "MSH", 1, 9, 1)),
        ("ORU^R40", Hl7Error("201", "unsupported event R40 of ORU", "MSH", 1, 9, 2)),
        ("ADT^A04", Hl7Error("201", "unsupported event A04 of ADT", "MSH", 1, 9, 2)),
        ("", Hl7Error("101", "MSH-9 message type missing", "MSH", 1, 9, 1)),
    ],
)
def test_other_types_are_rejected(handlers, msh_9, error):
    result = handled(f"MSH|^~\\&|A|B|C|D|20261203||{msh_9}|7|P|2.6")
    assert (result.outcome.code, result.outcome.errors) == ("AR", [error])
    assert handlers == []


@pytest.mark.parametrize(
    ("text", "code"),
    [("", "100"), ("PID|||1", "100"), ("\x00\x01", "100"), ("MSH|^~\\&", "101")],
)
def test_not_hl7_is_rejected(text, code):
    assert handled(text).outcome.errors[0].code == code


def test_a_handler_that_raises_is_an_ar_207_logged(monkeypatch, caplog, db):
    def broken(message, *, received_at):
        raise ZeroDivisionError("oops")

    monkeypatch.setattr("gateway.pcd01.oru_handle", broken)
    with caplog.at_level(logging.ERROR, logger="gateway.dispatch"):
        result = handled(ORU)
    assert (result.outcome.code, result.outcome.errors) == (
        "AR",
        [Hl7Error("207", "application internal error")],
    )
    [record] = caplog.records
    assert (record.control_id, record.type, record.exc_info[0]) == (
        "MSG-00042",
        "ORU^R01",
        ZeroDivisionError,
    )
