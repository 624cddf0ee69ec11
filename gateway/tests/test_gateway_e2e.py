"""The device gateway end to end: HL7 v2 messages in the shapes vendors' gateways send, sent by
real HL7 clients (python-hl7's `mllp_send` command, and a message written with hl7apy) to the
real `run_hl7_gateway` process, through the real broker (Tansu) and the real consumer, read
back from the API: every value, the patient's MRN, the admission the ADT made.

`transactional_db`: the child processes must see the unit the test makes, and the test the
rows they write."""

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings
from hl7.client import MLLPClient
from hl7apy.core import Message

from gateway.identity import patient_uuid_for
from testing.broker import KafkaTopics
from testing.database import database_url
from testing.devservers import free_port
from testing.processes import json_lines, start_manage, wait_for_log
from units.models import Admission, Bed, Unit

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PROFILE = "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"
MMHG, BPM, PCT = (
    "266016^MDC_DIM_MMHG^MDC",
    "264864^MDC_DIM_BEAT_PER_MIN^MDC",
    "262688^MDC_DIM_PERCENT^MDC",
)
NOW = datetime.now(tz=UTC).replace(microsecond=0)
ANNA = patient_uuid_for(authority="CITYHOSP", identifier="MRN-1001")
KITTY = patient_uuid_for(authority="GEHOSP", identifier="HED12")
PETER = patient_uuid_for(authority="Philips", identifier="12345")


def hl7_time(at: datetime, offset_hours: int = 0) -> str:
    """An HL7 DTM at `at`, written in the zone `offset_hours` east of UTC with its offset."""
    local = at.astimezone(UTC) + timedelta(hours=offset_hours)
    sign = "+" if offset_hours >= 0 else "-"
    return local.strftime("%Y%m%d%H%M%S") + f"{sign}{abs(offset_hours):02d}00"


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def messages() -> list[str]:
    """What a hospital's systems send, one message a string (segments joined by CR)."""
    t1, t2, t3 = NOW - timedelta(minutes=3), NOW - timedelta(minutes=2), NOW - timedelta(minutes=1)
    adt = [
        f"MSH|^~\\&|ADT|CITYHOSP|ICU|CITYHOSP|{hl7_time(t1)}||ADT^A01^ADT_A01|ADT-1|P|2.5",
        f"EVN|A01|{hl7_time(t1)}",
        "PID|||MRN-1001^^^CITYHOSP^MR||Smith^Anna",
        "PV1||I|ICU^^2",
    ]
    # Mindray eGateway's shape: its EUI-64 in MSH-3, cuff pressures, OBX-14 in local time (+01).
    mindray = [
        "MSH|^~\\&|MINDRAY_EGATEWAY^00A037EB0C0F5CB8^EUI-64||||"
        f"{hl7_time(t1, 1)}||ORU^R01^ORU_R01|MR-1|P|2.6|||AL|NE||UNICODE UTF-8|||{PROFILE}",
        "PID|||MRN-1001^^^CITYHOSP^MR||Smith^Anna^^^^^L",
        "PV1||I|^^",
        f"OBR|1|MR-1^MINDRAY_EGATEWAY||182777000^monitoring of patient^SCT|||{hl7_time(t1, 1)}",
        f"OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.1|82|{BPM}|||||F|||{hl7_time(t1, 1)}",
        f"OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.2|96|{PCT}|||||F|||{hl7_time(t1, 1)}",
        "OBX|3|NM|151562^MDC_RESP_RATE^MDC|1.1.1.3|18|264928^MDC_DIM_RESP_PER_MIN^MDC|||||F|||"
        f"{hl7_time(t1, 1)}",
        f"OBX|4|NM|150301^MDC_PRESS_CUFF_SYS^MDC|1.1.1.4|128|{MMHG}|||||F|||{hl7_time(t1, 1)}",
        f"OBX|5|NM|150302^MDC_PRESS_CUFF_DIA^MDC|1.1.1.5|78|{MMHG}|||||F|||{hl7_time(t1, 1)}",
        f"OBX|6|NM|150303^MDC_PRESS_CUFF_MEAN^MDC|1.1.1.6|95|{MMHG}|||||F|||{hl7_time(t1, 1)}",
        # Fahrenheit: 98.6 °F is 37.0 °C.
        f"OBX|7|NM|150344^MDC_TEMP^MDC|1.1.1.7|98.6|266560^MDC_DIM_FAHR^MDC|||||F|||"
        f"{hl7_time(t1, 1)}",
    ]
    # GE CARESCAPE Gateway's shape: containment rows, the device in OBX-18, NIBP measured a
    # minute before the rest (two readings), EtCO2 in kPa (5.0 kPa is 37.5 mmHg: 38).
    dev = "080019FFFE0B4020^B1X5_GE"
    ge = [
        f"MSH|^~\\&|VSP^080019FFFE0B4020^EUI-64||||{hl7_time(t3)}||ORU^R01^ORU_R01|GE-77|P|2.6"
        f"|||AL|NE|||||{PROFILE}",
        "PID|||HED12^^^GEHOSP^MR||Lazy^Kitty^^^^^L",
        "PV1||I|ICU^^3",
        f"OBR|1|GE-77^VSP^080019FFFE0B4020^EUI-64||182777000^monitoring of patient^SCT|||"
        f"{hl7_time(t3)}",
        "OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X",
        "OBX|2||69798^MDC_DEV_ECG_VMD^MDC|1.5.0.0|||||||X",
        f"OBX|3|NM|147842^MDC_ECG_HEART_RATE^MDC|1.5.1.1|68|{BPM}|||||R|||{hl7_time(t3)}||||{dev}",
        f"OBX|4|NM|151708^MDC_AWAY_CO2_ET^MDC|1.6.1.1|5.0|265987^MDC_DIM_KILO_PASCAL^MDC|||||R|||"
        f"{hl7_time(t3)}||||{dev}",
        f"OBX|5|NM|150021^MDC_PRESS_BLD_NONINV_SYS^MDC|1.1.1.1|121|{MMHG}|||||R|||"
        f"{hl7_time(t2)}||||{dev}",
        f"OBX|6|NM|150022^MDC_PRESS_BLD_NONINV_DIA^MDC|1.1.1.2|71|{MMHG}|||||R|||"
        f"{hl7_time(t2)}||||{dev}",
        # NaN (IEEE 11073 special value): SpO2 not measured, never a number.
        f"OBX|7|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.3.1.1|8388607|{PCT}|||||R|||"
        f"{hl7_time(t3)}||||{dev}",
    ]
    # No PID: the readings go to the patient admitted in the bed of PV1-3 (Anna, by the ADT).
    by_bed = [
        f"MSH|^~\\&|MON^00A037EB0C0F5CB9^EUI-64||||{hl7_time(t2)}||ORU^R01^ORU_R01|BED-1|P|2.6",
        "PV1||I|ICU^^2",
        f"OBR|1|BED-1||182777000^monitoring of patient^SCT|||{hl7_time(t2)}",
        f"OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.1|90|{BPM}|||||F|||{hl7_time(t2)}",
    ]
    # Nobody: no PID, no bed, an unknown device: AE, nothing delivered.
    nobody = [
        f"MSH|^~\\&|MON^00A037EB0C0F5CBA^EUI-64||||{hl7_time(t2)}||ORU^R01^ORU_R01|NOBODY|P|2.6",
        f"OBR|1|NOBODY||182777000^monitoring of patient^SCT|||{hl7_time(t2)}",
        f"OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.1|90|{BPM}|||||F|||{hl7_time(t2)}",
    ]
    return ["\r".join(m) for m in (adt, mindray, ge, by_bed, nobody)]


def hl7apy_message() -> str:
    """Philips' shape written with hl7apy (a second HL7 implementation): the time in OBR-7
    with milliseconds and -0400, no OBX-14."""
    message = Message("ORU_R01", version="2.6")
    message.msh.msh_3 = "PIC iX^0009FBFFFF9B42B3^EUI-64"
    message.msh.msh_4 = "Philips"
    message.msh.msh_7 = hl7_time(NOW - timedelta(minutes=1), -4)
    message.msh.msh_9 = "ORU^R01^ORU_R01"
    message.msh.msh_10 = "HP-1"
    message.msh.msh_11 = "P"
    message.msh.msh_21 = PROFILE
    group = message.add_group("ORU_R01_PATIENT_RESULT")
    group.add_group("ORU_R01_PATIENT").pid.pid_3 = "12345^^^Philips^MR"
    group.oru_r01_patient.pid.pid_5 = "Pan^Peter"
    observation = group.add_group("ORU_R01_ORDER_OBSERVATION")
    observation.obr.obr_1 = "1"
    observation.obr.obr_4 = "182777000^monitoring of patient^SCT"
    at = (NOW - timedelta(minutes=1)).astimezone(UTC) - timedelta(hours=4)
    observation.obr.obr_7 = at.strftime("%Y%m%d%H%M%S") + ".250-0400"
    for n, (code, value, unit) in enumerate(
        [
            ("149530^MDC_PULS_OXIM_PULS_RATE^MDC", "77", BPM),
            ("150456^MDC_PULS_OXIM_SAT_O2^MDC", "94", PCT),
        ],
        start=1,
    ):
        obx = observation.add_group("ORU_R01_OBSERVATION").obx
        obx.obx_1, obx.obx_2, obx.obx_3, obx.obx_5, obx.obx_6, obx.obx_11 = (
            str(n),
            "NM",
            code,
            value,
            unit,
            "F",
        )
    return message.to_er7()


def acks(output: str) -> list[tuple[str, str]]:
    """(MSA-1, MSA-2) of each ACK `mllp_send` printed."""
    return [
        tuple(line.split("|")[1:3])
        for line in output.replace("\x1c", "\r").replace("\x0b", "").replace("\n", "\r").split("\r")
        if line.startswith("MSA|")
    ]


def signs_of(body: dict) -> tuple:
    return tuple(
        body[k] for k in ("pulse", "resp_rate", "bp", "map", "spo2", "temperature", "etco2")
    )


def test_vendor_messages_through_the_real_gateway_broker_and_consumer_to_the_api(
    kafka: KafkaTopics, api_client, tmp_path: Path
):
    icu = Unit.objects.create(code="icu", name="Intensive care")
    for position in (1, 2, 3):
        Bed.objects.create(unit=icu, label=str(position), position=position)
    env = {"DATABASE_URL": database_url(), "HL7_DEFAULT_TIMEZONE": "UTC", **kafka.env()}
    port, log = free_port(), tmp_path / "gateway.log"
    gateway = start_manage("run_hl7_gateway", "--port", str(port), log=log, **env)
    try:
        wait_for_log(log, "HL7 gateway listening", gateway, timeout=30)
        # python-hl7's own client, as a hospital's integration engineer would try it first.
        batch = tmp_path / "messages.hl7"
        batch.write_text("\n".join(m.replace("\r", "\n") for m in messages()) + "\n")
        sent = subprocess.run(
            [Path(sys.executable).with_name("mllp_send"), "--loose", "--file", batch,
             "--port", str(port), "127.0.0.1"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        with MLLPClient("127.0.0.1", port) as client:
            philips_ack = client.send_message(hl7apy_message()).decode()
    finally:
        gateway.terminate()
        assert gateway.wait(timeout=20) == 0, log.read_text()

    assert acks(sent.stdout) == [
        ("AA", "ADT-1"),
        ("AA", "MR-1"),
        ("AA", "GE-77"),
        ("AA", "BED-1"),
        ("AE", "NOBODY"),
    ], sent.stdout
    assert "\rMSA|AA|HP-1" in philips_ack.replace("\n", "\r"), philips_ack
    lines = json_lines(log.read_text())
    # An AE is logged as a warning with its errors (an AA only at DEBUG: thousands a second).
    [refused] = [line for line in lines if line["message"] == "HL7 message answered"]
    assert (refused["control_id"], refused["ack"], refused["level"]) == ("NOBODY", "AE", "WARNING")
    [stopped] = [line for line in lines if line["message"] == "HL7 gateway stopped"]
    assert stopped["messages"] == {"ADT^A01 AA": 1, "ORU^R01 AA": 4, "ORU^R01 AE": 1}

    consumer_log = tmp_path / "consumer.log"
    consumer = start_manage(
        "consume_vitals", "--exit-on-idle", "1", "--batch-timeout", "0.1", log=consumer_log, **env
    )
    assert consumer.wait(timeout=60) == 0, consumer_log.read_text()

    # The ADT admitted Anna to bed 2; her MRN finds her.
    [admission] = Admission.objects.filter(discharged_at__isnull=True)
    assert (admission.patient.uuid, admission.bed.label) == (ANNA, "2")
    found = api_client.get(f"/{settings.API_PREFIX}patients/", {"mrn": "MRN-1001"}).json()
    [anna] = found["results"]
    assert (anna["uuid"], anna["name"], anna["mrn"], anna["mrn_authority"]) == (
        str(ANNA), "Anna Smith", "MRN-1001", "CITYHOSP",
    )  # fmt: skip

    def readings(uuid) -> list[tuple]:
        url = f"/{settings.API_PREFIX}patients/{uuid}/metrics/"
        body = api_client.get(url, {"ordering": "measured_at"}).json()
        return sorted((r["measured_at"], *signs_of(r)) for r in body["results"])

    t1, t2, t3 = NOW - timedelta(minutes=3), NOW - timedelta(minutes=2), NOW - timedelta(minutes=1)
    assert readings(ANNA) == [
        # Mindray: heart rate from the ECG, cuff pressures, 98.6 °F as 37.0 °C.
        (iso(t1), 82, 18, "128/78", 95, 96, 37.0, None),
        # No PID, bed 2: Anna's.
        (iso(t2), 90, None, None, None, None, None, None),
    ]
    assert readings(KITTY) == [
        # NIBP a minute earlier: its own reading (MAP computed from it).
        (iso(t2), None, None, "121/71", 88, None, None, None),
        # SpO2's NaN left out; EtCO2 5.0 kPa as 38 mmHg.
        (iso(t3), 68, None, None, None, None, None, 38),
    ]
    # Philips, by hl7apy: OBR-7 at -04:00 with milliseconds; the oximeter's pulse rate.
    peter_at = (NOW - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S.250000Z")
    assert readings(PETER) == [(peter_at, 77, None, None, None, 94, None, None)]
