"""IHE PCD-01 "Communicate PCD Data" (HL7 v2 ORU^R01) to version 2 readings.

One ORU^R01 from a bedside monitor's gateway (Mindray eGateway, GE CARESCAPE Gateway, Philips
IntelliVue Information Center, Comen, Draeger, Nihon Kohden: IHE PCD TF-2 3.1) becomes one
reading per distinct observation time, each produced to the vitals topic keyed by the
patient's uuid, exactly as the emulator produces them: the consumer, alarms, API and ward need
nothing new. What each field gives (docs/connecting-monitors.md, "Mapping"):

- the patient: PID-3's first identifier (PID-3.1, its assigning authority PID-3.4), named from
  PID-5 ("Given Family"); without PID-3, the current admission of the bed in PV1-3, else of the
  bed a known device (the EUI-64 in MSH-3 or OBX-18) stands at; neither: AE (ERR PID-3, 101).
- the signs: OBX-3 by MDC code (or LOINC) through the signs registry, the registry's order of
  a sign's codes being the preference (ECG heart rate before the oximeter's pulse rate);
  containment rows (MDS, VMD, channel: no value) and codes we do not chart are skipped;
- the unit: OBX-6 by MDC_DIM code or name, or UCUM; converted to ours (kPa to mmHg, degrees
  Fahrenheit to Celsius); a unit that does not fit the sign: the sign is missing (counted);
- not values: IEEE 11073 FLOAT special values, vendors' sentinels, OBX-11 status X, W or D:
  the sign is missing (counted), never a number;
- the time: OBX-14, else OBR-7, else MSH-7, with its offset; none: HL7_DEFAULT_TIMEZONE.

Each reading is checked by the consumer's own parser (vitals.contract.reading_parse): what it
refuses (a value out of the contract's range, a time in the future) is left out and named in
an ERR (AE); the message's other readings are still delivered. Re-sending the message is then
harmless: the consumer skips a reading it already stored (same patient and time, same values).
"""

import logging
import math
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import hl7
from django.conf import settings

from gateway.identity import IdentifierRefused, Location, identifier_check, location_parse
from gateway.outcome import Hl7Error, Outcome
from gateway.selectors import (
    admission_open_get_by_bed,
    bed_get_by_location,
    device_get,
    patient_get_by_identifier,
)
from gateway.services import device_learn
from vitals.contract import Reading, patient_name_parse, reading_parse, reading_to_message
from vitals.errors import InvalidReading
from vitals.services import patient_identify
from vitals.signs import SIGNS

logger = logging.getLogger("gateway.pcd01")


# (coding system, code) -> (sign key, rank): the registry's codes of each sign, MDC before
# LOINC, in the registry's order of preference (the lower rank is preferred).
SIGN_CODES: dict[tuple[str, str], tuple[str, int]] = {}
for _sign in SIGNS:
    for _rank, _code in enumerate(_sign.mdc + _sign.loinc):
        SIGN_CODES[(_code.system, _code.code)] = (_sign.key, _rank)
_SIGN_OF_NAME = {
    code.display.upper(): (sign.key, rank) for sign in SIGNS for rank, code in enumerate(sign.mdc)
}

# Units (OBX-6: id ^ text ^ coding system). MDC_DIM codes are partition 4 (dimensions, from
# 262144) plus the term code of IEEE 11073-10101 (checked against IEEE 11073-20601 agents'
# nomenclature headers, e.g. MDC_DIM_PERCENT 544, MDC_DIM_BEAT_PER_MIN 2720,
# MDC_DIM_RESP_PER_MIN 2784, MDC_DIM_KILO_PASCAL 3843, MDC_DIM_MMHG 3872, MDC_DIM_FAHR 4416,
# MDC_DIM_DEGC 6048); UCUM codes as https://ucum.org writes them, and the texts gateways send.
KPA_TO_MMHG = 1000 / 133.322387415  # 1 mmHg = 133.322387415 Pa (UCUM's definition)


@dataclass(frozen=True)
class UnitKind:
    kind: str  # "beats_per_min", "breaths_per_min", "per_min", "mmHg", "percent", "degC"
    to_ours: Callable[[float], float] = lambda value: value


_PER_MIN = UnitKind("per_min")
_BEATS = UnitKind("beats_per_min")
_BREATHS = UnitKind("breaths_per_min")
_MMHG = UnitKind("mmHg")
_KPA = UnitKind("mmHg", lambda value: value * KPA_TO_MMHG)
_PERCENT = UnitKind("percent")
_DEGC = UnitKind("degC")
_DEGF = UnitKind("degC", lambda value: (value - 32) * 5 / 9)
UNITS: dict[str, UnitKind] = {
    # MDC codes and reference ids
    "264864": _BEATS,
    "MDC_DIM_BEAT_PER_MIN": _BEATS,
    "264928": _BREATHS,
    "MDC_DIM_RESP_PER_MIN": _BREATHS,
    "266016": _MMHG,
    "MDC_DIM_MMHG": _MMHG,
    "265987": _KPA,
    "MDC_DIM_KILO_PASCAL": _KPA,
    "262688": _PERCENT,
    "MDC_DIM_PERCENT": _PERCENT,
    "268192": _DEGC,
    "MDC_DIM_DEGC": _DEGC,
    "266560": _DEGF,
    "MDC_DIM_FAHR": _DEGF,
    # UCUM and common texts
    "/min": _PER_MIN,
    "1/min": _PER_MIN,
    "{beat}/min": _BEATS,
    "{beats}/min": _BEATS,
    "bpm": _BEATS,
    "{breath}/min": _BREATHS,
    "{breaths}/min": _BREATHS,
    "{resp}/min": _BREATHS,
    "rpm": _BREATHS,
    "brpm": _BREATHS,
    "mm[Hg]": _MMHG,
    "mmHg": _MMHG,
    "kPa": _KPA,
    "%": _PERCENT,
    "Cel": _DEGC,
    "°C": _DEGC,
    "degC": _DEGC,
    "[degF]": _DEGF,
    "°F": _DEGF,
    "degF": _DEGF,
}
# The units each sign accepts, and whether a value without a unit is taken (only where one
# unit is in use: rates per minute, SpO2 in %; never a pressure (mmHg or kPa) or a
# temperature (Celsius or Fahrenheit)).
SIGN_UNITS: dict[str, tuple[frozenset[str], bool]] = {
    "pulse": (frozenset({"beats_per_min", "per_min"}), True),
    "resp_rate": (frozenset({"breaths_per_min", "per_min"}), True),
    "systolic": (frozenset({"mmHg"}), False),
    "diastolic": (frozenset({"mmHg"}), False),
    "map": (frozenset({"mmHg"}), False),
    "spo2": (frozenset({"percent"}), True),
    "temperature": (frozenset({"degC"}), False),
    "etco2": (frozenset({"mmHg"}), False),
}

# IEEE 11073-20601 FLOAT-Type special values (24-bit mantissa, exponent 0): NaN 0x7FFFFF,
# NRes 0x800000, +INFINITY 0x7FFFFE, -INFINITY 0x800002, reserved 0x800001.
SPECIAL_VALUES = frozenset({8388607.0, 8388608.0, 8388606.0, 8388610.0, 8388609.0})
# Vendors' "no value" sentinels, as public PCD-01 examples show them: -100 (Mindray and Comen
# gateways, e.g. an oximeter's pulse rate with the probe off), -999 and -10000. No sign we
# chart can be negative, so none of them can hide a real value.
SENTINELS = frozenset({-100.0, -999.0, -10000.0})
# OBX-11 (HL7 table 0085): X results cannot be obtained, W wrong (withdrawn), D delete.
NOT_A_RESULT_STATUSES = frozenset({"X", "W", "D"})

_NUMBER_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)", re.ASCII)
_EUI64_RE = re.compile(r"[0-9A-Fa-f]{16}")
_TIME_REASONS = frozenset({"invalid_timestamp", "timestamp_in_future", "timestamp_too_old"})

# Patients already identified in this process: (authority, identifier) -> their uuid and
# stored name, and when looked up (monotonic): a steady stream of readings neither writes nor
# reads per message. Bounded. The name is read again after PATIENT_KNOWN_FOR_S (a rename in
# the web or in another gateway process), at once after this process's ADT renamed them
# (known_patient_forget): a reading without PID-5 carries it, and a stale one would be
# recorded by the consumer as a name conflict.
_KNOWN_PATIENTS: dict[tuple[str, str], tuple["_Patient", float]] = {}
PATIENT_KNOWN_FOR_S = 60.0
# EUI-64 -> (bed id or _SEVERAL_BEDS, last written): a device's last_seen_at is written once a
# minute at most.
_KNOWN_DEVICES: dict[str, tuple[int, datetime]] = {}
_SEVERAL_BEDS = -1
# Beds by location (PV1-3) -> (bed id or None, when looked up, monotonic): beds are seldom
# added or renamed; a minute's delay for a new one is fine. Not the admissions: a transfer or
# discharge takes effect at the next message.
_KNOWN_BEDS: dict[Location, tuple[int | None, float]] = {}
KNOWN_MAX = 100_000
# The devices (EUI-64s in MSH-3 and OBX-18) one message may teach or be found by: a bedside set
# (monitor, pumps, ventilator) is a handful; the others are counted (`devices_ignored`), not
# each a Device row and a transaction.
DEVICES_MAX = 16
DEVICE_SEEN_EVERY = timedelta(minutes=1)
BED_KNOWN_FOR_S = 60.0


def known_patient_forget(*, authority: str, identifier: str) -> None:
    """Read this patient again at their next message (the ADT renamed them)."""
    _KNOWN_PATIENTS.pop((authority, identifier), None)


def known_clear() -> None:
    """Forget the patients and devices cached (tests; a database reset)."""
    _KNOWN_PATIENTS.clear()
    _KNOWN_DEVICES.clear()
    _KNOWN_BEDS.clear()


class _Fields:
    """A segment's fields as text, split by the message's own separators; each field turned to
    text once, when asked for (python-hl7's containers rebuild their text at every str(), and
    a whole segment's text costs tens of microseconds)."""

    def __init__(self, message: hl7.Message, segment: hl7.Segment) -> None:
        self.message = message
        self.segment = segment
        separators = message.separators  # segment, field, repetition, component, sub
        self.rep, self.comp, self.sub = separators[2], separators[3], separators[4]
        self.name = str(segment[0]) if len(segment) else ""
        self._texts: dict[int, str] = {}

    def text(self, n: int) -> str:
        """Field n (MSH-n too: python-hl7 keeps MSH-1, the field separator, at index 1)."""
        text = self._texts.get(n)
        if text is None:
            text = self._texts[n] = str(self.segment[n]) if n < len(self.segment) else ""
        return text

    def components(self, n: int) -> list[str]:
        """The first repetition's components."""
        return self._components_of(self.text(n).split(self.rep, 1)[0])

    def repetitions(self, n: int) -> Iterator[list[str]]:
        """Each repetition's components, the field split once (a field of 100,000 repetitions
        read with components(n, i) was split 100,000 times)."""
        for repetition in self.text(n).split(self.rep):
            yield self._components_of(repetition)

    def _components_of(self, repetition: str) -> list[str]:
        # Each component's first subcomponent; HL7's explicit null "" is no value here.
        return [
            "" if (first := c.split(self.sub)[0]) == '""' else first
            for c in repetition.split(self.comp)
        ]

    def component(self, n: int, c: int) -> str:
        comps = self.components(n)
        return comps[c - 1].strip() if len(comps) >= c else ""


@dataclass
class _Observation:
    sign: str
    rank: int
    value: float
    sequence: int  # which OBX, from 1
    time_field: tuple[str, int, int]  # (segment, sequence, field) that gave the time


@dataclass
class _Message:
    """What the handler gathers from one ORU^R01 before building its readings."""

    errors: list[Hl7Error] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    # measured_at -> sign -> the preferred observation
    by_time: dict[datetime, dict[str, _Observation]] = field(default_factory=dict)
    devices: list[str] = field(default_factory=list)


# HL7 DTM: YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]. The dot before the fraction may be
# missing: Mindray's gateways send MSH-7 as YYYYMMDDHHMMSSsss.
_DTM_RE = re.compile(
    r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.?(\d{1,4}))?)?)?)?)?)?"
    r"(?:([+-])(\d{2})(\d{2}))?",
    re.ASCII,
)


def hl7_time_parse(text: str, *, received_at: datetime) -> datetime:
    """An HL7 DTM as an aware datetime, to the millisecond (the contract's precision: two
    times closer than that are one reading); no offset: HL7_DEFAULT_TIMEZONE, and of the two
    instants a wall time names where that zone's clocks go back (the hour a fall-back repeats)
    or forward (the hour skipped), the one nearest `received_at`: a reading is sent as it is
    measured, so the second pass of 02:30 received at 02:30:05 CET is that second pass, not
    the first an hour before, whose stamps are already stored. ValueError if it is not one."""
    match = _DTM_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not an HL7 time: {text[:40]!r}")
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    if sign:
        if int(off_h) > 23 or int(off_m) > 59:
            raise ValueError(f"not an HL7 time (offset): {text[:40]!r}")
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        zone = timezone(-offset if sign == "-" else offset)
    else:
        zone = ZoneInfo(settings.HL7_DEFAULT_TIMEZONE)
    try:
        moment = datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "0").ljust(3, "0")[:3]) * 1000,
            tzinfo=zone,
        )
        # In UTC (as the reading carries it) 9999-12-31T23:59-12:00 is in the year 10000.
        first = moment.astimezone(UTC)
        if not sign:
            # In UTC: Python compares and hashes two times of one zone by their wall clock,
            # fold ignored, so the two passes of 02:30 would sort (and group) as one.
            second = moment.replace(fold=1).astimezone(UTC)
            if second != first and abs(second - received_at) < abs(first - received_at):
                return second
            return first
    except (ValueError, OverflowError):  # month 13, day 32, a year beyond the calendar
        raise ValueError(f"not an HL7 time: {text[:40]!r}") from None
    return moment


def eui64_of(components: list[str]) -> str:
    """The EUI-64 among an HD or EI field's components (e.g. MSH-3
    `MINDRAY_EGATEWAY^00A037EB0C0F5CB8^EUI-64`, OBX-18 `0012340000000001^^^EUI-64`), upper
    case; "" if none."""
    for c in components:
        if _EUI64_RE.fullmatch(c.strip()):
            return c.strip().upper()
    return ""


def _sign_of(code: list[str]) -> tuple[str, int] | None:
    """The sign and rank an OBX-3 (CWE: id ^ text ^ system ^ alternate id ^ text ^ system)
    codes, if any: the primary coding first, then the alternate."""
    padded = code + [""] * 6
    for identifier, text, system in (padded[0:3], padded[3:6]):
        identifier, system = identifier.strip(), system.strip().upper()
        if not identifier and not text:
            continue
        if system in ("MDC", "") and (hit := SIGN_CODES.get(("mdc", identifier))):
            return hit
        if system in ("LN", "LOINC", "") and (hit := SIGN_CODES.get(("loinc", identifier))):
            return hit
        if system == "MDC" and not identifier and (hit := _SIGN_OF_NAME.get(text.upper())):
            return hit
    return None


def _unit_of(unit: list[str]) -> UnitKind | bool | None:
    """The unit of OBX-6: a UnitKind, None for no unit, False for one we do not know."""
    padded = [c.strip() for c in unit] + ["", ""]
    if not padded[0] and not padded[1]:
        return None
    for text in padded[:2]:
        if text and (kind := UNITS.get(text) or UNITS.get(text.upper())):
            return kind
    return False


def _observations_read(rows: list[_Fields], *, msh_time: str, received_at: datetime) -> _Message:
    gathered = _Message()
    obr_time: tuple[str, tuple[str, int, int]] | None = None
    obr_seq = obx_seq = 0
    for row in rows:
        name = row.name
        if name == "OBR":
            obr_seq += 1
            obr = row
            obr_time = (obr.text(7), ("OBR", obr_seq, 7)) if obr.text(7).strip() else None
            continue
        if name != "OBX":
            continue
        obx_seq += 1
        obx = row
        if eui := eui64_of(obx.components(18)):
            gathered.devices.append(eui)
        value_type = obx.text(2).strip().upper()
        value_text = obx.text(5).strip()
        if not value_type and not value_text:
            gathered.counts["containment_rows"] += 1  # MDS, VMD, channel
            continue
        hit = _sign_of(obx.components(3))
        if hit is None:
            gathered.counts["observations_not_charted"] += 1
            continue
        sign, rank = hit
        if value_type not in ("NM", "SN", ""):
            gathered.counts["observations_not_numeric"] += 1
            continue
        if obx.text(11).strip().upper() in NOT_A_RESULT_STATUSES:
            gathered.counts["signs_skipped_status"] += 1
            continue
        shown = value_text
        if value_type == "SN":
            # Structured numeric (HL7 v2 2.A.72; build.fhir.org/ig/HL7/v2ig SN): comparator
            # ^ num1 ^ separator/suffix ^ num2. One value only when the comparator is empty or
            # "=" (its default) and nothing follows num1: "<^5" or a range "^72^-^80" is not.
            parts = [p.strip() for p in value_text.split(obx.comp)] + ["", ""]
            one = parts[0] in ("", "=") and not any(parts[2:])
            value_text = parts[1] if one else ""
        if not _NUMBER_RE.fullmatch(value_text) or not math.isfinite(float(value_text)):
            gathered.errors.append(
                Hl7Error("102", f"OBX-5 {shown[:40]!r} is not a number", "OBX", obx_seq, 5)
            )
            gathered.counts["signs_skipped_not_numeric"] += 1
            continue
        value = float(value_text)
        if value in SPECIAL_VALUES:
            gathered.counts["signs_skipped_special_value"] += 1
            continue
        if value in SENTINELS:
            gathered.counts["signs_skipped_sentinel"] += 1
            continue
        unit = _unit_of(obx.components(6))
        accepted, unitless_ok = SIGN_UNITS[sign]
        if unit is None and unitless_ok:
            pass
        elif not unit or unit.kind not in accepted:
            gathered.counts["signs_skipped_unit"] += 1
            continue
        else:
            value = unit.to_ours(value)
        # The time: OBX-14, else the OBR's OBR-7, else MSH-7.
        if obx.text(14).strip():
            time_text, where = obx.text(14), ("OBX", obx_seq, 14)
        elif obr_time is not None:
            time_text, where = obr_time
        else:
            time_text, where = msh_time, ("MSH", 1, 7)
        try:
            measured_at = hl7_time_parse(time_text, received_at=received_at)
        except ValueError:
            segment_name, sequence, number = where
            gathered.errors.append(
                Hl7Error(
                    "102",
                    f"{segment_name}-{number} {time_text[:40]!r} is not an HL7 time",
                    segment_name,
                    sequence,
                    number,
                )
            )
            gathered.counts["signs_skipped_time"] += 1
            continue
        signs = gathered.by_time.setdefault(measured_at, {})
        current = signs.get(sign)
        if current is None or rank < current.rank:
            signs[sign] = _Observation(sign, rank, value, obx_seq, where)
    return gathered


@dataclass(frozen=True)
class _Patient:
    uuid: uuid.UUID
    name: str


def _name_from_pid5(pid: _Fields) -> str:
    """PID-5 (XPN: family ^ given ^ middle ...) as "Given Family", unescaped; "" if none or
    if the contract would refuse it."""
    comps = [*pid.components(5), "", ""]
    family, given = comps[0], comps[1]
    raw = pid.message.unescape(" ".join(part for part in (given, family) if part))
    try:
        return patient_name_parse(raw=raw[:200]) if raw.strip() else ""
    except InvalidReading:
        return ""


def _patient_by_identifier(pid: _Fields, *, actor: str) -> _Patient | None:
    for repetition in pid.repetitions(3):
        comps = [c.strip() for c in repetition] + [""] * 4
        # Both unescaped, as the ADT handler reads them (an authority "ST\T\MARY" is ST&MARY).
        identifier, authority = pid.message.unescape(comps[0]), pid.message.unescape(comps[3])
        if identifier:
            break
    else:
        return None
    identifier_check(authority=authority, identifier=identifier)
    name = _name_from_pid5(pid)
    cached = _KNOWN_PATIENTS.get((authority, identifier))
    now = time.monotonic()
    if cached is None or now - cached[1] > PATIENT_KNOWN_FOR_S:
        if len(_KNOWN_PATIENTS) >= KNOWN_MAX:
            _KNOWN_PATIENTS.clear()
        cached = _KNOWN_PATIENTS[(authority, identifier)] = (
            _patient_identify(identifier, authority, name, actor=actor),
            now,
        )
    known = cached[0]
    return _Patient(known.uuid, name or known.name)


def _patient_identify(identifier: str, authority: str, name: str, *, actor: str) -> _Patient:
    """The patient of this identifier as stored (created if new, with this name or, without
    one, "MRN <identifier>"; the MRN given audited with `actor`, the message). IdentifierRefused:
    see patient_get_by_identifier."""
    patient_uuid, existing = patient_get_by_identifier(identifier=identifier, authority=authority)
    if existing is not None and existing.mrn:
        # Given this MRN before the gateway saw them (maybe under another uuid): theirs.
        return _Patient(existing.uuid, existing.name)
    patient = patient_identify(
        patient_uuid=patient_uuid,
        name=name or f"MRN {identifier}",
        mrn=identifier,
        mrn_authority=authority,
        actor=actor,
    )
    return _Patient(patient.uuid, patient.name)


def _bed_of(pv1: _Fields) -> int | None:
    location = location_parse(pv1.components(3))
    if location is None:
        return None
    known = _KNOWN_BEDS.get(location)
    now = time.monotonic()
    if known is None or now - known[1] > BED_KNOWN_FOR_S:
        bed = bed_get_by_location(location=location)
        if len(_KNOWN_BEDS) >= KNOWN_MAX:
            _KNOWN_BEDS.clear()
        known = _KNOWN_BEDS[location] = (bed.pk if bed else None, now)
    return known[0]


def _patient_of_bed(bed_id: int) -> _Patient | None:
    admission = admission_open_get_by_bed(bed_id=bed_id)
    if admission is None:
        return None
    return _Patient(admission.patient.uuid, admission.patient.name)


def _devices_learn(devices: list[str], bed_id: int, at: datetime) -> None:
    for eui in dict.fromkeys(devices):
        known = _KNOWN_DEVICES.get(eui)
        if known and known[0] in (bed_id, _SEVERAL_BEDS) and at - known[1] < DEVICE_SEEN_EVERY:
            continue
        device = device_learn(eui64=eui, bed_id=bed_id, seen_at=at)
        if len(_KNOWN_DEVICES) >= KNOWN_MAX:
            _KNOWN_DEVICES.clear()
        _KNOWN_DEVICES[eui] = (_SEVERAL_BEDS if device.several_beds else bed_id, at)


def _patient_of_devices(devices: list[str]) -> _Patient | None:
    for eui in dict.fromkeys(devices):
        device = device_get(eui64=eui)
        if device and device.bed_id and (patient := _patient_of_bed(device.bed_id)):
            return patient
    return None


def _actor(msh: _Fields) -> str:
    """Who an MRN given by this message is audited as (the audit's username, 150 characters):
    the message (MSH-10) and its sending device (MSH-3's EUI-64), e.g.
    "HL7 ORU R01 1203 from 00A037EB0C0F5CB8"."""
    actor = f"HL7 ORU R01 {msh.components(10)[0][:100]}"
    device = eui64_of(msh.components(3))
    return f"{actor} from {device}" if device else actor


def oru_handle(message: hl7.Message, *, received_at: datetime) -> Outcome:
    """The readings of one ORU^R01 as version 2 vitals messages (Outcome.messages), or why
    not (AE with ERR segments)."""
    rows = [_Fields(message, segment) for segment in message]
    msh = next(row for row in rows if row.name == "MSH")
    gathered = _observations_read(rows, msh_time=msh.text(7), received_at=received_at)
    counts, errors = gathered.counts, gathered.errors
    devices = list(
        dict.fromkeys([d for d in [eui64_of(msh.components(3))] if d] + gathered.devices)
    )
    if len(devices) > DEVICES_MAX:
        counts["devices_ignored"] += len(devices) - DEVICES_MAX
        del devices[DEVICES_MAX:]

    pids = [row for row in rows if row.name == "PID"]
    if len(pids) > 1:
        # ORU^R01 allows several patient groups; a monitor's PCD-01 has one. Rather than risk
        # a reading under the wrong patient, none is taken.
        counts["several_patients"] += 1
        return Outcome(
            "AE",
            errors=[Hl7Error("100", "one patient per message: a second PID", "PID", 2)],
            counts=counts,
        )
    pid = pids[0] if pids else None
    pv1 = next((row for row in rows if row.name == "PV1"), None)
    try:
        patient = _patient_by_identifier(pid, actor=_actor(msh)) if pid else None
    except IdentifierRefused as refused:
        counts["patient_refused"] += 1
        return Outcome(
            "AE", errors=[Hl7Error(refused.code, refused.text, "PID", 1, 3)], counts=counts
        )
    # The bed: to learn where the devices are, or to find the patient.
    bed_id = _bed_of(pv1) if pv1 and (devices or patient is None) else None
    if bed_id is not None and devices:
        _devices_learn(devices, bed_id, received_at)
    if patient is None and bed_id is not None:
        patient = _patient_of_bed(bed_id)
    if patient is None and devices:
        patient = _patient_of_devices(devices)
    if patient is None:
        counts["no_patient"] += 1
        return Outcome(
            "AE",
            errors=[
                Hl7Error(
                    "101",
                    "no patient: PID-3 is empty, and neither PV1-3 nor the device (MSH-3, "
                    "OBX-18) is at a bed with a current admission",
                    "PID",
                    1,
                    3,
                )
            ],
            counts=counts,
        )

    messages: list[tuple[bytes, bytes]] = []
    for measured_at in sorted(gathered.by_time):
        observations = gathered.by_time[measured_at]
        reading = _reading_build(patient, measured_at, observations, counts)
        if reading is None:
            continue
        key, value = reading_to_message(reading)
        try:
            # A sign the contract refuses is dropped from the reading (Reading.refused): here
            # each gets its ERR, the reading sent without it, as for a whole refusal.
            refused = reading_parse(key=key, value=value, now=received_at).refused
            refusal = InvalidReading(refused[0].reason, refused[0].message) if refused else None
        except InvalidReading as exc:
            refusal = exc
        if refusal is not None:
            reading = _reading_refusals(
                refusal, patient, measured_at, observations, received_at, errors, counts
            )
            if reading is None:
                continue
            key, value = reading_to_message(reading)
        messages.append((key, value))
    counts["readings"] += len(messages)
    return Outcome("AE" if errors else "AA", errors=errors, messages=messages, counts=counts)


def _reading_build(
    patient: _Patient,
    measured_at: datetime,
    observations: dict[str, _Observation],
    counts: Counter,
) -> Reading | None:
    values: dict[str, int | float | None] = {}
    for sign in SIGNS:
        observation = observations.get(sign.key)
        if observation is None:
            values[sign.key] = None
        elif sign.is_integer:
            values[sign.key] = math.floor(observation.value + 0.5)  # half up
        else:
            values[sign.key] = round(observation.value, sign.decimals)
    # Blood pressure travels as "systolic/diastolic": one without the other is not sent.
    if (values["systolic"] is None) != (values["diastolic"] is None):
        counts["signs_skipped_half_bp"] += 1
        values["systolic"] = values["diastolic"] = None
    if all(value is None for value in values.values()):
        return None
    return Reading(
        patient_uuid=patient.uuid,
        patient_name=patient.name,
        measured_at=measured_at,
        schema_version=2,
        **values,
    )


def _reading_refusals(
    exc: InvalidReading,
    patient: _Patient,
    measured_at: datetime,
    observations: dict[str, _Observation],
    received_at: datetime,
    errors: list[Hl7Error],
    counts: Counter,
) -> Reading | None:
    """The reading without what the contract refuses in it (each refusal an ERR), or None."""
    if exc.reason in _TIME_REASONS:
        segment, sequence, number = next(iter(observations.values())).time_field
        errors.append(Hl7Error("102", f"{exc.reason}: {exc.message}", segment, sequence, number))
        counts["signs_refused"] += len(observations)
        return None
    kept: dict[str, _Observation] = {}
    groups = [("systolic", "diastolic")] + [
        (sign.key,) for sign in SIGNS if sign.key not in ("systolic", "diastolic")
    ]
    for group in groups:
        part = {k: observations[k] for k in group if k in observations}
        if not part:
            continue
        single = _reading_build(patient, measured_at, part, Counter())
        if single is None:
            continue
        key, value = reading_to_message(single)
        try:
            reading_parse(key=key, value=value, now=received_at)
        except InvalidReading as refused:
            for observation in part.values():
                errors.append(
                    Hl7Error(
                        "102",
                        f"{refused.reason}: {refused.message}"[:200],
                        "OBX",
                        observation.sequence,
                        5,
                    )
                )
            counts["signs_refused"] += len(part)
            continue
        kept |= part
    return _reading_build(patient, measured_at, kept, counts) if kept else None
