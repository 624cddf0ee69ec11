"""Odd and hostile messages (a review of the gateway): each one an AE saying why, never an AR
207 (our crash), never a wrong patient, never a reading lost or stored wrong."""

import json
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from gateway import pcd01
from gateway.adt import adt_handle
from gateway.er7 import message_parse
from gateway.identity import patient_uuid_for
from gateway.models import Device
from gateway.outcome import Hl7Error
from gateway.pcd01 import oru_handle
from patients.models import Patient
from patients.tests.factories import PatientFactory
from units.models import Admission, Bed, Unit

pytestmark = pytest.mark.django_db

RECEIVED = datetime(2026, 12, 3, 9, 20, tzinfo=UTC)
HR = "147842^MDC_ECG_HEART_RATE^MDC"
LONG = "9" * 65  # one more than Patient.mrn and mrn_authority hold


@pytest.fixture(autouse=True)
def _fresh_caches():
    pcd01.known_clear()
    yield
    pcd01.known_clear()


@pytest.fixture
def unit() -> Unit:
    icu = Unit.objects.create(code="icu-a", name="ICU A")
    for position in (1, 2):
        Bed.objects.create(unit=icu, label=f"A{position}", position=position)
    return icu


def oru(*obx: str, pid3: str = "MRN1^^^HOSP^MR", name: str = "Smith^Ann"):
    segments = [
        "MSH|^~\\&|MON||||20261203101500+0100||ORU^R01^ORU_R01|M1|P|2.6",
        f"PID|||{pid3}||{name}",
        "OBR|1|||182777000^monitoring of patient^SCT|||20261203101500+0100",
        *(obx or [f"OBX|1|NM|{HR}|1|80|bpm|||||F"]),
    ]
    return oru_handle(message_parse("\r".join(segments)), received_at=RECEIVED)


def adt(event: str, control_id: str, *, pid3: str = "MRN1^^^HOSP^MR", name: str = "Smith^Ann"):
    segments = [
        f"MSH|^~\\&|ADT|HOSP|ICU|HOSP|20261203101500+0100||ADT^{event}^ADT_A01|{control_id}|P|2.6",
        f"EVN|{event}",
        f"PID|1||{pid3}||{name}",
        "PV1|1|I|icu-a^^A1",
    ]
    return adt_handle(message_parse("\r".join(segments)))


def values(outcome) -> list[dict]:
    return [json.loads(value) for _, value in outcome.messages]


@pytest.mark.parametrize("time", ["99991231235959-1200", "00010101000000+1400"])
def test_a_time_whose_utc_is_outside_the_calendar_is_ae_on_its_field(time) -> None:
    # 9999-12-31T23:59:59-12:00 is in the year 10000 in UTC: an OverflowError was an AR 207.
    outcome = oru(f"OBX|1|NM|{HR}|1|80|bpm|||||F|||{time}", f"OBX|2|NM|{HR}|1|81|bpm|||||F")

    assert outcome.code == "AE"
    assert outcome.errors == [Hl7Error("102", f"OBX-14 '{time}' is not an HL7 time", "OBX", 1, 14)]
    assert [v["pulse"] for v in values(outcome)] == [81]


@pytest.mark.parametrize("pid3", [f"{LONG}^^^HOSP^MR", f"MRN1^^^{LONG}^MR"])
def test_an_identifier_longer_than_the_mrn_column_is_ae_not_cut(unit, pid3) -> None:
    # Cut to 64, two MRNs sharing their first 64 characters were one patient (ORU), and the
    # ADT stored all of it (a DataError on PostgreSQL: AR 207) under another uuid.
    error = Hl7Error(
        "102", "PID-3: identifier and authority are at most 64 characters", "PID", 1, 3
    )

    assert (oru(pid3=pid3).code, oru(pid3=pid3).errors, oru(pid3=pid3).messages) == (
        "AE",
        [error],
        [],
    )
    assert (adt("A01", "C1", pid3=pid3).code, adt("A01", "C1", pid3=pid3).errors) == (
        "AE",
        [error],
    )
    assert not Patient.objects.exists()


def test_an_adt_acts_on_the_patient_who_has_the_mrn_whatever_their_uuid(unit) -> None:
    # Given MRN1 by the API (or by a PCD-01 message) under another uuid: the A01 made a second
    # patient and set the MRN on them, which the one-per-MRN constraint refused (AR 207).
    ann = PatientFactory(name="Ann Smith", mrn="MRN1", mrn_authority="HOSP")

    assert adt("A01", "C1").code == "AA"
    assert adt("A08", "C2", name="Smith^Anne").code == "AA"
    assert list(Admission.objects.values_list("patient", "discharged_at")) == [(ann.pk, None)]
    assert adt("A03", "C3").code == "AA"
    assert Admission.objects.get().discharged_at is not None
    assert list(Patient.objects.values_list("uuid", "name")) == [(ann.uuid, "Anne Smith")]


def test_an_adt_for_an_emulated_patient_acts_on_the_emulators_uuid(unit) -> None:
    # `run_patient --via-hl7` sends `<uuid>^^^ICU-EMULATOR`; its readings go to that uuid, so
    # must an ADT naming it (it made a second patient, or, after one ORU, an AR 207).
    dave = PatientFactory(name="Dave Jones")
    pid3 = f"{dave.uuid}^^^ICU-EMULATOR^PI"

    assert values(oru(pid3=pid3))[0]["patient_uuid"] == str(dave.uuid)
    pcd01.known_clear()
    # The same uuid spelt otherwise (upper case): still Dave, not "a hospital patient".
    upper = f"{str(dave.uuid).upper()}^^^ICU-EMULATOR^PI"
    assert values(oru(pid3=upper))[0]["patient_uuid"] == str(dave.uuid)
    assert adt("A01", "C1", pid3=pid3).code == "AA"

    assert list(Admission.objects.values_list("patient", flat=True)) == [dave.pk]
    assert Patient.objects.count() == 1


def test_the_emulators_authority_cannot_reach_a_patient_known_by_a_hospital_mrn(unit) -> None:
    # Their uuid is in the API and in every PCD-04 message (PID-3 ^ICU_MONITOR^PI): an
    # ICU-EMULATOR PID-3 naming it must not write readings or admissions under them.
    ann = PatientFactory(name="Ann Smith", mrn="MRN1", mrn_authority="HOSP")
    pid3 = f"{ann.uuid}^^^ICU-EMULATOR^PI"
    error = Hl7Error(
        "204",
        "PID-3: an ICU-EMULATOR identifier names a patient known by their hospital "
        "identifier: send that one",
        "PID",
        1,
        3,
    )

    outcome = oru(pid3=pid3, name="Evil^Eve")
    assert (outcome.code, outcome.errors, outcome.messages) == ("AE", [error], [])
    outcome = adt("A01", "C1", pid3=pid3)
    assert (outcome.code, outcome.errors) == ("AE", [error])
    assert not Admission.objects.exists()


@pytest.mark.parametrize(
    ("pid3", "authority", "identifier"),
    [("MRN1^^^HOSP^MR", "HOSP", "MRN1"), ("M\\T\\1^^^ST\\T\\MARY^MR", "ST&MARY", "M&1")],
)
def test_readings_and_adt_of_one_new_patient_meet_on_one_row(
    unit, pid3, authority, identifier
) -> None:
    # The ORU first (creates them by uuid5, MRN set), then the ADT: the same patient. An
    # escaped "&" (\T\) in the authority was unescaped by the ADT only: two patients.
    assert values(oru(pid3=pid3))[0]["patient_uuid"] == str(
        patient_uuid_for(authority=authority, identifier=identifier)
    )
    assert adt("A01", "C1", pid3=pid3).code == "AA"
    assert list(Patient.objects.values_list("mrn", "mrn_authority")) == [(identifier, authority)]


def test_a_structured_numeric_equal_to_a_number_is_that_number() -> None:
    # SN comparator "=" (HL7 v2 2.A.72: ">" "<" ">=" "<=" "=" "<>") is the value itself; the
    # others are not one value and stay refused.
    # A range "^72^-^80" was read as 72.
    outcome = oru(
        f"OBX|1|SN|{HR}|1|=^72|bpm|||||F",
        f"OBX|2|SN|{HR}|2|>^300|bpm|||||F|||20261203101600+0100",
        f"OBX|3|SN|{HR}|3|^72^-^80|bpm|||||F|||20261203101700+0100",
    )

    assert [v["pulse"] for v in values(outcome)] == [72]
    assert outcome.errors == [
        Hl7Error("102", "OBX-5 '>^300' is not a number", "OBX", 2, 5),
        Hl7Error("102", "OBX-5 '^72^-^80' is not a number", "OBX", 3, 5),
    ]


def test_an_admission_names_a_patient_the_gateway_had_named_by_their_mrn(unit) -> None:
    # Monitors often send PID-3 alone: their readings, before the ADT, made "MRN MRN1". The
    # A01's PID-5 is the first real name: taken (audited), not left to an A08 that may never come.
    assert values(oru(name=""))[0]["patient_name"] == "MRN MRN1"

    assert adt("A01", "C1").code == "AA"

    assert list(Patient.objects.values_list("name", flat=True)) == ["Ann Smith"]
    pcd01.known_clear()
    assert values(oru(name=""))[0]["patient_name"] == "Ann Smith"


def test_a_renamed_patients_nameless_readings_carry_the_new_name(unit, monkeypatch) -> None:
    # The gateway kept the name of a patient it had seen for ever: after an A08 (or a
    # clinician's rename), each reading without PID-5 carried the old name, and the consumer
    # recorded a name conflict the clinicians had just resolved.
    assert values(oru())[0]["patient_name"] == "Ann Smith"
    assert adt("A01", "C1").code == "AA"
    assert adt("A08", "C2", name="Smith^Anne").code == "AA"

    assert values(oru(name=""))[0]["patient_name"] == "Anne Smith"  # the same process

    Patient.objects.update(name="Anna Smith")  # elsewhere: the web's rename
    assert values(oru(name=""))[0]["patient_name"] == "Anne Smith"  # up to a minute
    later = time.monotonic() + pcd01.PATIENT_KNOWN_FOR_S + 1
    monkeypatch.setattr(pcd01, "time", SimpleNamespace(monotonic=lambda: later))
    assert values(oru(name=""))[0]["patient_name"] == "Anna Smith"


def test_errors_listed_are_bounded_the_rest_counted(monkeypatch) -> None:
    # 15,000 bad OBX in a 1 MiB message made a 1.5 MB ACK of 15,000 ERR segments, and as
    # long a WARNING log line: the first ERRORS_LISTED are listed, the others counted.
    from gateway import dispatch

    monkeypatch.setattr(dispatch, "close_old_connections", lambda: None)
    obx = [f"OBX|{n}|NM|{HR}|1|abc|bpm|||||F" for n in range(1, 1002)]
    text = "\r".join(
        [
            "MSH|^~\\&|MON||||20261203101500+0100||ORU^R01^ORU_R01|M1|P|2.6",
            "PID|||MRN1^^^HOSP^MR||Smith^Ann",
            *obx,
        ]
    )

    outcome = dispatch.message_handle(text=text, received_at=RECEIVED).outcome

    assert outcome.code == "AE"
    assert outcome.errors[-1] == Hl7Error("102", "OBX-5 'abc' is not a number", "OBX", 100, 5)
    assert len(outcome.errors) == dispatch.ERRORS_LISTED == 100
    assert outcome.counts["errors_not_listed"] == 901


def test_two_messages_in_one_frame_are_refused_not_merged(monkeypatch) -> None:
    # A frame holding two ORU^R01 (an engine's batch without BHS, a sender's bug): the second
    # one's observations, found by their bed or device, went to the first one's patient.
    from gateway import dispatch

    monkeypatch.setattr(dispatch, "close_old_connections", lambda: None)
    msh = "MSH|^~\\&|MON||||20261203101500+0100||ORU^R01^ORU_R01|{}|P|2.6"
    text = "\r".join(
        [
            msh.format("M1"),
            "PID|||MRN1^^^HOSP^MR||Smith^Ann",
            f"OBX|1|NM|{HR}|1|80|bpm|||||F",
            msh.format("M2"),
            "PV1||I|icu-a^^A2",
            f"OBX|1|NM|{HR}|1|140|bpm|||||F",
        ]
    )

    outcome = dispatch.message_handle(text=text, received_at=RECEIVED).outcome

    assert (outcome.code, outcome.messages) == ("AR", [])
    assert outcome.errors == [Hl7Error("100", "one message per MLLP frame: a second MSH", "MSH", 2)]


@pytest.mark.parametrize(
    ("name", "why"),
    [
        (
            "\u200b^\u200b",
            "'patient_name' has zero-width character U+200B: no zero-width characters",
        ),
        ("Smith\u202e^Ann", "'patient_name' has bidi control U+202E: no bidi controls"),
        ("S" * 150 + "^" + "A" * 60, "'patient_name' must be 1-200 characters, got 211"),
    ],
)
def test_an_a08_with_a_name_that_is_not_one_says_so(unit, name, why) -> None:
    # An AA changing nothing left the interface engineer believing the rename was done.
    assert adt("A01", "C1").code == "AA"

    outcome = adt("A08", "C2", name=name)

    assert (outcome.code, outcome.errors) == (
        "AA",
        [Hl7Error("102", f"PID-5: not renamed: {why}", "PID", 1, 5, severity="W")],
    )
    assert Patient.objects.get().name == "Ann Smith"


def test_the_devices_one_message_names_are_bounded(unit) -> None:
    # OBX-18 is the device of each observation: a bedside set is a handful. 5,000 distinct
    # EUI-64s in one 440 KB message were 5,000 Device rows, one transaction each (2 s of a
    # worker on SQLite), all "at" the bed; a message without PID or bed, one query each.
    obx = [f"OBX|{n}|NM|{HR}|1|80|bpm|||||F|||||||{n:016X}^^^EUI-64" for n in range(1, 41)]
    text = "\r".join(
        [
            "MSH|^~\\&|MON||||20261203101500+0100||ORU^R01^ORU_R01|M1|P|2.6",
            "PID|||MRN1^^^HOSP^MR||Smith^Ann",
            "PV1||I|icu-a^^A1",
            *obx,
        ]
    )

    outcome = oru_handle(message_parse(text), received_at=RECEIVED)

    assert (outcome.code, outcome.counts["devices_ignored"]) == ("AA", 40 - pcd01.DEVICES_MAX)
    assert list(Device.objects.values_list("eui64", flat=True)) == [
        f"{n:016X}" for n in range(1, pcd01.DEVICES_MAX + 1)
    ]


def test_many_pid3_repetitions_are_read_once() -> None:
    # Each repetition of PID-3 split the whole field again: 100,000 empty ones (200 KB) were
    # minutes of a worker, a 1 MiB message most of an hour.
    started = time.monotonic()

    outcome = oru(pid3="~" * 100_000 + "MRN1^^^HOSP^MR")

    assert time.monotonic() - started < 5  # ~10 ms read once
    assert values(outcome)[0]["patient_uuid"] == str(
        patient_uuid_for(authority="HOSP", identifier="MRN1")
    )
