"""PCD-01 (ORU^R01) in: gateway/pcd01.py's oru_handle on messages written in the shapes of
public vendor examples (not copies), and the emulator's encoder (vitals/pcd01.py) read back.

Each vendor shape keeps what makes it different: Mindray's eGateway sends the EUI-64 in MSH-3,
the cuff pressures 150301-150303 and MDC_TEMP 150344 with OBX-14 offsets; GE's CARESCAPE
Gateway the containment rows (MDS, VMD, channel with status X) and the device in OBX-18;
Philips' IntelliVue Information Center several PID-3 repetitions, the time in OBR-7 with
fractions of a second and no OBX-14."""

import json
import socket
import uuid
from datetime import UTC, datetime, timedelta

import hl7
import pytest
from django.core.management import CommandError, call_command
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.mllp import frame_encode
from gateway import pcd01
from gateway.er7 import message_parse
from gateway.identity import patient_uuid_for
from gateway.models import Device
from gateway.outcome import Hl7Error
from gateway.pcd01 import oru_handle
from patients.models import Patient
from patients.tests.factories import PatientFactory
from testing.mllp import MllpReceiver
from units.models import Admission, Bed, Unit
from vitals.contract import Reading, reading_parse, reading_to_message
from vitals.emulation import Hl7Emitter
from vitals.emulator import PatientEmulator, patient_uuid_for_name
from vitals.models import AuditEvent
from vitals.pcd01 import reading_to_oru

pytestmark = pytest.mark.django_db

RECEIVED = datetime(2026, 12, 3, 9, 20, tzinfo=UTC)
PROFILE = "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"


@pytest.fixture(autouse=True)
def _fresh_caches():
    pcd01.known_clear()
    yield
    pcd01.known_clear()


@pytest.fixture
def icu() -> Unit:
    unit = Unit.objects.create(code="icu-a", name="ICU A")
    for position in (1, 2):
        Bed.objects.create(unit=unit, label=f"A{position}", position=position)
    return unit


def parse(*segments: str) -> hl7.Message:
    return message_parse("\r".join(segments))


def handle(*segments: str):
    return oru_handle(parse(*segments), received_at=RECEIVED)


def values(outcome) -> list[dict]:
    return [json.loads(value) for _, value in outcome.messages]


def mindray(*obx: str, pid: str = "PID|||MRN-1001^^^CITYHOSP^MR||Smith^Anna^^^^^L") -> list[str]:
    return [
        "MSH|^~\\&|MINDRAY_EGATEWAY^00A037EB0C0F5CB8^EUI-64||||20261203101500+0100||"
        f"ORU^R01^ORU_R01|1203|P|2.6|||AL|NE||UNICODE UTF-8|||{PROFILE}",
        pid,
        "PV1||I|^^",
        "OBR|1|1203^MINDRAY_EGATEWAY^00A037EB0C0F5CB8^EUI-64||182777000^monitoring of "
        "patient^SCT|||20261203101500+0100",
        *obx,
    ]


def nm(n: int, code: str, value: str, unit: str, time: str = "20261203101500+0100", status="F"):
    return f"OBX|{n}|NM|{code}|1.1.1.{n}|{value}|{unit}|||||{status}|||{time}"


HR = "147842^MDC_ECG_HEART_RATE^MDC"
PR_OXIM = "149530^MDC_PULS_OXIM_PULS_RATE^MDC"
RR = "151562^MDC_RESP_RATE^MDC"
SPO2 = "150456^MDC_PULS_OXIM_SAT_O2^MDC"
CUFF_SYS, CUFF_DIA, CUFF_MEAN = (
    "150301^MDC_PRESS_CUFF_SYS^MDC",
    "150302^MDC_PRESS_CUFF_DIA^MDC",
    "150303^MDC_PRESS_CUFF_MEAN^MDC",
)
TEMP = "150344^MDC_TEMP^MDC"
ETCO2 = "151708^MDC_AWAY_CO2_ET^MDC"
BPM, RPM, PCT = (
    "264864^MDC_DIM_BEAT_PER_MIN^MDC",
    "264928^MDC_DIM_RESP_PER_MIN^MDC",
    "262688^MDC_DIM_PERCENT^MDC",
)
MMHG, KPA = "266016^MDC_DIM_MMHG^MDC", "265987^MDC_DIM_KILO_PASCAL^MDC"
DEGC, DEGF = "268192^MDC_DIM_DEGC^MDC", "266560^MDC_DIM_FAHR^MDC"

ANNA = patient_uuid_for(authority="CITYHOSP", identifier="MRN-1001")


def header(patient_uuid=ANNA, name="Anna Smith", timestamp="2026-12-03T09:15:00.000+00:00"):
    return {
        "schema_version": 2,
        "patient_uuid": str(patient_uuid),
        "patient_name": name,
        "timestamp": timestamp,
        "on_oxygen": False,
        "consciousness": "A",
    }


def test_mindray_shape_one_reading_every_sign_ecg_heart_rate_preferred() -> None:
    outcome = handle(
        *mindray(
            nm(1, PR_OXIM, "80", BPM),
            nm(2, HR, "82", BPM),
            nm(3, SPO2, "96", PCT),
            nm(4, RR, "18", RPM),
            nm(5, CUFF_SYS, "128", MMHG),
            nm(6, CUFF_MEAN, "95", MMHG),
            nm(7, CUFF_DIA, "78", MMHG),
            nm(8, TEMP, "37.2", DEGC),
            nm(9, ETCO2, "38", MMHG),
        )
    )

    assert (outcome.code, outcome.errors) == ("AA", [])
    assert [key for key, _ in outcome.messages] == [str(ANNA).encode()]
    assert values(outcome) == [
        header()
        | {
            "pulse": 82,
            "resp_rate": 18,
            "bp": "128/78",
            "map": 95,
            "spo2": 96,
            "temperature": 37.2,
            "etco2": 38,
        }
    ]
    assert outcome.counts == {"readings": 1}
    patient = Patient.objects.get(uuid=ANNA)
    assert (patient.name, patient.mrn, patient.mrn_authority) == (
        "Anna Smith",
        "MRN-1001",
        "CITYHOSP",
    )


def test_ge_shape_containment_rows_skipped_device_in_obx18_several_times() -> None:
    """GE: MDS/VMD/channel rows (no value, status X), NIBP measured earlier than the rest: two
    readings, in time order."""
    dev = "080019FFFE0B4020^B1X5_GE"
    outcome = handle(
        "MSH|^~\\&|VSP^080019FFFE0B4020^EUI-64||||20261203091600||ORU^R01^ORU_R01|77|P|2.6"
        f"|||AL|NE|||||{PROFILE}",
        "PID|||HED12^^^GEHOSP^MR||Lazy^Kitty^^^^^L",
        "PV1||I|ICU^^79874",
        "OBR|1|77^VSP^080019FFFE0B4020^EUI-64||182777000^monitoring of patient^SCT|||"
        "20261203091600",
        "OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X",
        "OBX|2||69798^MDC_DEV_ECG_VMD^MDC|1.5.0.0|||||||X",
        f"OBX|3|NM|{HR}|1.5.1.1|68|{BPM}|||||R|||20261203091500+0000||||{dev}",
        "OBX|4||70686^MDC_DEV_PRESS_BLD_NONINV_VMD^MDC|1.1.0.0|||||||X",
        "OBX|5||70687^MDC_DEV_PRESS_BLD_NONINV_CHAN^MDC|1.1.1.0|||||||X",
        f"OBX|6|NM|150021^MDC_PRESS_BLD_NONINV_SYS^MDC|1.1.1.1|121|{MMHG}|||||R|||"
        f"20261203090200+0000||||{dev}",
        f"OBX|7|NM|150022^MDC_PRESS_BLD_NONINV_DIA^MDC|1.1.1.2|71|{MMHG}|||||R|||"
        f"20261203090200+0000||||{dev}",
        f"OBX|8|NM|150023^MDC_PRESS_BLD_NONINV_MEAN^MDC|1.1.1.3|88|{MMHG}|||||R|||"
        f"20261203090200+0000||||{dev}",
        "OBX|9||69902^MDC_DEV_METER_TEMP_VMD^MDC|1.26.0.0|||||||X",
        "OBX|10||69903^MDC_DEV_METER_TEMP_CHAN^MDC|1.26.1.0|||||||X",
        f"OBX|11|NM|{TEMP}|1.26.1.1|36.8|{DEGC}|||||R|||20261203091500+0000||||{dev}",
    )

    kitty = patient_uuid_for(authority="GEHOSP", identifier="HED12")
    assert (outcome.code, outcome.errors) == ("AA", [])
    assert values(outcome) == [
        header(kitty, "Kitty Lazy", "2026-12-03T09:02:00.000+00:00") | {"bp": "121/71", "map": 88},
        header(kitty, "Kitty Lazy") | {"pulse": 68, "temperature": 36.8},
    ]
    assert outcome.counts == {"containment_rows": 6, "readings": 2}


def test_philips_shape_time_from_obr7_with_fraction_and_offset() -> None:
    """Philips: PID-3 repeats (an HL7 null "" first, then MR), PID-5 with nulls, OBR-7 with
    milliseconds and -0400, no OBX-14."""
    outcome = handle(
        "MSH|^~\\&|PIC iX^0009FBFFFF9B42B3^EUI-64|Philips|||20261203051500.496-0400||"
        f"ORU^R01^ORU_R01|HP1203|P|2.6|||AL|NE||8859/1|EN^English^ISO639||{PROFILE}",
        'PID|1||""~12345^^^Philips^MR~6789^^^Philips^VN||LastName^""^""^^^^L||19710108|U',
        "PV1|2|I|My Unit^^Bed1",
        "OBR|1||0009FBFFFF9B42B3^^^EUI-64|69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|||"
        "20261203051459.872-0400",
        "OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X",
        f"OBX|2|NM|{HR}|1.2.1.147842|91|{BPM}|||||R",
        f"OBX|3|NM|151578^MDC_TTHOR_RESP_RATE^MDC|1.2.1.151578|22|{RPM}|||||R",
        f"OBX|4|NM|{SPO2}|1.3.1.150456|93|{PCT}|||||R",
    )

    patient = patient_uuid_for(authority="Philips", identifier="12345")
    assert (outcome.code, outcome.errors) == ("AA", [])
    assert values(outcome) == [
        header(patient, "LastName", "2026-12-03T09:14:59.872+00:00")
        | {"pulse": 91, "resp_rate": 22, "spo2": 93}
    ]


def test_comen_shape_empty_set_ids_reference_ranges_unit_by_name_vendor_codes() -> None:
    """Comen / Mindray spot-check shape: OBX-1 empty, OBX-7 reference ranges, the unit named in
    OBX-6.2 only, a vendor's own code (99MNDRY), an SN value, +0800; a temperature probe that
    reads 0.0 is out of the contract's range: AE naming it, the rest delivered."""
    outcome = handle(
        "MSH|^~\\&|COMEN_CMS^00A0370098006640^EUI-64||||20261203171500+0800||ORU^R01^ORU_R01|"
        f"31|P|2.6|||AL|NE||UNICODE UTF-8|||{PROFILE}",
        "PID|||2eefgghy^^^Hospital^PI||TEST^SR T3ST^^^^^L||19891023|M",
        "PV1||I|INTER^^1^1",
        "OBR||||2^MON_SPOT_DATA^99COMEN|||20261203171500+0800",
        f"OBX||NM|{CUFF_SYS}|1.1.9.150301|120|{MMHG}|90^160||||F|||20261203171331+0800",
        f"OBX||NM|{CUFF_MEAN}|1.1.9.150303|90|{MMHG}|60^110||||F|||20261203171331+0800",
        f"OBX||NM|{CUFF_DIA}|1.1.9.150302|80|{MMHG}|50^90||||F|||20261203171331+0800",
        f"OBX||SN|{SPO2}|1.3.1.150456|^98|{PCT}|90^100||||F|||20261203171331+0800",
        "OBX||NM|153^MNDRY_PRESS_PULSE_VARIATION^99MNDRY||12|262688^MDC_DIM_PERCENT^MDC",
        f"OBX||NM|{TEMP}|1.2.1.150344|0.0|^MDC_DIM_DEGC|36.0^39.0||||F|||20261203171331+0800",
    )

    patient = patient_uuid_for(authority="Hospital", identifier="2eefgghy")
    assert outcome.code == "AE"
    assert outcome.errors == [
        Hl7Error("102", "out_of_range: 'temperature' 0.0 is outside 25.0-45.0", "OBX", 6, 5)
    ]
    assert values(outcome) == [
        header(patient, "SR T3ST TEST", "2026-12-03T09:13:31.000+00:00")
        | {"bp": "120/80", "map": 90, "spo2": 98}
    ]
    assert outcome.counts == {"observations_not_charted": 1, "signs_refused": 1, "readings": 1}


def test_loinc_coded_ucum_units_msh7_without_offset_in_the_default_zone(settings) -> None:
    settings.HL7_DEFAULT_TIMEZONE = "Europe/Berlin"  # UTC+1 in December
    outcome = handle(
        "MSH|^~\\&|COMEN^^||||20261203101000||ORU^R01|9|P|2.5",
        "PID|||7788^^^^MR||Doe^John",
        "OBX|1|NM|8867-4^Heart rate^LN||76|/min|||||F",
        "OBX|2|NM|9279-1^Respiratory rate^LN||14|/min|||||F",
        "OBX|3|NM|8480-6^Systolic blood pressure^LN||118|mm[Hg]|||||F",
        "OBX|4|NM|8462-4^Diastolic blood pressure^LN||76|mm[Hg]|||||F",
        "OBX|5|NM|59408-5^SpO2^LN||98|%|||||F",
        "OBX|6|NM|8310-5^Body temperature^LN||36.9|Cel|||||F",
    )

    assert (outcome.code, outcome.errors) == ("AA", [])
    assert values(outcome) == [
        header(
            patient_uuid_for(authority="", identifier="7788"),
            "John Doe",
            "2026-12-03T09:10:00.000+00:00",
        )
        | {"pulse": 76, "resp_rate": 14, "bp": "118/76", "spo2": 98, "temperature": 36.9}
    ]


def test_readings_of_both_passes_of_a_fall_back_hour_are_sent_apart_in_the_order_measured(
    settings,
) -> None:
    """Received at 02:00:30 of the second pass (01:00:30 UTC), one message
    holds 02:59:50 of the first pass (00:59:50 UTC) and 02:00:20 of the second (01:00:20
    UTC): two readings, the earlier first (the engine judges in the order received), not
    one merged nor the later first (found by review: times of one zone compare and hash by
    their wall clock, fold ignored)."""
    settings.HL7_DEFAULT_TIMEZONE = "Europe/Berlin"
    outcome = oru_handle(
        parse(
            "MSH|^~\\&|COMEN^^||||20261025020030||ORU^R01|9|P|2.5",
            "PID|||7788^^^^MR||Doe^John",
            "OBX|1|NM|8867-4^Heart rate^LN||76|/min|||||F|||20261025025950",
            "OBX|2|NM|8867-4^Heart rate^LN||0|/min|||||F|||20261025020020",
        ),
        received_at=datetime(2026, 10, 25, 1, 0, 30, tzinfo=UTC),
    )

    assert [(v["timestamp"], v["pulse"]) for v in values(outcome)] == [
        ("2026-10-25T00:59:50.000+00:00", 76),
        ("2026-10-25T01:00:20.000+00:00", 0),
    ]


def test_fahrenheit_and_kilopascal_converted() -> None:
    outcome = handle(
        *mindray(
            nm(1, TEMP, "100.4", DEGF),
            nm(2, CUFF_SYS, "16.0", KPA),  # 120.0 mmHg
            nm(3, CUFF_DIA, "10.7", KPA),  # 80.3
            nm(4, ETCO2, "5.3", "kPa^kPa^UCUM"),  # 39.8
            nm(5, "188424^MDC_TEMP_ORAL^MDC", "98.6", "[degF]^degF^UCUM"),  # a less preferred site
        )
    )

    assert (outcome.code, outcome.errors) == ("AA", [])
    assert values(outcome) == [header() | {"temperature": 38.0, "bp": "120/80", "etco2": 40}]


def test_a_unit_that_does_not_fit_the_sign_leaves_it_missing_and_counted() -> None:
    outcome = handle(
        *mindray(
            nm(1, HR, "72", MMHG),  # a pressure unit for a rate
            nm(2, SPO2, "97", DEGC),
            nm(3, TEMP, "37.0", ""),  # no unit: Celsius or Fahrenheit? not taken
            nm(4, CUFF_SYS, "120", ""),  # mmHg or kPa? not taken
            nm(5, CUFF_DIA, "80", "furlongs"),
            nm(6, RR, "16", ""),  # no unit: a rate is per minute
            nm(7, PR_OXIM, "70", ""),
        )
    )

    assert values(outcome) == [header() | {"resp_rate": 16, "pulse": 70}]
    assert outcome.counts == {"signs_skipped_unit": 5, "readings": 1}


def test_special_values_sentinels_and_statuses_are_missing_never_numbers() -> None:
    outcome = handle(
        *mindray(
            nm(1, HR, "8388607", BPM),  # NaN
            nm(2, PR_OXIM, "8388608", BPM),  # NRes
            nm(3, SPO2, "8388606", PCT),  # +INF
            nm(4, RR, "8388610", RPM),  # -INF
            nm(5, TEMP, "8388609", DEGC),  # reserved
            nm(6, ETCO2, "-100", MMHG),  # Mindray's "no value"
            nm(7, "149546^MDC_PULS_RATE_NON_INV^MDC", "77", BPM, status="X"),
            nm(8, "151578^MDC_TTHOR_RESP_RATE^MDC", "19", RPM, status="W"),
            nm(9, "150364^MDC_TEMP_BODY^MDC", "36.6", DEGC, status="D"),
            nm(10, "151658^MDC_PULS_OXIM_PLETH_RESP_RATE^MDC", "17", RPM, status="R"),
        )
    )

    assert (outcome.code, outcome.errors) == ("AA", [])
    assert values(outcome) == [header() | {"resp_rate": 17}]
    assert outcome.counts == {
        "signs_skipped_special_value": 5,
        "signs_skipped_sentinel": 1,
        "signs_skipped_status": 3,
        "readings": 1,
    }


def test_out_of_range_is_ae_naming_the_obx_the_rest_is_delivered() -> None:
    outcome = handle(
        *mindray(
            nm(1, HR, "400", BPM),
            nm(2, SPO2, "95", PCT),
            nm(3, CUFF_SYS, "70", MMHG),
            nm(4, CUFF_DIA, "90", MMHG),  # diastolic above systolic
            nm(5, RR, "abc", RPM),
        )
    )

    assert outcome.code == "AE"
    assert outcome.errors == [
        Hl7Error("102", "OBX-5 'abc' is not a number", "OBX", 5, 5),
        Hl7Error("102", "implausible: 'bp' 70/90: systolic must be above diastolic", "OBX", 3, 5),
        Hl7Error("102", "implausible: 'bp' 70/90: systolic must be above diastolic", "OBX", 4, 5),
        Hl7Error("102", "out_of_range: 'pulse' 400 is outside 0-300", "OBX", 1, 5),
    ]
    assert values(outcome) == [header() | {"spo2": 95}]
    assert outcome.counts == {"signs_skipped_not_numeric": 1, "signs_refused": 3, "readings": 1}


def test_a_reading_in_the_future_is_refused_naming_its_time_field() -> None:
    outcome = handle(*mindray(nm(1, HR, "80", BPM, time="20261203103000+0000")))

    assert outcome.code == "AE"
    assert [(e.code, e.segment, e.sequence, e.field) for e in outcome.errors] == [
        ("102", "OBX", 1, 14)
    ]
    assert outcome.errors[0].text.startswith("timestamp_in_future: ")
    assert outcome.messages == []


def test_no_pid_goes_to_the_admission_of_the_bed_in_pv1_and_learns_the_device(icu) -> None:
    patient = PatientFactory(name="Bea Bed")
    Admission.objects.create(
        patient=patient, bed=icu.beds.get(label="A2"), admitted_at=RECEIVED - timedelta(hours=1)
    )
    segments = mindray(nm(1, SPO2, "94", PCT), pid="PID|||")
    segments[2] = "PV1||I|icu-a^^A2"

    outcome = handle(*segments)

    assert values(outcome) == [header(patient.uuid, "Bea Bed") | {"spo2": 94}]
    device = Device.objects.get()
    assert (device.eui64, device.bed.label, device.last_seen_at) == (
        "00A037EB0C0F5CB8",
        "A2",
        RECEIVED,
    )


def test_no_pid_no_bed_a_known_device_goes_to_its_beds_admission(icu) -> None:
    patient = PatientFactory(name="Dev Ice")
    bed = icu.beds.get(label="A1")
    Admission.objects.create(patient=patient, bed=bed, admitted_at=RECEIVED - timedelta(hours=1))
    Device.objects.create(eui64="0012340000000001", bed=bed)

    outcome = handle(
        "MSH|^~\\&|GW||||20261203091500+0000||ORU^R01^ORU_R01|5|P|2.6",
        f"OBX|1|NM|{HR}|1.1.1.1|64|{BPM}|||||R|||||||0012340000000001^^^EUI-64",
    )

    assert values(outcome) == [header(patient.uuid, "Dev Ice") | {"pulse": 64}]


def test_a_device_named_at_two_beds_within_minutes_serves_several_and_finds_no_one(icu) -> None:
    """A central gateway's EUI-64 in MSH-3 (Mindray's eGateway puts its own there) is not a
    bedside monitor's: named at A1 then A2, it is never used to find a patient."""
    for bed in ("A1", "A2"):
        segments = mindray(nm(1, HR, "80", BPM))
        segments[2] = f"PV1||I|icu-a^^{bed}"
        handle(*segments)
    PatientFactory(name="Bea Bed").admissions.create(
        bed=icu.beds.get(label="A2"), admitted_at=RECEIVED - timedelta(hours=1)
    )

    outcome = handle(*mindray(nm(1, HR, "80", BPM), pid="PID|||"))

    device = Device.objects.get()
    assert (device.eui64, device.bed, device.several_beds) == ("00A037EB0C0F5CB8", None, True)
    assert [e.code for e in outcome.errors] == ["101"]


def test_no_pid_no_bed_no_known_device_is_ae_on_pid3(icu) -> None:
    outcome = handle(*mindray(nm(1, HR, "80", BPM), pid="PID|||^^^^MR"))

    assert outcome.code == "AE"
    assert [(e.code, e.segment, e.sequence, e.field) for e in outcome.errors] == [
        ("101", "PID", 1, 3)
    ]
    assert (outcome.messages, outcome.counts) == ([], {"no_patient": 1})


def test_a_second_patient_in_one_message_is_ae_and_nothing_is_delivered() -> None:
    segments = mindray(nm(1, HR, "80", BPM))
    outcome = handle(*segments, "PID|||MRN-2^^^CITYHOSP^MR||Other^Olga", nm(2, HR, "90", BPM))

    assert outcome.code == "AE"
    assert outcome.errors == [Hl7Error("100", "one patient per message: a second PID", "PID", 2)]
    assert (outcome.messages, outcome.counts["several_patients"]) == ([], 1)


def test_a_known_patient_bed_and_device_cost_no_query_a_missing_name_reads_as_stored(
    icu, django_assert_num_queries
) -> None:
    first = mindray(nm(1, HR, "80", BPM))
    first[2] = "PV1||I|icu-a^^A1"
    handle(*first)
    again = mindray(nm(1, HR, "81", BPM), pid="PID|||MRN-1001^^^CITYHOSP^MR")
    again[2] = "PV1||I|icu-a^^A1"

    with django_assert_num_queries(0):
        outcome = handle(*again)

    assert values(outcome) == [header() | {"pulse": 81}]
    assert Device.objects.get().bed.label == "A1"


def test_a_patient_who_had_the_mrn_already_gets_the_readings_whatever_their_uuid() -> None:
    earlier = PatientFactory(name="Anna Smith-Early", mrn="MRN-1001", mrn_authority="CITYHOSP")

    outcome = handle(*mindray(nm(1, HR, "80", BPM), pid="PID|||MRN-1001^^^CITYHOSP^MR"))

    assert values(outcome) == [header(earlier.uuid, "Anna Smith-Early") | {"pulse": 80}]
    assert Patient.objects.count() == 1


def test_a_new_patient_without_a_name_is_named_by_their_mrn() -> None:
    outcome = handle(*mindray(nm(1, HR, "80", BPM), pid="PID|||4711^^^CITYHOSP^MR||"))

    assert values(outcome)[0]["patient_name"] == "MRN 4711"


def test_the_mrn_a_monitors_message_gives_is_audited_with_the_message_and_its_device() -> None:
    """PID-3 gives the patient their MRN: who gave it (the message, its sending device) and
    what it was before is on the audit trail, which the ward's push reads; once only."""
    handle(*mindray(nm(1, HR, "80", BPM)))
    pcd01.known_clear()
    handle(*mindray(nm(1, HR, "81", BPM)))

    patient = Patient.objects.get()
    assert list(
        AuditEvent.objects.values_list(
            "action", "username", "user", "object_id", "patient_uuid", "before", "after"
        )
    ) == [
        (
            "patient.identify",
            "HL7 ORU R01 1203 from 00A037EB0C0F5CB8",
            None,
            str(patient.pk),
            patient.uuid,
            {"mrn": "", "mrn_authority": ""},
            {"mrn": "MRN-1001", "mrn_authority": "CITYHOSP"},
        )
    ]


# The encoder: the emulator's readings through PCD-01 and back.


def _emulated(seed: int, *, ventilated: bool, artefacts: bool) -> list[Reading]:
    name = "Zoë O'Brien-Ünal"
    emulator = PatientEmulator.create(
        name=name,
        patient_uuid=patient_uuid_for_name(name),
        scenario="sepsis",
        seed=seed,
        ventilated=ventilated,
        artefacts=artefacts,
        schema_version=2,
        nibp_every=60,
        temperature_every=120,
    )
    start = datetime(2026, 12, 3, 9, 0, 0, 123000, tzinfo=UTC)
    return [emulator.reading(start + timedelta(seconds=30 * i), 30.0) for i in range(12)]


def _without_what_pcd01_does_not_carry(value: bytes) -> dict:
    body = json.loads(value)
    body.pop("artefact", None)
    return body | {"on_oxygen": False, "consciousness": "A"}


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 10_000), ventilated=st.booleans(), artefacts=st.booleans())
def test_the_emulators_readings_read_back_the_same_through_pcd01(seed, ventilated, artefacts):
    for n, reading in enumerate(_emulated(seed, ventilated=ventilated, artefacts=artefacts)):
        text = reading_to_oru(reading, control_id=f"c{n}", location=("icu-z", "9"))
        outcome = oru_handle(message_parse(text), received_at=reading.measured_at)
        key, value = reading_to_message(reading)

        assert (outcome.code, outcome.errors) == ("AA", [])
        assert [k for k, _ in outcome.messages] == [key]
        assert json.loads(outcome.messages[0][1]) == _without_what_pcd01_does_not_carry(value)
        reading_parse(key=key, value=outcome.messages[0][1], now=reading.measured_at)


def test_the_encoders_message_in_full() -> None:
    patient = uuid.UUID("eab845ea-2399-46c1-abde-f1006a79ef0e")
    reading = Reading(
        patient_uuid=patient,
        patient_name="Anna | Smith",
        measured_at=datetime(2026, 12, 3, 9, 15, 0, 250000, tzinfo=UTC),
        pulse=82,
        resp_rate=None,
        systolic=120,
        diastolic=80,
        spo2=97,
        temperature=None,
        schema_version=2,
    )

    text = reading_to_oru(reading, control_id="42", location=("icu-a", "A1"))

    eui = "EAB845EA239946C1"
    stamp = "20261203091500.250+0000"
    device = f"{eui}^^{eui}^EUI-64"
    assert text.split("\r") == [
        f"MSH|^~\\&|ICU_MONITOR_EMULATOR^{eui}^EUI-64||||{stamp}||ORU^R01^ORU_R01|42|P|2.6|||AL"
        f"|NE||UNICODE UTF-8|||{PROFILE}",
        f"PID|||{patient}^^^ICU-EMULATOR^PI||\\F\\ Smith^Anna^^^^^L",
        "PV1||I|icu-a^^A1",
        f"OBR|1|42^ICU_MONITOR_EMULATOR^{eui}^EUI-64||182777000^monitoring of patient^SCT|||"
        f"{stamp}",
        "OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X",
        "OBX|2||69798^MDC_DEV_ECG_VMD^MDC|1.1.0.0|||||||X",
        f"OBX|3|NM|{HR}|1.1.1.147842|82|{BPM}|||||R|||{stamp}||||{device}",
        "OBX|4||70686^MDC_DEV_PRESS_BLD_NONINV_VMD^MDC|1.2.0.0|||||||X",
        "OBX|5||70687^MDC_DEV_PRESS_BLD_NONINV_CHAN^MDC|1.2.1.0|||||||X",
        f"OBX|6|NM|150021^MDC_PRESS_BLD_NONINV_SYS^MDC|1.2.1.150021|120|{MMHG}|||||R|||{stamp}"
        f"||||{device}",
        f"OBX|7|NM|150022^MDC_PRESS_BLD_NONINV_DIA^MDC|1.2.1.150022|80|{MMHG}|||||R|||{stamp}"
        f"||||{device}",
        f"OBX|8|NM|{SPO2}|1.3.1.150456|97|{PCT}|||||R|||{stamp}||||{device}",
        "",
    ]
    outcome = oru_handle(message_parse(text), received_at=RECEIVED)
    assert values(outcome) == [
        header(patient, "Anna | Smith", "2026-12-03T09:15:00.250+00:00")
        | {"pulse": 82, "bp": "120/80", "spo2": 97}
    ]


def test_the_encoders_message_is_a_valid_oru_r01_to_a_second_hl7_implementation() -> None:
    """hl7apy, strict: the structure (groups, segment order, cardinalities) and the data types
    of HL7 v2.6 ORU^R01."""
    reading = _emulated(3, ventilated=True, artefacts=False)[0]

    message = parse_message(
        reading_to_oru(reading, control_id="7", location=("icu-a", "A1")),
        validation_level=VALIDATION_LEVEL.STRICT,
        find_groups=True,
    )

    assert message.validate()
    assert message.msh.msh_21.value == PROFILE
    result = message.oru_r01_patient_result
    assert result.oru_r01_patient.pid.pid_3.value == f"{reading.patient_uuid}^^^ICU-EMULATOR^PI"


# run_patient --via-hl7 against a tiny MLLP receiver (the real gateway: the lead's end to end).


class FakeGateway(MllpReceiver):
    """Accepts MLLP connections on 127.0.0.1, keeps each message, and acknowledges it: AA, or
    what `answers` says for its control id."""

    def __init__(self, port: int = 0, answers: dict[str, str] | None = None) -> None:
        self.answers = answers or {}
        self.messages: list[str] = []
        super().__init__(port=port)

    def reply(self, conn: socket.socket, payload: bytes) -> bool:
        text = payload.decode()
        self.messages.append(text)
        control_id = text.split("\r")[0].split("|")[9]
        code = self.answers.get(control_id, "AA")
        ack = (
            f"MSH|^~\\&|GW||||20261203||ACK^R01^ACK|A{control_id}|P|2.6\rMSA|{code}|{control_id}\r"
        )
        if code != "AA":
            ack += "ERR||OBX^1^5|102^Data type error^HL70357|E\r"
        conn.sendall(frame_encode(ack))
        return True


@pytest.fixture
def gateway():
    fake = FakeGateway(answers={"EMU2": "AE"})
    yield fake
    fake.stop()


def test_run_patient_via_hl7_sends_pcd01_and_counts_what_was_not_acknowledged(gateway) -> None:
    with pytest.raises(CommandError, match=r"^1 reading\(s\) were not delivered to hl7://"):
        call_command(
            "run_patient",
            "--name",
            "bob",
            "--count",
            "3",
            "--interval",
            "0",
            "--via-hl7",
            f"127.0.0.1:{gateway.port}",
        )

    assert [m.split("\r")[0].split("|")[9] for m in gateway.messages] == ["EMU1", "EMU2", "EMU3"]
    bob = patient_uuid_for_name("bob")
    outcomes = [
        oru_handle(message_parse(m), received_at=datetime.now(tz=UTC)) for m in gateway.messages
    ]
    assert [o.code for o in outcomes] == ["AA", "AA", "AA"]
    assert {key for o in outcomes for key, _ in o.messages} == {str(bob).encode()}
    assert [json.loads(o.messages[0][1])["patient_name"] for o in outcomes] == ["bob"] * 3


def test_the_hl7_emitter_backs_off_while_the_gateway_is_down_then_reconnects() -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    emitter = Hl7Emitter(target=("127.0.0.1", port), log_each=False, timeout=1.0)
    reading = _emulated(1, ventilated=False, artefacts=False)[0]

    emitter.emit(reading)  # refused
    emitter.emit(reading)  # within the backoff: not even tried

    assert (emitter.failed, emitter.sent, emitter.backoff) == (2, 1, 0.5)
    fake = FakeGateway(port=port)
    try:
        emitter.retry_at = 0.0  # the backoff is over
        emitter.emit(reading)
        emitter.emit(reading)
    finally:
        emitter.close()
        fake.stop()
    assert (emitter.delivered, emitter.failed, emitter.backoff) == (2, 2, 0.0)
    assert len(fake.messages) == 2


def test_via_hl7_must_be_host_and_port() -> None:
    with pytest.raises(CommandError, match=r"--via-hl7 must be HOST:PORT"):
        call_command("run_patient", "--name", "bob", "--via-hl7", "localhost")


FUZZ_BASE = "\r".join(
    mindray(
        nm(1, HR, "82", BPM, time="20261203091500"),
        "OBX|2|SN|150456^MDC_PULS_OXIM_SAT_O2^MDC||^96|%",
        f"OBX|3|NM|{TEMP}|1.2.1|37.1|{DEGC}|||||F||||||||0012340000000001^EUI-64",
    )
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.lists(
        st.tuples(
            st.integers(20, len(FUZZ_BASE)),
            st.text("|^~\\&0123456789.+-XWDF abc\r", max_size=4) | st.just("9" * 400),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_any_edit_of_a_message_gives_an_outcome_never_an_exception(edits) -> None:
    """The gateway's own fuzzing (the lead's and A's cover the framing): whatever a field
    holds, oru_handle answers AA or AE; each message it gives passes the contract."""
    text = FUZZ_BASE
    for position, inserted in edits:
        text = text[:position] + inserted + text[position:]
    pcd01.known_clear()

    outcome = oru_handle(message_parse(text), received_at=RECEIVED)

    assert outcome.code in ("AA", "AE")
    for key, value in outcome.messages:
        reading_parse(key=key, value=value, now=RECEIVED)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20261203101500.1234+0130", "2026-12-03T08:45:00.123+00:00"),
        ("20261203101500-0500", "2026-12-03T15:15:00.000+00:00"),
        ("20261203101500250+0000", "2026-12-03T10:15:00.250+00:00"),  # Mindray: no dot
        ("202612031015", "2026-12-03T09:15:00.000+00:00"),  # Europe/Berlin: UTC+1
        ("2026120310", "2026-12-03T09:00:00.000+00:00"),
    ],
)
def test_hl7_times_with_their_offsets_or_the_default_zone(text, expected, settings) -> None:
    settings.HL7_DEFAULT_TIMEZONE = "Europe/Berlin"

    when = pcd01.hl7_time_parse(text, received_at=datetime(2026, 12, 3, 10, 15, tzinfo=UTC))

    assert when.astimezone(UTC).isoformat(timespec="milliseconds") == expected


@pytest.mark.parametrize(
    ("text", "received", "expected"),
    [
        # 02:30 twice on 2026-10-25 (CEST, then CET): the occurrence nearest the receipt.
        ("20261025023000", "2026-10-25T00:30:02+00:00", "2026-10-25T00:30:00.000+00:00"),
        ("20261025023000", "2026-10-25T01:30:02+00:00", "2026-10-25T01:30:00.000+00:00"),
        ("20261025023000", "2026-10-26T12:00:00+00:00", "2026-10-25T01:30:00.000+00:00"),
        # 02:30 skipped on 2026-03-29 (CET -> CEST): the reading of it nearest the receipt.
        ("20260329023000", "2026-03-29T00:30:02+00:00", "2026-03-29T00:30:00.000+00:00"),
        ("20260329023000", "2026-03-29T01:30:02+00:00", "2026-03-29T01:30:00.000+00:00"),
        # An offset given: the receipt changes nothing.
        ("20261025023000+0200", "2026-10-25T01:30:02+00:00", "2026-10-25T00:30:00.000+00:00"),
    ],
)
def test_an_hl7_time_the_zone_s_clock_change_makes_ambiguous_is_the_one_nearest_receipt(
    text, received, expected, settings
) -> None:
    settings.HL7_DEFAULT_TIMEZONE = "Europe/Berlin"

    when = pcd01.hl7_time_parse(text, received_at=datetime.fromisoformat(received))

    assert when.astimezone(UTC).isoformat(timespec="milliseconds") == expected


@pytest.mark.parametrize(
    "text", ["", "2026-12-03", "20261303101500", "20261203101500+2400", "20261203 101500"]
)
def test_what_is_not_an_hl7_time(text) -> None:
    with pytest.raises(ValueError, match=r"^not an HL7 time"):
        pcd01.hl7_time_parse(text, received_at=datetime(2026, 12, 3, 10, 15, tzinfo=UTC))


def test_a_device_is_registered_in_the_admin_by_its_eui64(admin_client, icu) -> None:
    bed = icu.beds.get(label="A2")

    refused = admin_client.post(
        "/admin/gateway/device/add/", {"eui64": "00a037eb0c0f5cb8", "bed": bed.pk}
    )
    added = admin_client.post(
        "/admin/gateway/device/add/", {"eui64": "00A037EB0C0F5CB8", "bed": bed.pk}
    )

    assert refused.status_code == 200  # the form again: lower case is not how it is stored
    assert added.status_code == 302
    assert list(Device.objects.values_list("eui64", "bed__label")) == [("00A037EB0C0F5CB8", "A2")]
    assert "00A037EB0C0F5CB8" in admin_client.get("/admin/gateway/device/").content.decode()
