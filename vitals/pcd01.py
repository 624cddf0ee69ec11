"""A reading as an IHE PCD-01 message (HL7 v2.6 ORU^R01), as a bedside monitor's gateway sends
it: what `run_patient --via-hl7` sends to the device gateway (gateway/pcd01.py reads it back to
the same reading).

The shape follows the public PCD-01 examples of the Mindray, GE and Philips gateways (IHE PCD
TF-2): MSH-21 the IHE PCD-01 profile, PID-3 the patient, PV1-3 the bed when known, one OBR
("monitoring of patient"), the containment rows (MDS, then a VMD and a channel for ECG, NIBP
and temperature: no value, status X) and one OBX per sign measured with its registry code
(vitals/signs.py, the first MDC code of each sign), its MDC_DIM unit, OBX-14 the time with its
offset (UTC, milliseconds), OBX-18 the device's EUI-64.

An emulated patient's PID-3 is their uuid, assigned by the authority "ICU-EMULATOR": the
gateway then uses that uuid as it is, so a patient is the same one through the gateway or
straight to Kafka. What PCD-01 does not carry is not sent: on oxygen, consciousness (not
device observations) and the artefact flag (a SpO2 with the probe off is simply not sent).
"""

import uuid
from datetime import UTC, datetime

from core.hl7_text import hl7_escape, hl7_timestamp
from vitals.contract import Reading
from vitals.signs import SIGN_BY_KEY

EMULATOR_AUTHORITY = "ICU-EMULATOR"
# IHE PCD TF-2: MSH-21 of a PCD-01 message (as in the vendors' published examples).
PCD01_PROFILE = "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"
# MDC_DIM codes (IEEE 11073-10101 partition 4, from 262144; see gateway/pcd01.py).
UNIT_OF_SIGN = {
    "pulse": "264864^MDC_DIM_BEAT_PER_MIN^MDC",
    "resp_rate": "264928^MDC_DIM_RESP_PER_MIN^MDC",
    "systolic": "266016^MDC_DIM_MMHG^MDC",
    "diastolic": "266016^MDC_DIM_MMHG^MDC",
    "map": "266016^MDC_DIM_MMHG^MDC",
    "spo2": "262688^MDC_DIM_PERCENT^MDC",
    "temperature": "268192^MDC_DIM_DEGC^MDC",
    "etco2": "266016^MDC_DIM_MMHG^MDC",
}
# Containment (OBX-4 "MDS.VMD.channel.metric"): codes as the public PCD-01 examples of the
# GE and Mindray gateways send them: 69965 MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS, 69798
# MDC_DEV_ECG_VMD, 70686/70687 MDC_DEV_PRESS_BLD_NONINV_VMD/_CHAN, 69902/69903
# MDC_DEV_METER_TEMP_VMD/_CHAN. Signs without a VMD row here go under their own index.
MDS = "69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC"
CONTAINERS = {
    # sign -> (vmd index, vmd code, channel code or "")
    "pulse": (1, "69798^MDC_DEV_ECG_VMD^MDC", ""),
    "resp_rate": (1, "69798^MDC_DEV_ECG_VMD^MDC", ""),
    "systolic": (
        2,
        "70686^MDC_DEV_PRESS_BLD_NONINV_VMD^MDC",
        "70687^MDC_DEV_PRESS_BLD_NONINV_CHAN^MDC",
    ),
    "diastolic": (
        2,
        "70686^MDC_DEV_PRESS_BLD_NONINV_VMD^MDC",
        "70687^MDC_DEV_PRESS_BLD_NONINV_CHAN^MDC",
    ),
    "map": (2, "70686^MDC_DEV_PRESS_BLD_NONINV_VMD^MDC", "70687^MDC_DEV_PRESS_BLD_NONINV_CHAN^MDC"),
    "spo2": (3, "", ""),
    "temperature": (4, "69902^MDC_DEV_METER_TEMP_VMD^MDC", "69903^MDC_DEV_METER_TEMP_CHAN^MDC"),
    "etco2": (5, "", ""),
}


def hl7_time(when: datetime) -> str:
    """YYYYMMDDHHMMSS.SSS+0000: UTC, milliseconds."""
    return hl7_timestamp(when.astimezone(UTC))


def device_eui64_for(patient_uuid: uuid.UUID) -> str:
    """The EUI-64 of an emulated patient's monitor: stable, from their uuid."""
    return patient_uuid.hex[:16].upper()


def _value(key: str, value: float) -> str:
    sign = SIGN_BY_KEY[key]
    return f"{value:.{sign.decimals}f}"


def reading_to_oru(
    reading: Reading,
    *,
    control_id: str,
    location: tuple[str, str] | None = None,
    eui64: str | None = None,
    sent_at: datetime | None = None,
) -> str:
    """One PCD-01 ORU^R01 (segments separated by CR) with the reading's measured signs.

    `location`: (unit code, bed label) for PV1-3, if known; `eui64`: the monitor's (default:
    from the patient's uuid); `sent_at`: MSH-7 (default: the reading's time)."""
    eui = eui64 or device_eui64_for(reading.patient_uuid)
    stamp = hl7_time(reading.measured_at)
    given, _, family = reading.patient_name.partition(" ")
    if not family:
        given, family = "", given
    segments = [
        f"MSH|^~\\&|ICU_MONITOR_EMULATOR^{eui}^EUI-64||||{hl7_time(sent_at or reading.measured_at)}"
        f"||ORU^R01^ORU_R01|{hl7_escape(control_id)}|P|2.6|||AL|NE||UNICODE UTF-8|||"
        f"{PCD01_PROFILE}",
        f"PID|||{reading.patient_uuid}^^^{EMULATOR_AUTHORITY}^PI||"
        f"{hl7_escape(family)}^{hl7_escape(given)}^^^^^L",
        "PV1||I|" + (f"{hl7_escape(location[0])}^^{hl7_escape(location[1])}" if location else ""),
        f"OBR|1|{hl7_escape(control_id)}^ICU_MONITOR_EMULATOR^{eui}^EUI-64||"
        f"182777000^monitoring of patient^SCT|||{stamp}",
    ]
    rows = [f"||{MDS}|1.0.0.0|||||||X"]
    signs = reading.signs
    if reading.systolic is None or reading.diastolic is None:
        signs["systolic"] = signs["diastolic"] = None
    if reading.artefact == "spo2_probe_off":
        signs["spo2"] = None
    opened: set[str] = set()
    for key, value in signs.items():
        if value is None:
            continue
        vmd, vmd_code, channel_code = CONTAINERS[key]
        if vmd_code and f"{vmd}" not in opened:
            opened.add(f"{vmd}")
            rows.append(f"||{vmd_code}|1.{vmd}.0.0|||||||X")
        if channel_code and f"{vmd}.1" not in opened:
            opened.add(f"{vmd}.1")
            rows.append(f"||{channel_code}|1.{vmd}.1.0|||||||X")
        code = SIGN_BY_KEY[key].mdc[0]
        rows.append(
            f"|NM|{code.code}^{code.display}^MDC|1.{vmd}.1.{code.code}|{_value(key, value)}|"
            f"{UNIT_OF_SIGN[key]}|||||R|||{stamp}||||{eui}^^{eui}^EUI-64"
        )
    segments += [f"OBX|{n}{row}" for n, row in enumerate(rows, start=1)]
    return "\r".join(segments) + "\r"
