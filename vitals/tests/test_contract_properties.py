"""Properties of the message contract, checked by Hypothesis on generated input.

Whatever the bytes, `reading_parse` returns a Reading that keeps every promise of the contract
(types, ranges, the key, the clock; and the JSON Schema of its version, 1 or 2, accepts the
message), or raises
InvalidReading with one of REASONS and a short detail: never any other exception. A valid
Reading survives reading_to_message -> reading_parse unchanged. `reading_parse_fast`, the
consumer's, gives the same outcome as `reading_parse` for every input here: the same Reading or
the same reason and message.

Deterministic and bounded for CI: the `contract` settings profile below derandomizes (no
random seed, no example database: the same examples on every run of the same code) and runs
MAX_EXAMPLES examples per property, about ten seconds in all (`ICU_HYPOTHESIS_EXAMPLES=20000`
for a deeper local search).
"""

import json
import os
import re
import unicodedata
import uuid
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from vitals.contract import (
    ARTEFACTS,
    CONSCIOUSNESS_LEVELS,
    CONSUMER_REASONS,
    FIELDS,
    FIELDS_V2,
    INT_RANGES,
    NAME_MAX_LENGTH,
    OLDEST_TIMESTAMP,
    OPTIONAL_FIELDS,
    REASONS,
    SCHEMA_VERSIONS,
    TEMPERATURE_RANGE,
    Reading,
    _reading_fast,
    reading_parse,
    reading_parse_fast,
    reading_schema,
    reading_to_message,
)
from vitals.errors import InvalidReading
from vitals.signs import SIGN_KEYS, map_from_bp
from vitals.tests.hostile_corpus import CORPUS, CORPUS_NOW
from vitals.tests.test_contract import without_refused_signs

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
MAX_FUTURE = timedelta(minutes=5)
PATIENT = "0b8e7f4c-3f1a-5d0e-9a53-6c1f2e4b7a10"
PARSER_REASONS = REASONS - CONSUMER_REASONS
# The detail goes into the DLQ header and the log line: it says what was wrong without
# copying a huge value (the longest is a 60-byte key shown with \x escapes).
DETAIL_MAX = 300
VALIDATORS = {version: Draft202012Validator(reading_schema(version)) for version in SCHEMA_VERSIONS}
# What a name may not contain: control characters (C0, DEL, C1, U+2028, U+2029), bidi
# controls, zero-width characters, lone surrogates; written out here, not imported.
FORBIDDEN_IN_NAME = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
    "\u200b-\u200d\u2060-\u2064\ufeff\ud800-\udfff]"
)
# What is not visible: white space and these.
INVISIBLE = frozenset("\u00ad\u034f\u115f\u1160\u180e\u3164\uffa0")


def visible(name: str) -> bool:
    return any(not (c.isspace() or c in INVISIBLE) for c in name)


MAX_EXAMPLES = int(os.environ.get("ICU_HYPOTHESIS_EXAMPLES", "500"))
settings.register_profile(
    "contract",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=MAX_EXAMPLES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Applied per test, not loaded: other modules' Hypothesis tests keep their own settings.
CONTRACT = settings(settings.get_profile("contract"))


# --- Checking one outcome --------------------------------------------------------------------


def outcome(key: bytes | None, value: bytes | None, now: datetime = NOW) -> str:
    """Parse; check whichever way it went; return "accepted" or the reason.

    Any exception but InvalidReading propagates and fails the property; so does the fast path
    (`reading_parse_fast`) saying anything else than `reading_parse`."""
    result = parsed(reading_parse, key, value, now)
    assert parsed(reading_parse_fast, key, value, now) == result
    if isinstance(result, Reading):
        reading = result
        assert_keeps_the_contract(reading, key, now)
        validator = VALIDATORS[reading.schema_version]
        # A version 2 reading keeps its other signs when the contract refuses one: the message
        # without the refused ones is what the schema accepts; the first refusal's reason is the
        # outcome.
        kept = without_refused_signs(json.loads(value), reading)
        assert list(validator.iter_errors(kept)) == [], value
        return reading.refused[0].reason if reading.refused else "accepted"
    reason, detail = result
    assert reason in PARSER_REASONS, reason
    assert detail, reason
    assert len(detail) <= DETAIL_MAX, (reason, len(detail), detail[:80])
    return reason


def parsed(
    parse: Any, key: bytes | None, value: bytes | None, now: datetime
) -> Reading | tuple[str, str]:
    """What `parse` says: the reading, or the reason and message."""
    try:
        return parse(key=key, value=value, now=now, max_future=MAX_FUTURE)
    except InvalidReading as exc:
        return exc.reason, exc.message


def assert_keeps_the_contract(reading: Reading, key: bytes | None, now: datetime) -> None:
    assert type(reading.patient_uuid) is uuid.UUID
    # Keyed, by the reading's own patient: the key orders a patient's readings.
    assert key
    assert uuid.UUID(key.decode()) == reading.patient_uuid
    name = reading.patient_name
    assert type(name) is str
    assert 1 <= len(name) <= NAME_MAX_LENGTH
    assert name == name.strip()
    assert not FORBIDDEN_IN_NAME.search(name)
    assert visible(name)
    assert unicodedata.is_normalized("NFC", name)
    assert reading.schema_version in SCHEMA_VERSIONS
    # Version 1: its five signs (MAP computed from the pressures), no etCO2. Version 2: at least
    # one sign, and no SpO2 with the probe off.
    measured = {key for key, value in reading.signs.items() if value is not None}
    if reading.schema_version == 1:
        assert measured == set(SIGN_KEYS) - {"etco2"}
        assert reading.map == map_from_bp(reading.systolic, reading.diastolic)
    else:
        assert measured
        assert not (reading.artefact == "spo2_probe_off" and "spo2" in measured)
    assert ("systolic" in measured) == ("diastolic" in measured)
    if "systolic" in measured:
        assert "map" in measured
    for field_name, (low, high) in INT_RANGES.items():
        number = getattr(reading, field_name)
        if number is None:
            continue
        assert type(number) is int, field_name
        assert low <= number <= high, field_name
    if reading.systolic is not None:
        assert reading.systolic > reading.diastolic
    if reading.temperature is not None:
        assert type(reading.temperature) is float
        assert TEMPERATURE_RANGE[0] <= reading.temperature <= TEMPERATURE_RANGE[1]
        assert round(reading.temperature, 1) == reading.temperature
    assert reading.measured_at.utcoffset() is not None
    assert OLDEST_TIMESTAMP <= reading.measured_at <= now + MAX_FUTURE
    assert type(reading.on_oxygen) is bool
    assert reading.consciousness in CONSCIOUSNESS_LEVELS
    assert reading.artefact is None or reading.artefact in ARTEFACTS


def encode(value: Any, *, ensure_ascii: bool = False, compact: bool = False) -> bytes:
    """JSON as a producer might write it; a lone surrogate is written as raw bytes (CESU-8)
    unless escaped (ensure_ascii), and NaN/Infinity as Python writes them."""
    separators = (",", ":") if compact else (", ", ": ")
    text = json.dumps(value, ensure_ascii=ensure_ascii, separators=separators)
    return text.encode("utf-8", "surrogatepass")


# --- Strategies --------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and infinities included: json.dumps writes them, the parser refuses them
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)

# Names the contract accepts as they are: nothing forbidden, in NFC, already stripped, with
# something visible. Drawn from every character, and from the ones the name rule is about.
names = (
    st.text(
        st.characters(exclude_categories=("Cs",))
        | st.sampled_from([*sorted(INVISIBLE), "\u0301", "\u0308", "\u0958", "\u1161", " "]),
        min_size=1,
        max_size=NAME_MAX_LENGTH,
    )
    .map(lambda text: unicodedata.normalize("NFC", FORBIDDEN_IN_NAME.sub("", text)).strip())
    .filter(lambda name: visible(name) and len(name) <= NAME_MAX_LENGTH)
)
utc_offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
# Every instant the contract accepts, to the millisecond, at any offset.
measured_ats = st.builds(
    lambda millis, tz: (OLDEST_TIMESTAMP + timedelta(milliseconds=millis)).astimezone(tz),
    st.integers(0, (NOW + MAX_FUTURE - OLDEST_TIMESTAMP) // timedelta(milliseconds=1)),
    utc_offsets,
)
pressures = st.integers(*INT_RANGES["diastolic"]).flatmap(
    lambda diastolic: st.tuples(
        st.integers(max(diastolic + 1, INT_RANGES["systolic"][0]), INT_RANGES["systolic"][1]),
        st.just(diastolic),
    )
)
low_tenths, high_tenths = (round(limit * 10) for limit in TEMPERATURE_RANGE)
valid_v1_readings = st.builds(
    lambda patient_uuid, name, measured_at, pulse, resp_rate, bp, spo2, tenths, *optional: Reading(
        patient_uuid=patient_uuid,
        patient_name=name,
        measured_at=measured_at,
        pulse=pulse,
        resp_rate=resp_rate,
        systolic=bp[0],
        diastolic=bp[1],
        spo2=spo2,
        temperature=tenths / 10,
        on_oxygen=optional[0],
        consciousness=optional[1],
        artefact=optional[2],
        map=map_from_bp(*bp),
    ),
    st.uuids(),
    names,
    measured_ats,
    st.integers(*INT_RANGES["pulse"]),
    st.integers(*INT_RANGES["resp_rate"]),
    pressures,
    st.integers(*INT_RANGES["spo2"]),
    st.integers(low_tenths, high_tenths),
    st.booleans(),
    st.sampled_from(CONSCIOUSNESS_LEVELS),
    st.none() | st.sampled_from(ARTEFACTS),
)


def _v2_reading(reading: Reading, measured: dict[str, Any], map_sent: int | None) -> Reading:
    """`reading` as version 2 with only the signs in `measured` (each None: not measured)."""
    signs = {key: measured.get(key) for key in SIGN_KEYS}
    pressures = measured.get("bp")
    signs["systolic"], signs["diastolic"] = pressures or (None, None)
    if map_sent is None and pressures:
        map_sent = map_from_bp(*pressures)
    elif pressures:
        # Measured with the blood pressure, the mean lies between diastolic and systolic.
        low, high = INT_RANGES["map"]
        map_sent = min(max(map_sent, pressures[1], low), pressures[0], high)
    signs["map"] = map_sent
    if reading.artefact == "spo2_probe_off":
        signs["spo2"] = None
    if all(value is None for value in signs.values()):
        signs["etco2"] = 40  # at least one sign
    return replace(reading, **signs, schema_version=2)


# Version 2: any subset of the signs (a v1 reading's values, MAP and etCO2 added).
valid_v2_readings = st.builds(
    _v2_reading,
    valid_v1_readings,
    st.fixed_dictionaries(
        {},
        optional={
            "pulse": st.integers(*INT_RANGES["pulse"]),
            "resp_rate": st.integers(*INT_RANGES["resp_rate"]),
            "bp": pressures,
            "spo2": st.integers(*INT_RANGES["spo2"]),
            "temperature": st.integers(low_tenths, high_tenths).map(lambda tenths: tenths / 10),
            "etco2": st.integers(*INT_RANGES["etco2"]),
        },
    ),
    st.none() | st.integers(*INT_RANGES["map"]),
)
valid_readings = valid_v1_readings | valid_v2_readings


def _iso(at: datetime, tz: timezone) -> str:
    return at.astimezone(tz).isoformat(timespec="milliseconds")


# Per field: what a producer means to send, just beside it, and anything at all.
timestamps = st.one_of(
    measured_ats.map(lambda at: at.isoformat(timespec="milliseconds")),
    # Within a day of either limit (2000, and the clock plus the allowed skew), either side.
    st.builds(
        lambda limit, millis, tz: _iso(limit + timedelta(milliseconds=millis), tz),
        st.sampled_from([OLDEST_TIMESTAMP, NOW + MAX_FUTURE]),
        st.integers(-86_400_000, 86_400_000),
        utc_offsets,
    ),
    # Naive, or aware anywhere from 1900 to 2100: too old, in the future.
    st.datetimes(datetime(1900, 1, 1), datetime(2100, 1, 1), timezones=st.none() | utc_offsets).map(
        lambda at: at.isoformat()
    ),
    st.from_regex(
        r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,7})?(Z|[+-]\d{2}:\d{2})?", fullmatch=True
    ),
)
plausible: dict[str, st.SearchStrategy] = {
    "schema_version": st.sampled_from([1, 1.0, 2, 0, "1", True]),
    "patient_uuid": st.uuids().map(str) | st.text(alphabet="0123456789abcdefABCDEF-", max_size=40),
    "patient_name": names
    | st.text(max_size=NAME_MAX_LENGTH + 5)
    | st.sampled_from(
        [
            *("", " \u3000 ", "bob\x00", "bob\n", "x" * 10_000, "bob\ud800", "Bo\u200bb"),
            *("\u3164", "\u202eRLO evil\u202c Carol", "Zoe\u0308", "bob\x85", "bob\u2028"),
            "\u0958" * 101,
        ]
    ),
    "timestamp": timestamps,
    "bp": st.from_regex(r"-?\d{1,4}/\d{1,4}", fullmatch=True)
    | st.builds("{}/{}".format, st.integers(-5, 400), st.integers(-5, 300)),
    "temperature": st.floats(20, 50) | st.integers(20, 50),
    "on_oxygen": st.booleans() | st.sampled_from([0, 1, "true", None]),
    "consciousness": st.sampled_from([*CONSCIOUSNESS_LEVELS, "a", "", "Alert", None, 1]),
    "artefact": st.sampled_from([*ARTEFACTS, None, "", "MOTION", False]),
    **{
        name: st.integers(low - 5, high + 5)
        | st.floats(low - 5, high + 5)
        # Absurd sizes too: a huge number must not be copied whole into the detail.
        | st.integers(-(10**1000), 10**1000)
        for name, (low, high) in INT_RANGES.items()
        if name in FIELDS_V2
    },
}
FIELD_NAMES = FIELDS_V2 + OPTIONAL_FIELDS


def field_values(name: str) -> st.SearchStrategy:
    return plausible[name] | json_values


other_field_names = st.sampled_from(["Pulse", "__proto__", "", "heart_rate"]) | st.text(
    max_size=300
)
keys = st.one_of(
    st.none(),
    st.just(PATIENT.encode()),
    st.uuids().map(lambda u: str(u).encode()),
    st.binary(max_size=80),
)


def key_for(data: Any, draw_key: bytes | None, matching: bool) -> bytes | None:
    """The message's own patient uuid as key when `matching` and it has one, else draw_key."""
    if matching and isinstance(data, dict) and isinstance(data.get("patient_uuid"), str):
        return data["patient_uuid"].encode("utf-8", "surrogatepass")
    return draw_key


# --- Properties --------------------------------------------------------------------------------


@CONTRACT
@given(key=keys, value=st.none() | st.binary(max_size=400))
@example(key=None, value=b"")
@example(key=b"\xff" * 100, value=b"{}")
# Regression: the name of a field given twice was copied whole into the detail (the same flaw,
# found by reading the code).
@example(key=None, value=b'{"' + b"x" * 7000 + b'": 1, "' + b"x" * 7000 + b'": 2}')
def test_any_bytes_give_a_reading_or_an_invalid_reading(key: bytes | None, value: bytes | None):
    outcome(key, value)


@CONTRACT
@given(key=keys, value=json_values, ensure_ascii=st.booleans(), compact=st.booleans())
def test_any_json_value_gives_a_reading_or_an_invalid_reading(
    key: bytes | None, value: Any, ensure_ascii: bool, compact: bool
):
    outcome(key, encode(value, ensure_ascii=ensure_ascii, compact=compact))


@CONTRACT
@given(
    data=st.one_of(
        st.dictionaries(st.sampled_from(FIELD_NAMES) | other_field_names, json_values),
        st.fixed_dictionaries(
            {name: field_values(name) for name in FIELDS},
            optional={
                name: field_values(name)
                for name in (*OPTIONAL_FIELDS, *FIELDS_V2)
                if name not in FIELDS
            },
        ),
    ),
    key=keys,
    matching_key=st.booleans(),
    ensure_ascii=st.booleans(),
)
# Regressions. Hypothesis found (test_a_valid_message_with_one_field_changed, a 290-digit
# pulse, resp_rate or spo2) that an out-of-range number was copied whole into the detail, i.e.
# the DLQ header and the log line; the temperature had the same flaw. Now cut at 40
# characters, like every other value quoted there.
@example(
    data={"schema_version": 1, "patient_uuid": PATIENT, "patient_name": "bob",
          "timestamp": "2026-11-23T10:15:30.250Z", "pulse": 10**400, "resp_rate": 14,
          "bp": "120/80", "spo2": 98, "temperature": 36.8},
    key=None, matching_key=True, ensure_ascii=False,
)  # fmt: skip
@example(
    data={"schema_version": 1, "patient_uuid": PATIENT, "patient_name": "bob",
          "timestamp": "2026-11-23T10:15:30.250Z", "pulse": 72, "resp_rate": 14,
          "bp": "120/80", "spo2": 98, "temperature": -(10**400)},
    key=None, matching_key=True, ensure_ascii=False,
)  # fmt: skip
def test_any_object_of_contract_fields_gives_a_reading_or_an_invalid_reading(
    data: dict[str, Any], key: bytes | None, matching_key: bool, ensure_ascii: bool
):
    outcome(key_for(data, key, matching_key), encode(data, ensure_ascii=ensure_ascii))


# Every outcome that changing one field can lead to.
OUTCOMES_OF_A_FIELD = {
    # 2 for a v1 message: accepted; 1 for a v2 message: the v1 signs missing, MAP unknown.
    "schema_version": {"accepted", "unsupported_schema_version", "missing_field", "unknown_field"},
    "patient_uuid": {"invalid_uuid", "key_mismatch", "wrong_type"},
    "patient_name": {"accepted", "invalid_name", "wrong_type"},
    "timestamp": {
        "accepted",
        "invalid_timestamp",
        "timestamp_in_future",
        "timestamp_too_old",
        "wrong_type",
    },
    # no_signs: null for the one sign a v2 message had.
    "bp": {"accepted", "invalid_bp", "implausible", "out_of_range", "wrong_type", "no_signs"},
    "temperature": {"accepted", "out_of_range", "wrong_type", "no_signs"},
    "on_oxygen": {"accepted", "wrong_type"},
    "consciousness": {"accepted", "invalid_choice", "wrong_type"},
    # no_signs: the probe off in a v2 message whose one sign was SpO2.
    "artefact": {"accepted", "invalid_choice", "wrong_type", "no_signs"},
    **{
        name: {"accepted", "out_of_range", "wrong_type", "no_signs"}
        for name in ("pulse", "resp_rate", "spo2")
    },
    # Unknown in version 1.
    "etco2": {"accepted", "out_of_range", "wrong_type", "no_signs", "unknown_field"},
    # implausible: a MAP outside the blood pressure sent with it.
    "map": {"accepted", "out_of_range", "wrong_type", "no_signs", "unknown_field", "implausible"},
}


@pytest.mark.parametrize("name", FIELD_NAMES)
def test_a_valid_message_with_one_field_changed(name: str):
    """A valid message whose field `name` gets a plausible value, or any JSON value: accepted,
    or rejected for a reason of that field's, and never of another's."""
    seen: Counter[str] = Counter()

    @settings(CONTRACT, max_examples=max(MAX_EXAMPLES // 5, 20))
    @given(reading=valid_readings, new=field_values(name), compact=st.booleans())
    def changed(reading: Reading, new: Any, compact: bool) -> None:
        key, value = reading_to_message(reading)
        fields = {**json.loads(value), name: new}
        seen[outcome(key, encode(fields, compact=compact))] += 1

    changed()

    # A lone surrogate in a string is written as raw bytes: not UTF-8. NaN and the infinities
    # (any JSON value may be drawn as one) are written as Python writes them: not JSON.
    assert set(seen) <= OUTCOMES_OF_A_FIELD[name] | {"invalid_encoding", "invalid_json"}, seen
    # The search reaches both sides (which outcomes exactly depends on Hypothesis, which also
    # draws constants from the modules loaded: not asserted, test_contract.py has every one).
    assert len(set(seen) & OUTCOMES_OF_A_FIELD[name]) >= 2, seen
    assert "accepted" in seen or name == "patient_uuid", seen


def mutate(draw, key: bytes, value: bytes) -> tuple[bytes | None, bytes]:
    """One change to a valid message: a field gone, a field added or written twice (as
    json.dumps cannot), its bytes cut, changed or added to, or another key."""
    mutation = draw(st.sampled_from(("delete", "add", "twice", "cut", "flip", "insert", "key")))
    at = draw(st.integers(0, len(value) - 1))
    if mutation in ("delete", "add"):
        try:
            fields = json.loads(value)
        except ValueError:
            return key, value  # an earlier change broke the JSON
        if not isinstance(fields, dict):
            return key, value
        if mutation == "delete" and fields:
            del fields[draw(st.sampled_from(sorted(fields)))]
        else:
            fields[draw(other_field_names)] = draw(json_values)
        return key, encode(fields, ensure_ascii=draw(st.booleans()))
    if mutation == "twice" and value.endswith(b"}"):
        name = draw(st.sampled_from(FIELD_NAMES) | other_field_names)
        extra = encode({name: draw(field_values(name) if name in FIELD_NAMES else json_values)})
        return key, value[:-1] + b", " + extra[1:-1] + b"}"
    if mutation == "cut":
        return key, value[:at]
    if mutation == "flip":
        return key, value[:at] + bytes([draw(st.integers(0, 255))]) + value[at + 1 :]
    if mutation == "insert":
        return key, value[:at] + draw(st.binary(min_size=1, max_size=8)) + value[at:]
    return draw(keys), value


@CONTRACT
@given(reading=valid_readings, data=st.data())
def test_a_valid_message_mutated(reading: Reading, data: st.DataObject):
    """One to three changes to the shape, the bytes or the key of a valid message."""
    key, value = reading_to_message(reading)
    for _ in range(data.draw(st.integers(1, 3), label="changes")):
        if value:
            key, value = mutate(data.draw, key, value)

    outcome(key, value)


@CONTRACT
@given(reading=valid_readings)
@example(
    reading=Reading(
        patient_uuid=uuid.UUID(PATIENT),
        patient_name="Zoë 李雷 🫀",
        measured_at=OLDEST_TIMESTAMP,
        pulse=0,
        resp_rate=100,
        systolic=300,
        diastolic=250,
        spo2=0,
        temperature=45.0,
        map=267,
    )
)
@example(
    reading=Reading(
        patient_uuid=uuid.UUID(PATIENT),
        patient_name="bob",
        measured_at=OLDEST_TIMESTAMP,
        pulse=None,
        resp_rate=None,
        systolic=None,
        diastolic=None,
        spo2=None,
        temperature=None,
        artefact="spo2_probe_off",
        etco2=0,
        schema_version=2,
    )
)
def test_a_valid_reading_round_trips_unchanged(reading: Reading):
    key, value = reading_to_message(reading)

    parsed = reading_parse(key=key, value=value, now=NOW)

    assert parsed == reading
    assert parsed.measured_at.utcoffset() == timedelta(0)  # the same instant, in UTC
    assert outcome(key, value) == "accepted"


@CONTRACT
@given(reading=valid_v2_readings, sent_at=st.none() | measured_ats)
def test_the_fast_path_takes_every_valid_version_2_message_as_produced(
    reading: Reading, sent_at: datetime | None
):
    key, value = reading_to_message(reading)

    fast = _reading_fast(key, value, NOW, MAX_FUTURE, sent_at)

    assert fast == replace(reading, sent_at=sent_at)
    assert fast == reading_parse(key=key, value=value, now=NOW, sent_at=sent_at)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        # msgspec alone keeps the last of a field given twice.
        (lambda v: v[:-1] + b',"pulse":80}', "duplicate_field"),
        (lambda v: v[:-1] + b',"puls\\u0065":80}', "duplicate_field"),
        (lambda v: v.replace(b'"pulse":72', b'"pulse":72.0'), None),  # JSON Schema's integer
        (lambda v: v.replace(b'"pulse":72', b'"pulse":true'), "wrong_type"),
        (lambda v: v.replace(b'"pulse":72', b'"pulse":1' + b"0" * 5000), "invalid_json"),
        (lambda v: v.replace(b'"temperature":36.8', b'"temperature":NaN'), "invalid_json"),
        (lambda v: v.replace(b'"temperature":36.8', b'"temperature":1e999'), "out_of_range"),
        (lambda v: v.replace(b'"temperature":36.8', b'"temperature":37'), None),
        (lambda v: v.replace(b'"spo2":98', b'"spo2":null'), None),
        (
            lambda v: v.replace(b'"schema_version":2', b'"schema_version":1'),
            "unknown_field",
        ),  # map: v2 only
        (lambda v: v.replace(b'"bob"', b'"b\\u006fb"'), None),
        (lambda v: v.replace(b'"bob"', b'"bob\\u202e"'), "invalid_name"),
        (lambda v: v.replace(b'"consciousness":"A"', b'"consciousness":null'), "wrong_type"),
        (lambda v: v.replace(b',"on_oxygen":false', b""), None),
        (lambda v: b" " + v, None),
        (lambda v: v.replace(b"120/80", b"80/120"), "implausible"),
    ],
)
def test_the_fast_path_leaves_anything_unusual_to_reading_parse(change, reason: str | None):
    reading = Reading(
        patient_uuid=uuid.UUID(PATIENT),
        patient_name="bob",
        measured_at=NOW,
        pulse=72,
        resp_rate=14,
        systolic=120,
        diastolic=80,
        spo2=98,
        temperature=36.8,
        map=93,
        schema_version=2,
    )
    key, value = reading_to_message(reading)
    value = change(value)

    assert _reading_fast(key, value, NOW, MAX_FUTURE, None) is None
    assert outcome(key, value) == (reason or "accepted")


@pytest.mark.parametrize("case", CORPUS.values(), ids=CORPUS.keys())
def test_the_fast_path_parses_the_hostile_corpus_as_reading_parse_does(case):
    fast = parsed(reading_parse_fast, case.key, case.value, CORPUS_NOW)

    assert fast == parsed(reading_parse, case.key, case.value, CORPUS_NOW)
