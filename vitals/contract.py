"""The message contract of the vitals topic: build messages, and parse and validate them.

One message = one reading. Key: the patient uuid (UTF-8). Value: UTF-8 JSON, described by
`schemas/reading-v1.schema.json` (shipped beside this module and documented in the README).
`reading_parse` accepts exactly what that schema accepts plus the checks JSON Schema cannot
express (systolic > diastolic, the clock, duplicate fields, no lone surrogate in the name);
tests hold the two together.

Every rejection is an `InvalidReading` whose `reason` is one of `REASONS`: the code the consumer
writes into the DLQ header.
"""

import json
import re
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from vitals.errors import InvalidReading

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "reading-v1.schema.json"
MAX_VALUE_BYTES = 16 * 1024
OLDEST_TIMESTAMP = datetime(2000, 1, 1, tzinfo=UTC)

# Physiologically possible ranges (inclusive), wide on purpose: an extreme but real value
# must be stored, since it is exactly what the clinician needs to see. Out of these ranges a
# value is a device or software fault.
INT_RANGES: dict[str, tuple[int, int]] = {
    "pulse": (0, 300),
    "resp_rate": (0, 100),
    "spo2": (0, 100),
    "systolic": (30, 300),
    "diastolic": (10, 250),
}
TEMPERATURE_RANGE = (25.0, 45.0)
NAME_MAX_LENGTH = 200

FIELDS = (
    "schema_version",
    "patient_uuid",
    "patient_name",
    "timestamp",
    "pulse",
    "resp_rate",
    "bp",
    "spo2",
    "temperature",
)
# Optional since the clinical release, still schema_version 1: a message without them means
# "on room air, alert, no artefact", which is what every older producer's readings were.
OPTIONAL_FIELDS = ("on_oxygen", "consciousness", "artefact")
CONSCIOUSNESS_LEVELS = (
    "A",
    "C",
    "V",
    "P",
    "U",
)  # ACVPU: Alert, new Confusion, Voice, Pain, Unresponsive
ARTEFACTS = ("spo2_probe_off", "motion")

REASONS = frozenset(
    {
        "empty_message",
        "payload_too_large",
        "invalid_encoding",
        "invalid_json",
        "not_an_object",
        "duplicate_field",
        "missing_field",
        "unknown_field",
        "wrong_type",
        "unsupported_schema_version",
        "invalid_uuid",
        "missing_key",
        "key_mismatch",
        "invalid_name",
        "invalid_timestamp",
        "timestamp_in_future",
        "timestamp_too_old",
        "invalid_bp",
        "out_of_range",
        "implausible",
        "invalid_choice",
        # Set by the consumer, not the parser: the database refused a reading that passed;
        "rejected_by_database",
        # another reading of the same patient and time, with other values, was stored first.
        "conflicting_duplicate",
    }
)

# The reasons the consumer gives, not `reading_parse`.
CONSUMER_REASONS = frozenset({"rejected_by_database", "conflicting_duplicate"})

_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_TIMESTAMP_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")
# ASCII: in JSON Schema (ECMA-262) regexes \d is [0-9], in Python it is any Unicode digit.
_BP_RE = re.compile(r"(\d{1,3})/(\d{1,3})", re.ASCII)

# What a patient name may not hold, by class: regex character classes written with \u escapes,
# which Python's re and ECMA-262 read alike, so that the parser and the schema's pattern are
# built from the same text. A name is shown on the central station and written into logs:
# nothing in it may hide, reorder or break the text around it.
# - Control characters: C0, DEL, C1, and the line and paragraph separators.
NAME_CONTROL = r"\u0000-\u001f\u007f-\u009f\u2028\u2029"
# - Bidi controls (the Unicode Bidi_Control property): "\u202eRLO evil\u202c Carol" renders
#   reversed.
NAME_BIDI_CONTROLS = r"\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
# - Zero-width characters: "Bo\u200bb" renders as "Bob". The invisible operators U+2061-U+2064
#   too: zero-width as well, and nothing a name needs.
NAME_ZERO_WIDTH = r"\u200b-\u200d\u2060-\u2064\ufeff"
# Allowed inside a name but not visible: soft hyphen, combining grapheme joiner, Hangul
# fillers, Mongolian vowel separator. A name of only these and white space is blank.
NAME_INVISIBLE = r"\u00ad\u034f\u115f\u1160\u180e\u3164\uffa0"
NAME_REFUSED = NAME_CONTROL + NAME_BIDI_CONTROLS + NAME_ZERO_WIDTH
# The schema's pattern: none of the refused characters, and one at least that is neither white
# space nor invisible. (Python's \s and ECMA-262's differ only on characters refused anyway.)
NAME_PATTERN = f"^[^{NAME_REFUSED}]*[^\\s{NAME_REFUSED}{NAME_INVISIBLE}][^{NAME_REFUSED}]*$"
_NAME_CLASSES = tuple(
    (what, re.compile(f"[{chars}]"))
    for what, chars in (
        ("control character", NAME_CONTROL),
        ("bidi control", NAME_BIDI_CONTROLS),
        ("zero-width character", NAME_ZERO_WIDTH),
    )
)
# In the parser only: lone surrogates. "\ud800" is a legal JSON escape, but such a name cannot
# be encoded as UTF-8, so it could be neither stored nor produced again.
_NAME_REFUSED_RE = re.compile(f"[{NAME_REFUSED}\\ud800-\\udfff]")
_NAME_VISIBLE_RE = re.compile(f"[^\\s{NAME_INVISIBLE}]")


@dataclass(frozen=True, slots=True)
class Reading:
    patient_uuid: uuid.UUID
    patient_name: str
    measured_at: datetime
    pulse: int | None
    resp_rate: int | None
    systolic: int | None
    diastolic: int | None
    spo2: int | None
    temperature: float | None
    on_oxygen: bool = False
    consciousness: str = "A"
    # The monitor's own flag that a value is not physiological (a probe off the finger, motion).
    artefact: str | None = None
    # Not in the message body: the Kafka message's timestamp, when the consumer knows it.
    sent_at: datetime | None = None
    map: int | None = None
    etco2: int | None = None
    schema_version: int = 1

    @property
    def bp(self) -> str:
        return f"{self.systolic}/{self.diastolic}"


def reading_to_message(reading: Reading) -> tuple[bytes, bytes]:
    """The (key, value) to produce for one reading."""
    value = {
        "schema_version": SCHEMA_VERSION,
        "patient_uuid": str(reading.patient_uuid),
        "patient_name": reading.patient_name,
        "timestamp": reading.measured_at.astimezone(UTC).isoformat(timespec="milliseconds"),
        "pulse": reading.pulse,
        "resp_rate": reading.resp_rate,
        "bp": reading.bp,
        "spo2": reading.spo2,
        "temperature": round(reading.temperature, 1),
        "on_oxygen": reading.on_oxygen,
        "consciousness": reading.consciousness,
    }
    if reading.artefact:
        value["artefact"] = reading.artefact
    key = str(reading.patient_uuid).encode()
    return key, json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _reject_constant(name: str) -> None:
    raise InvalidReading("invalid_json", f"{name} is not valid JSON")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)  # in C: the loop below runs only for a message that has a duplicate
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            raise InvalidReading("duplicate_field", f"field '{name:.60}' appears more than once")
        seen.add(name)
    raise AssertionError("unreachable")  # pragma: no cover


def _as_int(data: dict[str, Any], name: str) -> int:
    value = data[name]
    # JSON Schema's "integer" admits 72.0; bool is an int in Python but not in JSON.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidReading("wrong_type", f"'{name}' must be an integer, got {value!r:.40}")
    low, high = INT_RANGES[name]
    if not low <= value <= high:
        raise InvalidReading("out_of_range", f"'{name}' {value!r:.40} is outside {low}-{high}")
    return value


def _as_str(data: dict[str, Any], name: str) -> str:
    value = data[name]
    if not isinstance(value, str):
        raise InvalidReading("wrong_type", f"'{name}' must be a string, got {value!r:.40}")
    return value


def _parse_uuid(text: str, *, what: str) -> uuid.UUID:
    if not _UUID_RE.fullmatch(text):
        raise InvalidReading("invalid_uuid", f"{what} {text!r:.60} is not a uuid (8-4-4-4-12 hex)")
    return uuid.UUID(text)


def _parse_timestamp(text: str, now: datetime, max_future: timedelta) -> datetime:
    if not _TIMESTAMP_RE.fullmatch(text):
        raise InvalidReading(
            "invalid_timestamp",
            f"'timestamp' {text!r:.60} is not ISO 8601 with a timezone "
            "(e.g. 2026-11-23T10:15:30.250Z)",
        )
    try:
        measured_at = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidReading(
            "invalid_timestamp", f"'timestamp' {text!r} is not a real time"
        ) from None
    if measured_at > now + max_future:
        raise InvalidReading(
            "timestamp_in_future",
            f"'timestamp' {text} is more than {max_future.total_seconds():g}s ahead of the "
            f"consumer's clock ({now.isoformat(timespec='seconds')})",
        )
    if measured_at < OLDEST_TIMESTAMP:
        raise InvalidReading("timestamp_too_old", f"'timestamp' {text} is before 2000")
    return measured_at


def patient_name_parse(*, raw: str) -> str:
    """The name in NFC, stripped, or InvalidReading("invalid_name") saying what is wrong: the
    rule of a reading's name, and of a new name a clinician gives (patients' rename)."""
    if not 1 <= len(raw) <= NAME_MAX_LENGTH:
        raise InvalidReading(
            "invalid_name",
            f"'patient_name' must be 1-{NAME_MAX_LENGTH} characters, got {len(raw)}",
        )
    # One spelling per name ("e" + U+0308 is "ë"): stored, compared and checked in NFC.
    name = raw if unicodedata.is_normalized("NFC", raw) else unicodedata.normalize("NFC", raw)
    if refused := _NAME_REFUSED_RE.search(name):
        char = ord(refused[0])
        what = next((w for w, chars in _NAME_CLASSES if chars.match(refused[0])), "lone surrogate")
        rule = f"no {what}s" + (" (C0, C1, U+2028, U+2029)" if what[0] == "c" else "")
        raise InvalidReading("invalid_name", f"'patient_name' has {what} U+{char:04X}: {rule}")
    if not _NAME_VISIBLE_RE.search(name):
        raise InvalidReading("invalid_name", "'patient_name' is blank: nothing visible in it")
    if len(name) > NAME_MAX_LENGTH:
        raise InvalidReading(
            "invalid_name",
            f"'patient_name' must be 1-{NAME_MAX_LENGTH} characters, got {len(name)} after NFC "
            "normalisation",
        )
    return name.strip()


def reading_parse(
    *,
    key: bytes | None,
    value: bytes | None,
    now: datetime | None = None,
    max_future: timedelta = timedelta(minutes=5),
    sent_at: datetime | None = None,
) -> Reading:
    """Validate one message against the contract; return the reading or raise InvalidReading.

    `key` must be the same uuid as `patient_uuid`: it puts all of a patient's readings in one
    partition, in order, and the alarm engine judges them in that order. No key (or an empty
    one) is `missing_key`, another one `key_mismatch`: either is a producer bug.
    """
    if not value:
        raise InvalidReading("empty_message", "the message has no value")
    if len(value) > MAX_VALUE_BYTES:
        raise InvalidReading(
            "payload_too_large", f"value is {len(value)} bytes, the limit is {MAX_VALUE_BYTES}"
        )
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidReading(
            "invalid_encoding", f"value is not UTF-8: {exc.reason} at byte {exc.start}"
        ) from None
    try:
        data = json.loads(
            text, parse_constant=_reject_constant, object_pairs_hook=_reject_duplicates
        )
    # ValueError beyond JSONDecodeError: an integer longer than Python's int digit limit.
    except (ValueError, RecursionError) as exc:
        raise InvalidReading("invalid_json", f"value is not JSON: {str(exc)[:120]}") from None
    if not isinstance(data, dict):
        raise InvalidReading(
            "not_an_object", f"value must be a JSON object, got {type(data).__name__}"
        )

    # The version first: a message of another version may well have other fields, and the
    # version is then the one reason worth reporting.
    version = data.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, bool) or version != SCHEMA_VERSION:
        raise InvalidReading(
            "unsupported_schema_version",
            f"schema_version {version!r:.40} is not supported "
            f"(this consumer reads {SCHEMA_VERSION})",
        )
    unknown = sorted(set(data) - set(FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise InvalidReading("unknown_field", f"unknown field(s): {', '.join(unknown)[:200]}")
    missing = [name for name in FIELDS if name not in data]
    if missing:
        raise InvalidReading("missing_field", f"missing field(s): {', '.join(missing)}")

    patient_uuid = _parse_uuid(_as_str(data, "patient_uuid"), what="'patient_uuid'")
    if not key:
        raise InvalidReading("missing_key", "the message has no key; it must be the patient uuid")
    # The key is nearly always the body's uuid as the same text: no second parse then.
    if key != data["patient_uuid"].encode():
        try:
            key_uuid = _parse_uuid(key.decode("utf-8"), what="key")
        except (UnicodeDecodeError, InvalidReading):
            raise InvalidReading("key_mismatch", f"key {key[:60]!r} is not a uuid") from None
        if key_uuid != patient_uuid:
            raise InvalidReading(
                "key_mismatch", f"key {key_uuid} differs from patient_uuid {patient_uuid}"
            )

    name = patient_name_parse(raw=_as_str(data, "patient_name"))

    measured_at = _parse_timestamp(
        _as_str(data, "timestamp"), now or datetime.now(tz=UTC), max_future
    )

    bp = _as_str(data, "bp")
    match = _BP_RE.fullmatch(bp)
    if not match:
        raise InvalidReading(
            "invalid_bp", f'\'bp\' {bp!r:.40} is not "systolic/diastolic" (e.g. "120/80")'
        )
    pressures = {"systolic": int(match[1]), "diastolic": int(match[2])}
    systolic, diastolic = (_as_int(pressures, name) for name in ("systolic", "diastolic"))
    if systolic <= diastolic:
        raise InvalidReading("implausible", f"'bp' {bp}: systolic must be above diastolic")

    temperature = data["temperature"]
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise InvalidReading(
            "wrong_type", f"'temperature' must be a number, got {temperature!r:.40}"
        )
    low, high = TEMPERATURE_RANGE
    if not low <= temperature <= high:
        raise InvalidReading(
            "out_of_range", f"'temperature' {temperature!r:.40} is outside {low}-{high}"
        )

    on_oxygen = data.get("on_oxygen", False)
    if not isinstance(on_oxygen, bool):
        raise InvalidReading(
            "wrong_type", f"'on_oxygen' must be true or false, got {on_oxygen!r:.40}"
        )
    consciousness = _as_choice(data, "consciousness", CONSCIOUSNESS_LEVELS, default="A")
    artefact = _as_choice(data, "artefact", ARTEFACTS, default=None)

    return Reading(
        patient_uuid=patient_uuid,
        patient_name=name,
        measured_at=measured_at,
        pulse=_as_int(data, "pulse"),
        resp_rate=_as_int(data, "resp_rate"),
        systolic=systolic,
        diastolic=diastolic,
        spo2=_as_int(data, "spo2"),
        temperature=round(float(temperature), 1),
        on_oxygen=on_oxygen,
        consciousness=consciousness,
        artefact=artefact,
        sent_at=sent_at,
    )


def _as_choice(
    data: dict[str, Any], name: str, choices: tuple[str, ...], default: str | None
) -> str | None:
    value = data.get(name, default)
    if value is None and default is None:
        return None
    if not isinstance(value, str):
        raise InvalidReading("wrong_type", f"'{name}' must be a string, got {value!r:.40}")
    if value not in choices:
        raise InvalidReading(
            "invalid_choice", f"'{name}' {value!r:.40} is not one of {', '.join(choices)}"
        )
    return value


def reading_schema() -> dict[str, Any]:
    """The JSON Schema of a message value, as shipped in `schemas/`."""
    return json.loads(SCHEMA_PATH.read_text())
