"""The vitals message contract: building messages, parsing them, and agreeing with the schema.

Pure unit tests: no database, no broker. Every call passes `now=NOW` so the clock checks are
deterministic.
"""

import json
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from vitals.contract import (
    ARTEFACTS,
    CONSCIOUSNESS_LEVELS,
    CONSUMER_REASONS,
    FIELDS,
    FIELDS_V2,
    HEADER_FIELDS,
    INT_RANGES,
    MAX_VALUE_BYTES,
    NAME_MAX_LENGTH,
    NAME_PATTERN,
    OPTIONAL_FIELDS,
    REASONS,
    SCHEMA_VERSIONS,
    SIGN_FIELDS,
    TEMPERATURE_RANGE,
    Reading,
    SignRefusal,
    reading_parse,
    reading_schema,
    reading_to_message,
    schema_path,
    schema_text,
)
from vitals.errors import InvalidReading
from vitals.signs import SIGN_BY_KEY, SIGN_KEYS, SIGNS, map_from_bp
from vitals.tests.hostile_corpus import CORPUS, CORPUS_NOW

PATIENT = "0b8e7f4c-3f1a-5d0e-9a53-6c1f2e4b7a10"
OTHER_PATIENT = "5f0c2d1e-8b7a-4c3d-9e2f-1a0b9c8d7e6f"
KEY = PATIENT.encode()
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PARSER_REASONS = REASONS - CONSUMER_REASONS

# A valid message value, fields in the contract's order.
GOOD: dict[str, Any] = {
    "schema_version": 1,
    "patient_uuid": PATIENT,
    "patient_name": "bob",
    "timestamp": "2026-11-23T10:15:30.250+00:00",
    "pulse": 72,
    "resp_rate": 14,
    "bp": "120/80",
    "spo2": 98,
    "temperature": 36.8,
}
GOOD_READING = Reading(
    patient_uuid=uuid.UUID(PATIENT),
    patient_name="bob",
    measured_at=datetime(2026, 11, 23, 10, 15, 30, 250_000, tzinfo=UTC),
    pulse=72,
    resp_rate=14,
    systolic=120,
    diastolic=80,
    spo2=98,
    temperature=36.8,
    map=93,  # not in a v1 message: (120 + 2 x 80) / 3, rounded
)
DROP = object()  # `body(pulse=DROP)`: the message without that field


def body(**changes: Any) -> bytes:
    """GOOD with some fields changed (or dropped), as json.dumps writes it."""
    data = dict(GOOD)
    for name, value in changes.items():
        if value is DROP:
            del data[name]
        else:
            data[name] = value
    return json.dumps(data).encode()


GOOD_TEXT = body().decode()

# A valid version 2 message: every sign measured (MAP sent, not computed), etCO2 too.
GOOD_V2: dict[str, Any] = {
    **GOOD,
    "schema_version": 2,
    "pulse": 72,
    "resp_rate": 14,
    "bp": "120/80",
    "map": 91,
    "spo2": 98,
    "temperature": 36.8,
    "etco2": 38,
}
GOOD_V2_READING = replace(GOOD_READING, map=91, etco2=38, schema_version=2)
# No sign but the header: what a v2 body(...) builds on.
V2_HEADER = {name: GOOD_V2[name] for name in HEADER_FIELDS}


def body2(**changes: Any) -> bytes:
    """A version 2 message: the header and these fields (None: null; DROP: a header field gone)."""
    data = {**V2_HEADER, **changes}
    return json.dumps({name: value for name, value in data.items() if value is not DROP}).encode()


def raw(old: str, new: str) -> bytes:
    """GOOD's JSON text with one exact piece of text replaced: for what json.dumps won't write."""
    assert old in GOOD_TEXT
    return GOOD_TEXT.replace(old, new, 1).encode()


def padded(size: int) -> bytes:
    """A valid message padded with trailing JSON whitespace to exactly `size` bytes."""
    value = body()
    return value + b" " * (size - len(value))


def parse(value: bytes | None, key: bytes | None = KEY, **kwargs: Any) -> Reading:
    return reading_parse(key=key, value=value, now=NOW, **kwargs)


# --- Rejected messages ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    value: bytes | None
    reason: str
    fragment: str  # a piece of the InvalidReading message that says what was wrong
    key: bytes | None = KEY


# Unicode decimal digits that are not ASCII: Python's re \d matches them, ECMA-262's does not.
FULLWIDTH_120_80 = "\uff11\uff12\uff10/\uff18\uff10"
ARABIC_2026 = "\u0662\u0660\u0662\u0666"


def nested(depth: int, inner: str = "0") -> str:
    return "[" * depth + inner + "]" * depth


BAD: dict[str, Bad] = {
    # Framing: size, encoding, JSON.
    "truncated-before-closing-brace": Bad(
        body()[:-1], "invalid_json", "value is not JSON: Expecting ',' delimiter"
    ),
    "16000-open-brackets": Bad(
        b"[" * 16_000, "invalid_json", "value is not JSON: maximum recursion depth exceeded"
    ),
    "nested-arrays-depth-3000-in-a-field": Bad(
        raw('"pulse": 72', f'"pulse": {nested(3000)}'),
        "invalid_json",
        "maximum recursion depth exceeded",
    ),
    "nested-arrays-depth-50": Bad(nested(50).encode(), "not_an_object", "got list"),
    # Fields.
    "duplicated-field-same-value": Bad(
        raw('"spo2": 98', '"spo2": 98, "spo2": 98'),
        "duplicate_field",
        "field 'spo2' appears more than once",
    ),
    "duplicated-field-in-nested-object": Bad(
        raw('"bp": "120/80"', '"bp": {"s": 120, "s": 80}'),
        "duplicate_field",
        "field 's' appears more than once",
    ),
    **{
        f"missing-{name}": Bad(body(**{name: DROP}), "missing_field", f"missing field(s): {name}")
        for name in FIELDS
    },
    "unknown-fields-sorted": Bad(
        body(zeta=1, alpha=2), "unknown_field", "unknown field(s): alpha, zeta"
    ),
    "unknown-field-wins-over-missing": Bad(
        body(pulse=DROP, heart_rate=72), "unknown_field", "unknown field(s): heart_rate"
    ),
    "field-name-case-differs": Bad(
        raw('"pulse"', '"Pulse"'), "unknown_field", "unknown field(s): Pulse"
    ),
    # Types.
    "pulse-list": Bad(body(pulse=[72]), "wrong_type", "'pulse' must be an integer, got [72]"),
    "bp-list": Bad(body(bp=[120, 80]), "wrong_type", "'bp' must be a string, got [120, 80]"),
    "temperature-true": Bad(
        body(temperature=True), "wrong_type", "'temperature' must be a number, got True"
    ),
    "temperature-null": Bad(
        body(temperature=None), "wrong_type", "'temperature' must be a number, got None"
    ),
    "patient-name-null": Bad(
        body(patient_name=None), "wrong_type", "'patient_name' must be a string, got None"
    ),
    # Optional clinical fields: on_oxygen, consciousness, artefact.
    "on-oxygen-string-yes": Bad(
        body(on_oxygen="yes"), "wrong_type", "'on_oxygen' must be true or false, got 'yes'"
    ),
    "on-oxygen-1": Bad(body(on_oxygen=1), "wrong_type", "'on_oxygen' must be true or false, got 1"),
    "on-oxygen-0": Bad(body(on_oxygen=0), "wrong_type", "'on_oxygen' must be true or false, got 0"),
    "on-oxygen-null": Bad(
        body(on_oxygen=None), "wrong_type", "'on_oxygen' must be true or false, got None"
    ),
    "consciousness-lowercase-a": Bad(
        body(consciousness="a"), "invalid_choice", "'consciousness' 'a' is not one of"
    ),
    "consciousness-empty": Bad(
        body(consciousness=""), "invalid_choice", "'consciousness' '' is not one of"
    ),
    "consciousness-two-letters": Bad(
        body(consciousness="AC"), "invalid_choice", "'consciousness' 'AC' is not one of"
    ),
    "consciousness-word-alert": Bad(
        body(consciousness="Alert"), "invalid_choice", "'consciousness' 'Alert' is not one of"
    ),
    "consciousness-1": Bad(
        body(consciousness=1), "wrong_type", "'consciousness' must be a string, got 1"
    ),
    "consciousness-null": Bad(
        body(consciousness=None), "wrong_type", "'consciousness' must be a string, got None"
    ),
    "artefact-dropout": Bad(
        body(artefact="dropout"),
        "invalid_choice",
        "'artefact' 'dropout' is not one of spo2_probe_off, motion",
    ),
    "artefact-uppercase": Bad(
        body(artefact="MOTION"), "invalid_choice", "'artefact' 'MOTION' is not one of"
    ),
    "artefact-empty": Bad(body(artefact=""), "invalid_choice", "'artefact' '' is not one of"),
    "artefact-5": Bad(body(artefact=5), "wrong_type", "'artefact' must be a string, got 5"),
    "artefact-false": Bad(
        body(artefact=False), "wrong_type", "'artefact' must be a string, got False"
    ),
    "duplicated-optional-field": Bad(
        raw('"pulse": 72', '"on_oxygen": true, "pulse": 72, "on_oxygen": false'),
        "duplicate_field",
        "field 'on_oxygen' appears more than once",
    ),
    "optional-field-name-case-differs": Bad(
        body(On_oxygen=True), "unknown_field", "unknown field(s): On_oxygen"
    ),
    # Schema version.
    "schema-version-true": Bad(
        body(schema_version=True), "unsupported_schema_version", "schema_version True is not"
    ),
    "schema-version-null": Bad(
        body(schema_version=None), "unsupported_schema_version", "schema_version None is not"
    ),
    # Patient uuid and key.
    "patient-uuid-braces": Bad(
        body(patient_uuid="{" + PATIENT + "}"), "invalid_uuid", "'patient_uuid' '{0b8e7f4c-"
    ),
    "patient-uuid-no-dashes": Bad(
        body(patient_uuid=uuid.UUID(PATIENT).hex), "invalid_uuid", "is not a uuid"
    ),
    "patient-uuid-urn": Bad(
        body(patient_uuid=uuid.UUID(PATIENT).urn), "invalid_uuid", "'urn:uuid:0b8e7f4c"
    ),
    "patient-uuid-non-hex": Bad(
        body(patient_uuid=PATIENT[:-1] + "g"), "invalid_uuid", "is not a uuid"
    ),
    "patient-uuid-trailing-newline": Bad(
        body(patient_uuid=PATIENT + "\n"), "invalid_uuid", "is not a uuid"
    ),
    "key-not-a-uuid": Bad(
        body(), "key_mismatch", "key b'patient-1' is not a uuid", key=b"patient-1"
    ),
    # Patient name.
    "name-empty": Bad(
        body(patient_name=""), "invalid_name", "'patient_name' must be 1-200 characters"
    ),
    "name-blank": Bad(body(patient_name="   "), "invalid_name", "is blank"),
    "name-tab": Bad(body(patient_name="bob\tsmith"), "invalid_name", "no control characters"),
    "name-del-7f": Bad(body(patient_name="bob\x7f"), "invalid_name", "no control characters"),
    "name-201-chars": Bad(body(patient_name="a" * 201), "invalid_name", "1-200 characters"),
    "name-200-chars-plus-surrounding-space": Bad(
        body(patient_name=" " + "a" * 200), "invalid_name", "1-200 characters"
    ),
    # Names that hide or impersonate (the corpus has one of each class end to end).
    **{
        f"name-control-{name}": Bad(
            body(patient_name=f"Bob{char}Smith"), "invalid_name", f"control character {code}"
        )
        for name, char, code in [
            ("c1-0080", "\x80", "U+0080"),
            ("c1-009f", "\x9f", "U+009F"),
            ("paragraph-separator-2029", "\u2029", "U+2029"),
        ]
    },
    **{
        f"name-bidi-{name}": Bad(
            body(patient_name=f"Carol{char} Smith"), "invalid_name", f"bidi control {code}"
        )
        for name, char, code in [
            ("arabic-letter-mark-061c", "\u061c", "U+061C"),
            ("lrm-200e", "\u200e", "U+200E"),
            ("rlm-200f", "\u200f", "U+200F"),
            ("lre-202a", "\u202a", "U+202A"),
            ("pdf-202c", "\u202c", "U+202C"),
            ("lri-2066", "\u2066", "U+2066"),
            ("pdi-2069", "\u2069", "U+2069"),
        ]
    },
    **{
        f"name-zero-width-{name}": Bad(
            body(patient_name=f"Bo{char}b"), "invalid_name", f"zero-width character {code}"
        )
        for name, char, code in [
            ("zwnj-200c", "\u200c", "U+200C"),
            ("zwj-200d", "\u200d", "U+200D"),
            ("word-joiner-2060", "\u2060", "U+2060"),
            ("invisible-times-2062", "\u2062", "U+2062"),
            ("bom-feff", "\ufeff", "U+FEFF"),
        ]
    },
    **{
        f"name-nothing-visible-{name}": Bad(
            body(patient_name=text), "invalid_name", "nothing visible"
        )
        for name, text in [
            ("soft-hyphen", "\u00ad"),
            ("grapheme-joiner-and-spaces", " \u034f\u3000"),
            ("hangul-fillers", "\u115f\u1160\uffa0"),
            ("mongolian-vowel-separator", "\u180e"),
        ]
    },
    # NFC may lengthen a name (U+0958 is excluded from composition: NFC decomposes it).
    "name-201-chars-after-nfc": Bad(
        body(patient_name="\u0958" * 101), "invalid_name", "got 202 after NFC normalisation"
    ),
    # Timestamp.
    "timestamp-date-only": Bad(
        body(timestamp="2026-11-23"), "invalid_timestamp", "is not ISO 8601 with a timezone"
    ),
    "timestamp-space-separator": Bad(
        body(timestamp="2026-11-23 10:15:30Z"), "invalid_timestamp", "is not ISO 8601"
    ),
    "timestamp-7-fraction-digits": Bad(
        body(timestamp="2026-11-23T10:15:30.1234567Z"), "invalid_timestamp", "is not ISO 8601"
    ),
    "timestamp-lowercase-z": Bad(
        body(timestamp="2026-11-23T10:15:30z"), "invalid_timestamp", "is not ISO 8601"
    ),
    "timestamp-compact-offset": Bad(
        body(timestamp="2026-11-23T10:15:30+0000"), "invalid_timestamp", "is not ISO 8601"
    ),
    "timestamp-month-13": Bad(
        body(timestamp="2026-13-01T10:00:00+00:00"),
        "invalid_timestamp",
        "'timestamp' '2026-13-01T10:00:00+00:00' is not a real time",
    ),
    "timestamp-hour-24": Bad(
        body(timestamp="2026-11-23T24:00:00Z"), "invalid_timestamp", "is not a real time"
    ),
    "timestamp-offset-24h": Bad(
        body(timestamp="2026-11-23T10:00:00+24:00"), "invalid_timestamp", "is not a real time"
    ),
    "timestamp-year-0": Bad(
        body(timestamp="0000-01-01T00:00:00Z"), "invalid_timestamp", "is not a real time"
    ),
    "timestamp-arabic-indic-digits": Bad(
        body(timestamp=ARABIC_2026 + "-11-23T10:15:30Z"),
        "invalid_timestamp",
        f"'timestamp' '{ARABIC_2026}-11-23",
    ),
    "timestamp-1ms-beyond-max-future": Bad(
        body(timestamp="2026-11-23T12:05:00.001Z"),
        "timestamp_in_future",
        "is more than 300s ahead of the consumer's clock (2026-11-23T12:00:00+00:00)",
    ),
    "timestamp-future-by-offset": Bad(
        # 12:10 at -01:00 is 13:10 UTC, an hour ahead.
        body(timestamp="2026-11-23T12:10:00-01:00"),
        "timestamp_in_future",
        "ahead of the consumer's clock",
    ),
    "timestamp-2000-local-but-1999-utc": Bad(
        body(timestamp="2000-01-01T00:30:00+01:00"), "timestamp_too_old", "is before 2000"
    ),
    # Blood pressure.
    "bp-dash": Bad(body(bp="120-80"), "invalid_bp", "'bp' '120-80' is not"),
    "bp-trailing-newline": Bad(body(bp="120/80\n"), "invalid_bp", 'is not "systolic/diastolic"'),
    "bp-four-digits": Bad(body(bp="1200/80"), "invalid_bp", "'bp' '1200/80' is not"),
    "bp-empty": Bad(body(bp=""), "invalid_bp", "'bp' '' is not"),
    "bp-missing-diastolic": Bad(body(bp="120/"), "invalid_bp", "'bp' '120/' is not"),
    "bp-decimal": Bad(body(bp="120.5/80"), "invalid_bp", 'is not "systolic/diastolic"'),
    "bp-negative": Bad(body(bp="-120/80"), "invalid_bp", 'is not "systolic/diastolic"'),
    "bp-fullwidth-digits": Bad(body(bp=FULLWIDTH_120_80), "invalid_bp", "is not"),
    "bp-equal-120-120": Bad(
        body(bp="120/120"), "implausible", "'bp' 120/120: systolic must be above diastolic"
    ),
    "bp-systolic-29": Bad(body(bp="29/15"), "out_of_range", "'systolic' 29 is outside 30-300"),
    "bp-diastolic-9": Bad(body(bp="120/9"), "out_of_range", "'diastolic' 9 is outside 10-250"),
    "bp-diastolic-251": Bad(
        body(bp="300/251"), "out_of_range", "'diastolic' 251 is outside 10-250"
    ),
    # Ranges.
    "pulse-301": Bad(body(pulse=301), "out_of_range", "'pulse' 301 is outside 0-300"),
    "spo2-101": Bad(body(spo2=101), "out_of_range", "'spo2' 101 is outside 0-100"),
    "spo2-minus-1": Bad(body(spo2=-1), "out_of_range", "'spo2' -1 is outside 0-100"),
    "resp-rate-101": Bad(body(resp_rate=101), "out_of_range", "'resp_rate' 101 is outside 0-100"),
    "resp-rate-float-101.0": Bad(
        body(resp_rate=101.0), "out_of_range", "'resp_rate' 101 is outside 0-100"
    ),
    "temperature-24.9": Bad(
        body(temperature=24.9), "out_of_range", "'temperature' 24.9 is outside 25.0-45.0"
    ),
    "temperature-45.1": Bad(
        body(temperature=45.1), "out_of_range", "'temperature' 45.1 is outside 25.0-45.0"
    ),
    # Version 1 knows only its five signs: MAP and etCO2 are unknown fields there.
    "v1-with-map": Bad(body(map=93), "unknown_field", "unknown field(s): map"),
    "v1-with-etco2": Bad(body(etco2=38), "unknown_field", "unknown field(s): etco2"),
    # Version 1 stays as it is: null is no value.
    "v1-pulse-null": Bad(body(pulse=None), "wrong_type", "'pulse' must be an integer, got None"),
    "v1-bp-null": Bad(body(bp=None), "wrong_type", "'bp' must be a string, got None"),
    # Version 2: at least one sign measured.
    "v2-header-only": Bad(body2(), "no_signs", "no sign measured"),
    "v2-every-sign-null": Bad(
        body2(**dict.fromkeys(SIGN_FIELDS)), "no_signs", "at least one of pulse, resp_rate, bp"
    ),
    "v2-only-spo2-with-the-probe-off": Bad(
        body2(spo2=97, artefact="spo2_probe_off"), "no_signs", "not only spo2 with the probe off"
    ),
    "v2-unknown-sign": Bad(body2(pulse=72, heart_rate=72), "unknown_field", "heart_rate"),
    "v2-systolic-as-a-field": Bad(body2(systolic=120), "unknown_field", "systolic"),
    **{
        f"v2-missing-{name}": Bad(
            body2(pulse=72, **{name: DROP}), "missing_field", f"missing field(s): {name}"
        )
        for name in HEADER_FIELDS
        if name != "schema_version"
    },
    # The same checks on a sign as in version 1, with the registry's ranges.
    **{
        f"v2-{sign.key}-below-range": Bad(
            body2(**{sign.key: sign.plausible[0] - 1}),
            "out_of_range",
            f"'{sign.key}' {sign.plausible[0] - 1} is outside {sign.plausible[0]}-"
            f"{sign.plausible[1]}",
        )
        for sign in SIGNS
        if sign.wire is None and sign.is_integer
    },
    **{
        f"v2-{sign.key}-above-range": Bad(
            body2(**{sign.key: sign.plausible[1] + 1}),
            "out_of_range",
            f"'{sign.key}' {sign.plausible[1] + 1} is outside",
        )
        for sign in SIGNS
        if sign.wire is None
    },
    "v2-map-string": Bad(body2(map="93"), "wrong_type", "'map' must be an integer, got '93'"),
    "v2-etco2-float": Bad(body2(etco2=38.5), "wrong_type", "'etco2' must be an integer"),
    "v2-temperature-string": Bad(
        body2(temperature="36.8"), "wrong_type", "'temperature' must be a number"
    ),
    "v2-bp-implausible": Bad(body2(bp="80/120"), "implausible", "systolic must be above"),
    "v2-map-above-systolic": Bad(
        body2(bp="120/80", map=121),
        "implausible",
        "'map' 121 with 'bp' 120/80: the mean must lie between diastolic and systolic",
    ),
    "v2-map-below-diastolic": Bad(body2(bp="120/80", map=79), "implausible", "must lie between"),
    "v2-bp-no-slash": Bad(body2(bp="120"), "invalid_bp", 'is not "systolic/diastolic"'),
    # Every sign measured refused: the reading whole, for the first one's reason.
    "v2-every-sign-refused": Bad(
        body2(bp="25/15", pulse=301, temperature=24.5),
        "out_of_range",
        "'systolic' 25 is outside 30-300",
    ),
    "v2-a-bad-sign-beside-null-ones": Bad(
        body2(pulse=None, spo2=101), "out_of_range", "'spo2' 101 is outside 0-100"
    ),
    "v2-on-oxygen-alone-is-no-sign": Bad(
        body2(on_oxygen=True, consciousness="V"), "no_signs", "no sign measured"
    ),
}
# The hostile corpus (tests/hostile/: data files, the one definition of those cases) belongs
# here too: checked with its reason above and against the schema below.
BAD |= {
    f"hostile/{name}": Bad(case.value, case.reason, case.detail, key=case.key)
    for name, case in CORPUS.items()
    if case.reason
}


def test_bad_cases_cover_every_parser_reason():
    """A reason added to REASONS without a test case here fails this test."""
    assert {case.reason for case in BAD.values()} == PARSER_REASONS


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_bad_message_is_rejected_with_its_reason(case: Bad):
    with pytest.raises(InvalidReading) as caught:
        parse(case.value, key=case.key)

    assert caught.value.reason == case.reason, caught.value.message
    assert case.fragment in caught.value.message
    assert str(caught.value) == caught.value.message


def test_rejection_messages_are_bounded():
    """A huge value must not be copied whole into the DLQ detail header or the log."""
    value = raw('"pulse": 72', '"pulse": "' + "7" * 10_000 + '"')
    with pytest.raises(InvalidReading) as caught:
        parse(value)

    assert caught.value.reason == "wrong_type"
    assert len(caught.value.message) < 100


def test_max_future_is_configurable():
    value = body(timestamp="2026-11-23T12:00:00.001Z")

    assert parse(value, max_future=timedelta(seconds=1)).measured_at == NOW + timedelta(
        milliseconds=1
    )
    with pytest.raises(InvalidReading) as caught:
        parse(value, max_future=timedelta(0))
    assert caught.value.reason == "timestamp_in_future"
    assert "is more than 0s ahead" in caught.value.message


def test_without_now_the_real_clock_is_used():
    current = datetime.now(tz=UTC)
    stamp = current.isoformat(timespec="milliseconds")
    ahead = (current + timedelta(hours=1)).isoformat(timespec="milliseconds")

    assert (
        reading_parse(key=KEY, value=body(timestamp=stamp)).measured_at.isoformat(
            timespec="milliseconds"
        )
        == stamp
    )
    with pytest.raises(InvalidReading) as caught:
        reading_parse(key=KEY, value=body(timestamp=ahead))
    assert caught.value.reason == "timestamp_in_future"


# --- Accepted messages ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Good:
    value: bytes
    expected: dict[str, Any] = field(default_factory=dict)  # Reading attributes to check
    key: bytes | None = KEY


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


GOOD_CASES: dict[str, Good] = {
    "canonical": Good(
        body(),
        {
            "patient_uuid": uuid.UUID(PATIENT),
            "patient_name": "bob",
            "measured_at": utc(2026, 11, 23, 10, 15, 30, 250_000),
            "pulse": 72,
            "resp_rate": 14,
            "systolic": 120,
            "diastolic": 80,
            "spo2": 98,
            "temperature": 36.8,
            # Absent optional fields: room air, alert, no artefact.
            "on_oxygen": False,
            "consciousness": "A",
            "artefact": None,
            # Not in version 1: MAP from systolic and diastolic, no etCO2.
            "map": 93,
            "etco2": None,
            "schema_version": 1,
            "refused": (),
        },
    ),
    "compact-json-other-field-order": Good(
        json.dumps(dict(reversed(GOOD.items())), separators=(",", ":")).encode(), {"pulse": 72}
    ),
    "pretty-printed-json": Good(json.dumps(GOOD, indent=4).encode(), {"spo2": 98}),
    "key-uppercase-same-uuid": Good(
        body(), {"patient_uuid": uuid.UUID(PATIENT)}, key=PATIENT.upper().encode()
    ),
    "patient-uuid-uppercase": Good(
        body(patient_uuid=PATIENT.upper()), {"patient_uuid": uuid.UUID(PATIENT)}
    ),
    "schema-version-1.0": Good(body(schema_version=1.0), {"pulse": 72}),
    "pulse-72.0-is-72": Good(body(pulse=72.0), {"pulse": 72}),
    "pulse-7.2e1-is-72": Good(raw('"pulse": 72', '"pulse": 7.2e1'), {"pulse": 72}),
    "pulse-0": Good(body(pulse=0), {"pulse": 0}),
    "pulse-300": Good(body(pulse=300), {"pulse": 300}),
    "spo2-0": Good(body(spo2=0), {"spo2": 0}),
    "spo2-100": Good(body(spo2=100), {"spo2": 100}),
    "resp-rate-0": Good(body(resp_rate=0), {"resp_rate": 0}),
    "resp-rate-100": Good(body(resp_rate=100), {"resp_rate": 100}),
    "temperature-25.0": Good(body(temperature=25.0), {"temperature": 25.0}),
    "temperature-45.0": Good(body(temperature=45.0), {"temperature": 45.0}),
    "temperature-int-37": Good(body(temperature=37), {"temperature": 37.0}),
    "temperature-rounded-to-one-decimal": Good(body(temperature=37.04), {"temperature": 37.0}),
    "bp-300-250": Good(body(bp="300/250"), {"systolic": 300, "diastolic": 250}),
    "bp-30-10": Good(body(bp="30/10"), {"systolic": 30, "diastolic": 10}),
    "bp-31-30-smallest-gap": Good(body(bp="31/30"), {"systolic": 31, "diastolic": 30}),
    "bp-leading-zeros": Good(body(bp="090/060"), {"systolic": 90, "diastolic": 60}),
    "timestamp-z": Good(
        body(timestamp="2026-11-23T10:15:30.250Z"),
        {"measured_at": utc(2026, 11, 23, 10, 15, 30, 250_000)},
    ),
    "timestamp-plus-05-30": Good(
        body(timestamp="2026-11-23T10:15:30.250+05:30"),
        {"measured_at": utc(2026, 11, 23, 4, 45, 30, 250_000)},
    ),
    "timestamp-minus-03-00": Good(
        body(timestamp="2026-11-23T07:15:30-03:00"),
        {"measured_at": utc(2026, 11, 23, 10, 15, 30)},
    ),
    "timestamp-microseconds": Good(
        body(timestamp="2026-11-23T10:15:30.123456Z"),
        {"measured_at": utc(2026, 11, 23, 10, 15, 30, 123_456)},
    ),
    "timestamp-no-fraction": Good(
        body(timestamp="2026-11-23T10:15:30Z"), {"measured_at": utc(2026, 11, 23, 10, 15, 30)}
    ),
    "timestamp-exactly-max-future": Good(
        body(timestamp="2026-11-23T12:05:00Z"), {"measured_at": NOW + timedelta(minutes=5)}
    ),
    "timestamp-exactly-2000": Good(
        body(timestamp="2000-01-01T00:00:00Z"), {"measured_at": utc(2000, 1, 1)}
    ),
    "timestamp-1999-local-but-2000-utc": Good(
        body(timestamp="1999-12-31T23:30:00-01:00"),
        {"measured_at": utc(2000, 1, 1, 0, 30)},
    ),
    "name-200-chars": Good(body(patient_name="a" * 200), {"patient_name": "a" * 200}),
    "name-200-four-byte-chars": Good(body(patient_name="🫀" * 200), {"patient_name": "🫀" * 200}),
    "name-surrounding-spaces-stripped": Good(
        body(patient_name="  Mary Ann  "), {"patient_name": "Mary Ann"}
    ),
    "name-inner-spaces-kept": Good(body(patient_name="Mary  Ann"), {"patient_name": "Mary  Ann"}),
    "name-unicode": Good(
        json.dumps({**GOOD, "patient_name": "Zoë Ærø 李雷"}, ensure_ascii=False).encode(),
        {"patient_name": "Zoë Ærø 李雷"},
    ),
    "name-escaped-surrogate-pair": Good(
        raw('"bob"', '"bob \\ud83e\\udec0"'), {"patient_name": "bob 🫀"}
    ),
    "name-quotes-and-backslash": Good(
        body(patient_name='O\'Brien "Bob" \\'), {"patient_name": 'O\'Brien "Bob" \\'}
    ),
    # Stored in NFC: one spelling per name, whatever the monitor sends.
    "name-decomposed-to-nfc": Good(
        body(patient_name="Jose\u0301 Zoe\u0308"), {"patient_name": "Jos\u00e9 Zo\u00eb"}
    ),
    "name-hangul-jamo-to-syllable": Good(
        body(patient_name="\u1100\u1161\u11a8"), {"patient_name": "\uac01"}
    ),
    "name-chinese": Good(body(patient_name="李小龙"), {"patient_name": "李小龙"}),
    "name-apostrophe": Good(body(patient_name="O'Brien"), {"patient_name": "O'Brien"}),
    "name-arabic": Good(body(patient_name="ليلى"), {"patient_name": "ليلى"}),
    "name-soft-hyphen-inside": Good(
        body(patient_name="Anna\u00adMaria"), {"patient_name": "Anna\u00adMaria"}
    ),
    "name-200-chars-decomposed-is-200-in-nfc": Good(
        body(patient_name="e\u0301" * 100), {"patient_name": "\u00e9" * 100}
    ),
    "value-exactly-max-size": Good(padded(MAX_VALUE_BYTES), {"pulse": 72}),
    "on-oxygen-true": Good(body(on_oxygen=True), {"on_oxygen": True}),
    "on-oxygen-false": Good(body(on_oxygen=False), {"on_oxygen": False}),
    **{
        f"consciousness-{level}": Good(body(consciousness=level), {"consciousness": level})
        for level in ("A", "C", "V", "P", "U")
    },
    "artefact-spo2-probe-off": Good(
        body(artefact="spo2_probe_off"), {"artefact": "spo2_probe_off"}
    ),
    "artefact-motion": Good(body(artefact="motion"), {"artefact": "motion"}),
    "artefact-null": Good(body(artefact=None), {"artefact": None}),
    "all-optional-fields": Good(
        body(on_oxygen=True, consciousness="U", artefact="motion"),
        {"on_oxygen": True, "consciousness": "U", "artefact": "motion", "pulse": 72},
    ),
    "optional-fields-first": Good(
        json.dumps({"on_oxygen": True, "consciousness": "V", **GOOD}).encode(),
        {"on_oxygen": True, "consciousness": "V"},
    ),
    # Version 1's MAP, computed: (S + 2D) / 3 rounded half up.
    "v1-map-from-90/60": Good(body(bp="90/60"), {"map": 70}),
    "v1-map-from-121/80-rounds-down": Good(body(bp="121/80"), {"map": 94}),
    "v1-map-from-122/80-rounds-up": Good(body(bp="122/80"), {"map": 94}),
    # Version 2: any non-empty subset of the signs.
    "v2-every-sign": Good(
        json.dumps(GOOD_V2).encode(),
        {name: getattr(GOOD_V2_READING, name) for name in Reading.__slots__ if name != "sent_at"},
    ),
    **{
        f"v2-only-{name}": Good(
            body2(**{name: GOOD_V2[name]}),
            {"schema_version": 2}
            | {key: None for key in SIGN_KEYS if SIGN_BY_KEY[key].wire_field != name}
            | (
                {"systolic": 120, "diastolic": 80, "map": 93}
                if name == "bp"
                else {name: GOOD_V2[name]}
            ),
        )
        for name in SIGN_FIELDS
    },
    "v2-nulls-are-not-measured": Good(
        body2(pulse=88, resp_rate=None, bp=None, map=None, spo2=None, temperature=None, etco2=None),
        {"pulse": 88, "resp_rate": None, "systolic": None, "map": None, "temperature": None},
    ),
    "v2-bp-without-map-gets-it-computed": Good(
        body2(bp="90/60"), {"systolic": 90, "diastolic": 60, "map": 70}
    ),
    "v2-map-null-with-bp-gets-it-computed": Good(body2(bp="90/60", map=None), {"map": 70}),
    "v2-map-sent-is-kept-as-sent": Good(
        body2(bp="90/60", map=75), {"systolic": 90, "diastolic": 60, "map": 75}
    ),
    # A value the contract refuses drops that sign only (version 2): a cardiac arrest's pulse
    # of 0 is judged whatever the arterial line or the thermometer beside it reads.
    "v2-pulse-kept-beside-a-temperature-out-of-range": Good(
        body2(pulse=0, temperature=24.5),
        {
            "pulse": 0,
            "temperature": None,
            "refused": (
                SignRefusal(
                    ("temperature",),
                    "out_of_range",
                    "'temperature' 24.5 is outside 25.0-45.0",
                    value=24.5,
                    floor=25.0,  # below the range: its alarm is high
                ),
            ),
        },
    ),
    "v2-pulse-kept-beside-a-flat-pressure": Good(
        body2(pulse=0, bp="35/35"),
        {
            "pulse": 0,
            "systolic": None,
            "diastolic": None,
            "map": None,
            "refused": (
                SignRefusal(
                    ("bp",), "implausible", "'bp' 35/35: systolic must be above diastolic", 35
                ),
            ),
        },
    ),
    "v2-map-sent-outside-the-bp-drops-both": Good(
        body2(spo2=80, bp="120/80", map=121),
        {
            "spo2": 80,
            "systolic": None,
            "diastolic": None,
            "map": None,
            "refused": (
                SignRefusal(
                    ("bp", "map"),
                    "implausible",
                    "'map' 121 with 'bp' 120/80: the mean must lie between diastolic and systolic",
                    121,
                ),
            ),
        },
    ),
    "v2-two-signs-refused-one-kept": Good(
        body2(resp_rate=0, bp="25/15", spo2=101),
        {
            "resp_rate": 0,
            "systolic": None,
            "spo2": None,
            "refused": (
                SignRefusal(("bp",), "out_of_range", "'systolic' 25 is outside 30-300", 25, 30),
                SignRefusal(("spo2",), "out_of_range", "'spo2' 101 is outside 0-100", 101),
            ),
        },
    ),
    "v2-map-without-bp": Good(body2(map=64), {"map": 64, "systolic": None, "diastolic": None}),
    "v2-probe-off-drops-the-spo2-sent": Good(
        body2(pulse=72, spo2=0, artefact="spo2_probe_off"),
        {"pulse": 72, "spo2": None, "artefact": "spo2_probe_off"},
    ),
    "v2-probe-off-without-spo2": Good(
        body2(pulse=72, artefact="spo2_probe_off"), {"spo2": None, "artefact": "spo2_probe_off"}
    ),
    "v2-motion-keeps-the-spo2": Good(
        body2(spo2=93, artefact="motion"), {"spo2": 93, "artefact": "motion"}
    ),
    "v2-optional-fields-as-in-v1": Good(
        body2(temperature=38.25, on_oxygen=True, consciousness="C"),
        {"temperature": 38.2, "on_oxygen": True, "consciousness": "C", "pulse": None},
    ),
    "v2-schema-version-2.0": Good(body2(schema_version=2.0, etco2=40), {"schema_version": 2}),
    **{
        f"v2-{sign.key}-at-{edge}": Good(
            body2(**{sign.key: sign.plausible[i]}), {sign.key: sign.plausible[i]}
        )
        for sign in SIGNS
        if sign.wire is None
        for i, edge in enumerate(("lowest", "highest"))
    },
}
# The corpus's valid hostile messages: names with SQL or HTML in them, duplicates.
GOOD_CASES |= {
    f"hostile/{name}": Good(case.value, case.stored, key=case.key)
    for name, case in CORPUS.items()
    if not case.reason
}


def test_corpus_is_written_for_this_clock():
    assert CORPUS_NOW == NOW


def test_no_case_is_defined_twice():
    """One source of truth: a message is a case here or in the corpus, not in both."""
    messages = Counter((case.key, case.value) for case in [*BAD.values(), *GOOD_CASES.values()])
    repeated = {message for message, count in messages.items() if count > 1}
    # A duplicate reading is, on purpose, the same message as the reading it duplicates.
    corpus_copies = {(case.key, case.value) for case in CORPUS.values() if case.duplicate_of}
    assert repeated <= corpus_copies


@pytest.mark.parametrize("case", GOOD_CASES.values(), ids=GOOD_CASES.keys())
def test_good_message_is_accepted(case: Good):
    reading = parse(case.value, key=case.key)

    for name, expected in case.expected.items():
        assert getattr(reading, name) == expected, name
    assert reading.schema_version in SCHEMA_VERSIONS
    for key in SIGN_KEYS:
        value = getattr(reading, key)
        if value is None:  # not measured: version 2 only, or not a version 1 sign
            assert reading.schema_version == 2 or key == "etco2", key
            continue
        assert type(value) is (int if SIGN_BY_KEY[key].is_integer else float), key
        low, high = SIGN_BY_KEY[key].plausible
        assert low <= value <= high, key
    if reading.temperature is not None:
        assert reading.temperature == round(reading.temperature, 1)
    assert any(value is not None for value in reading.signs.values())
    assert reading.measured_at.utcoffset() is not None
    assert type(reading.on_oxygen) is bool
    assert reading.consciousness in CONSCIOUSNESS_LEVELS
    assert reading.artefact is None or reading.artefact in ARTEFACTS


def test_good_cases_check_every_reading_attribute():
    # All but sent_at, which is not in the message's value (the consumer passes the Kafka
    # timestamp): reading_parse sets it as given.
    assert set(GOOD_CASES["canonical"].expected) == set(Reading.__slots__) - {"sent_at"}
    sent_at = datetime(2026, 11, 23, 10, 15, 31, tzinfo=UTC)
    assert parse(body()).sent_at is None
    assert reading_parse(key=KEY, value=body(), now=NOW, sent_at=sent_at).sent_at == sent_at


def test_optional_fields_absent_mean_room_air_alert_no_artefact():
    """What every producer older than the optional fields sends."""
    reading = parse(body())

    assert not set(OPTIONAL_FIELDS) & set(GOOD)
    assert reading.on_oxygen is False
    assert reading.consciousness == "A"
    assert reading.artefact is None
    assert reading == GOOD_READING


# --- Building messages ---------------------------------------------------------------------------


def test_message_round_trip():
    key, value = reading_to_message(GOOD_READING)

    assert key == b"0b8e7f4c-3f1a-5d0e-9a53-6c1f2e4b7a10"
    assert value == (
        b'{"schema_version":1,"patient_uuid":"0b8e7f4c-3f1a-5d0e-9a53-6c1f2e4b7a10",'
        b'"patient_name":"bob","timestamp":"2026-11-23T10:15:30.250+00:00","pulse":72,'
        b'"resp_rate":14,"bp":"120/80","spo2":98,"temperature":36.8,'
        b'"on_oxygen":false,"consciousness":"A"}'
    )
    assert tuple(json.loads(value)) == (*FIELDS, "on_oxygen", "consciousness")
    assert reading_parse(key=key, value=value, now=NOW) == GOOD_READING


def test_message_round_trip_with_the_optional_fields():
    reading = replace(GOOD_READING, on_oxygen=True, consciousness="P", artefact="spo2_probe_off")
    key, value = reading_to_message(reading)

    assert value == (
        b'{"schema_version":1,"patient_uuid":"0b8e7f4c-3f1a-5d0e-9a53-6c1f2e4b7a10",'
        b'"patient_name":"bob","timestamp":"2026-11-23T10:15:30.250+00:00","pulse":72,'
        b'"resp_rate":14,"bp":"120/80","spo2":98,"temperature":36.8,'
        b'"on_oxygen":true,"consciousness":"P","artefact":"spo2_probe_off"}'
    )
    assert tuple(json.loads(value)) == FIELDS + OPTIONAL_FIELDS
    assert reading_parse(key=key, value=value, now=NOW) == reading


@pytest.mark.parametrize("on_oxygen", [False, True], ids=["air", "oxygen"])
@pytest.mark.parametrize("consciousness", CONSCIOUSNESS_LEVELS)
@pytest.mark.parametrize("artefact", [None, *ARTEFACTS], ids=["no-artefact", *ARTEFACTS])
def test_optional_fields_round_trip(on_oxygen: bool, consciousness: str, artefact: str | None):
    reading = replace(
        GOOD_READING, on_oxygen=on_oxygen, consciousness=consciousness, artefact=artefact
    )
    key, value = reading_to_message(reading)
    data = json.loads(value)

    assert data["on_oxygen"] is on_oxygen
    assert data["consciousness"] == consciousness
    # Written only when set: a message without it means no artefact.
    assert data.get("artefact", "absent") == (artefact or "absent")
    assert schema_errors(data) == []
    assert reading_parse(key=key, value=value, now=NOW) == reading


@pytest.mark.parametrize(
    ("changes", "field_name", "expected"),
    [
        pytest.param(
            {
                "measured_at": datetime(
                    2026, 11, 23, 12, 15, 30, 250_000, tzinfo=timezone(timedelta(hours=2))
                )
            },
            "timestamp",
            "2026-11-23T10:15:30.250+00:00",
            id="timestamp-converted-to-utc",
        ),
        pytest.param(
            {"measured_at": utc(2026, 11, 23, 10, 15, 30)},
            "timestamp",
            "2026-11-23T10:15:30.000+00:00",
            id="timestamp-whole-second-has-milliseconds",
        ),
        pytest.param(
            {"measured_at": utc(2026, 11, 23, 10, 15, 30, 250_999)},
            "timestamp",
            "2026-11-23T10:15:30.250+00:00",
            id="timestamp-microseconds-truncated",
        ),
        pytest.param({"temperature": 36.849}, "temperature", 36.8, id="temperature-one-decimal"),
        pytest.param({"temperature": 38.96}, "temperature", 39.0, id="temperature-rounds-up"),
        pytest.param({"systolic": 90, "diastolic": 60}, "bp", "90/60", id="bp-format"),
        pytest.param({"patient_name": "Zoë 李雷"}, "patient_name", "Zoë 李雷", id="name-unicode"),
        pytest.param({}, "on_oxygen", False, id="on-oxygen-default-false"),
        pytest.param({"on_oxygen": True}, "on_oxygen", True, id="on-oxygen-true"),
        pytest.param({}, "consciousness", "A", id="consciousness-default-a"),
        pytest.param({"consciousness": "C"}, "consciousness", "C", id="consciousness-c"),
    ],
)
def test_message_field_format(changes: dict, field_name: str, expected: Any):
    _, value = reading_to_message(replace(GOOD_READING, **changes))

    assert json.loads(value)[field_name] == expected
    # on_oxygen and consciousness always written; artefact only when set.
    assert tuple(json.loads(value)) == (*FIELDS, "on_oxygen", "consciousness")


@pytest.mark.parametrize("artefact", ARTEFACTS)
def test_message_writes_artefact_only_when_set(artefact: str):
    _, without = reading_to_message(GOOD_READING)
    _, with_artefact = reading_to_message(replace(GOOD_READING, artefact=artefact))

    assert "artefact" not in json.loads(without)
    assert b'"artefact"' not in without
    assert json.loads(with_artefact)["artefact"] == artefact
    assert tuple(json.loads(with_artefact)) == FIELDS + OPTIONAL_FIELDS


def test_message_is_compact_utf8_json():
    _, value = reading_to_message(replace(GOOD_READING, patient_name="Zoë 李雷"))

    assert "Zoë 李雷".encode() in value  # raw UTF-8, not \u escapes
    assert b": " not in value
    assert b", " not in value


def test_message_with_microseconds_round_trips_to_the_millisecond():
    reading = replace(GOOD_READING, measured_at=utc(2026, 11, 23, 10, 15, 30, 250_999))
    key, value = reading_to_message(reading)

    parsed = reading_parse(key=key, value=value, now=NOW)

    assert parsed == replace(reading, measured_at=utc(2026, 11, 23, 10, 15, 30, 250_000))


def test_message_v2_writes_only_the_signs_measured_in_the_registry_s_order():
    reading = replace(
        GOOD_V2_READING, resp_rate=None, spo2=None, temperature=None, etco2=None, on_oxygen=True
    )
    key, value = reading_to_message(reading)

    assert value == (
        b'{"schema_version":2,"patient_uuid":"0b8e7f4c-3f1a-5d0e-9a53-6c1f2e4b7a10",'
        b'"patient_name":"bob","timestamp":"2026-11-23T10:15:30.250+00:00","pulse":72,'
        b'"bp":"120/80","map":91,"on_oxygen":true,"consciousness":"A"}'
    )
    assert reading_parse(key=key, value=value, now=NOW) == reading


def test_message_v2_with_every_sign_round_trips():
    key, value = reading_to_message(GOOD_V2_READING)

    assert tuple(json.loads(value)) == (*FIELDS_V2, "on_oxygen", "consciousness")
    assert reading_parse(key=key, value=value, now=NOW) == GOOD_V2_READING


def test_message_v2_with_the_probe_off_sends_no_spo2():
    reading = replace(GOOD_V2_READING, spo2=None, artefact="spo2_probe_off")
    _, value = reading_to_message(replace(reading, spo2=0))

    assert "spo2" not in json.loads(value)
    assert json.loads(value)["artefact"] == "spo2_probe_off"
    assert parse(value) == reading


def test_v1_reading_without_map_parses_with_the_computed_map():
    """The parser fills MAP in; a Reading built without one has none (the builder's choice)."""
    reading = replace(GOOD_READING, map=None)
    key, value = reading_to_message(reading)

    assert reading_parse(key=key, value=value, now=NOW) == replace(reading, map=93)
    assert map_from_bp(120, 80) == 93


def test_ranges_are_the_registry_s():
    assert INT_RANGES == {
        "pulse": (0, 300),
        "resp_rate": (0, 100),
        "systolic": (30, 300),
        "diastolic": (10, 250),
        "map": (15, 280),
        "spo2": (0, 100),
        "etco2": (0, 150),
    }
    assert TEMPERATURE_RANGE == (25.0, 45.0)
    assert {key: SIGN_BY_KEY[key].plausible for key in INT_RANGES} == INT_RANGES


# --- Agreement with the JSON Schema --------------------------------------------------------------

SCHEMA = reading_schema(1)
SCHEMA_V2 = reading_schema(2)
VALIDATORS = {1: Draft202012Validator(SCHEMA), 2: Draft202012Validator(SCHEMA_V2)}
NOT_JSON = object()


def _reject_constant(name: str) -> None:
    raise ValueError(name)


def schema_instance(value: bytes | None) -> Any:
    """The JSON document in `value` as a JSON Schema validator sees it, or NOT_JSON.

    Duplicate fields collapse to the last one: the schema cannot see them."""
    if not value:
        return NOT_JSON
    try:
        return json.loads(value.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return NOT_JSON


def python_re_differs_from_ecma(instance: Any) -> bool:
    """Whether the jsonschema package may accept a string the schema, read per the spec, rejects.

    JSON Schema patterns are ECMA-262 regexes; jsonschema runs them with Python's `re.search`,
    where `$` also matches before a final newline and `\\d` matches any Unicode digit. The
    parser follows the spec (fullmatch, ASCII digits)."""
    return isinstance(instance, dict) and any(
        isinstance(text, str)
        and (text.endswith("\n") or any(c.isdigit() and not c.isascii() for c in text))
        for text in instance.values()
    )


def without_refused_signs(instance: Any, reading: Reading) -> Any:
    """The message as the contract kept it: the fields of the signs it refused taken out (a
    version 2 reading keeps its other signs); what the schema must then accept."""
    refused = {name for refusal in reading.refused for name in refusal.fields}
    return {name: value for name, value in instance.items() if name not in refused}


def schema_errors(instance: Any) -> list[str]:
    """The errors of the schema of the instance's version (version 1's for any other)."""
    version = instance.get("schema_version") if isinstance(instance, dict) else None
    validator = VALIDATORS[2 if version == 2 and not isinstance(version, bool) else 1]
    return [error.message for error in validator.iter_errors(instance)]


# Why the parser may reject what the schema accepts: each reason, and how to recognise the case.
SCHEMA_CANNOT_EXPRESS = {
    "payload_too_large": lambda message: "the limit is" in message,  # size of the bytes
    "duplicate_field": lambda message: "appears more than once" in message,  # decoded object
    "key_mismatch": lambda message: "key" in message,  # the key is not part of the value
    "missing_key": lambda message: "no key" in message,
    "implausible": lambda message: (
        "systolic must be above diastolic" in message or "the mean must lie between" in message
    ),
    "out_of_range": lambda message: "'systolic'" in message or "'diastolic'" in message,
    "timestamp_in_future": lambda message: "consumer's clock" in message,
    "timestamp_too_old": lambda message: "before 2000" in message,
    "invalid_timestamp": lambda message: "is not a real time" in message,  # pattern, not calendar
    "invalid_name": lambda message: "lone surrogate" in message or "after NFC" in message,
}


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_schema_is_a_valid_draft_2020_12_schema(version: int):
    Draft202012Validator.check_schema(reading_schema(version))
    assert reading_schema(version)["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_schema_file_is_the_schema_built_from_the_registry(version: int):
    """The shipped file, byte for byte. After a change to the registry or the contract:
    `DJANGO_SETTINGS_MODULE=icu.settings python -m vitals.contract` writes them again."""
    assert schema_path(version).read_text(encoding="utf-8") == schema_text(version)
    assert json.loads(schema_path(version).read_text(encoding="utf-8")) == reading_schema(version)


def test_schema_v2_fields_are_the_registry_s_signs():
    properties = SCHEMA_V2["properties"]

    assert tuple(SCHEMA_V2["required"]) == HEADER_FIELDS
    assert tuple(properties) == FIELDS_V2 + OPTIONAL_FIELDS
    assert SIGN_FIELDS == ("pulse", "resp_rate", "bp", "map", "spo2", "temperature", "etco2")
    assert SCHEMA_V2["additionalProperties"] is False
    assert properties["schema_version"]["const"] == 2
    for sign in SIGNS:
        if sign.wire is None:
            kind = "integer" if sign.is_integer else "number"
            assert properties[sign.key]["type"] == [kind, "null"], sign.key
            assert (properties[sign.key]["minimum"], properties[sign.key]["maximum"]) == (
                sign.plausible
            )
    assert properties["bp"]["type"] == ["string", "null"]
    assert properties["bp"]["pattern"] == SCHEMA["properties"]["bp"]["pattern"]
    # The v1 fields keep their v1 definitions but for null.
    for name in (*HEADER_FIELDS[1:], "consciousness", "on_oxygen"):
        assert properties[name] == SCHEMA["properties"][name], name
    # At least one sign measured, a SpO2 not with the probe off.
    assert [branch["required"] for branch in SCHEMA_V2["anyOf"]] == [[n] for n in SIGN_FIELDS]


@pytest.mark.parametrize("index", range(len(SCHEMA_V2["examples"])))
def test_schema_v2_examples_are_accepted_by_the_parser(index: int):
    example = SCHEMA_V2["examples"][index]

    reading = parse(json.dumps(example).encode(), key=example["patient_uuid"].encode())

    assert reading.schema_version == 2
    assert reading.pulse == example["pulse"]
    assert schema_errors(example) == []


def test_schema_fields_match_the_contract():
    assert tuple(SCHEMA["required"]) == FIELDS
    assert tuple(SCHEMA["properties"]) == FIELDS + OPTIONAL_FIELDS
    assert SCHEMA["additionalProperties"] is False
    assert SCHEMA["properties"]["schema_version"] == {
        "const": 1,
        "description": "Version of this contract.",
    }


def test_schema_optional_fields_match_the_contract():
    properties = SCHEMA["properties"]
    defaults = {f.name: f.default for f in fields(Reading) if f.name in OPTIONAL_FIELDS}

    assert properties["on_oxygen"]["type"] == "boolean"
    assert properties["consciousness"]["enum"] == list(CONSCIOUSNESS_LEVELS)
    assert properties["artefact"]["enum"] == [*ARTEFACTS, None]
    # The schema's documented defaults are what the parser assumes for an absent field.
    assert {name: properties[name]["default"] for name in OPTIONAL_FIELDS} == defaults
    assert defaults == {"on_oxygen": False, "consciousness": "A", "artefact": None}
    assert not set(OPTIONAL_FIELDS) & set(SCHEMA["required"])


@pytest.mark.parametrize("name", ["pulse", "resp_rate", "spo2"])
def test_schema_integer_ranges_match_the_contract(name: str):
    prop = SCHEMA["properties"][name]
    assert prop["type"] == "integer"
    assert (prop["minimum"], prop["maximum"]) == INT_RANGES[name]


def test_schema_temperature_and_name_limits_match_the_contract():
    temperature = SCHEMA["properties"]["temperature"]
    assert (temperature["minimum"], temperature["maximum"]) == TEMPERATURE_RANGE
    name = SCHEMA["properties"]["patient_name"]
    assert (name["minLength"], name["maxLength"]) == (1, NAME_MAX_LENGTH)
    assert str(MAX_VALUE_BYTES // 1024) + " KiB" in SCHEMA["description"]


def test_schema_name_pattern_is_the_parsers_rule():
    """One text for both: the parser's character classes, as an ECMA-262 pattern."""
    assert SCHEMA["properties"]["patient_name"]["pattern"] == NAME_PATTERN
    assert "\\u202e" in NAME_PATTERN  # \u escapes, not the characters
    assert "\\u0085" not in NAME_PATTERN  # C1 as a range
    assert NAME_PATTERN.isascii()


@pytest.mark.parametrize("index", range(len(SCHEMA["examples"])))
def test_schema_examples_are_accepted_by_the_parser(index: int):
    example = SCHEMA["examples"][index]
    value = json.dumps(example).encode()

    reading = parse(value, key=example["patient_uuid"].encode())

    assert reading.patient_name == example["patient_name"]
    assert reading.bp == example["bp"]
    assert schema_errors(example) == []


@pytest.mark.parametrize(
    "reading",
    [
        pytest.param(GOOD_READING, id="normal"),
        pytest.param(
            replace(
                GOOD_READING,
                pulse=0,
                resp_rate=0,
                spo2=0,
                systolic=31,
                diastolic=30,
                temperature=25.0,
                map=30,
            ),
            id="lowest",
        ),
        pytest.param(
            replace(
                GOOD_READING,
                pulse=300,
                resp_rate=100,
                spo2=100,
                systolic=300,
                diastolic=250,
                temperature=45.0,
                map=267,
            ),
            id="highest",
        ),
        pytest.param(GOOD_V2_READING, id="v2-every-sign"),
        pytest.param(
            replace(
                GOOD_V2_READING,
                **{key: SIGN_BY_KEY[key].plausible[0] for key in SIGN_KEYS} | {"systolic": 31},
            ),
            id="v2-lowest",
        ),
        pytest.param(
            replace(GOOD_V2_READING, **{key: SIGN_BY_KEY[key].plausible[1] for key in SIGN_KEYS}),
            id="v2-highest",
        ),
        pytest.param(
            replace(GOOD_V2_READING, **dict.fromkeys(SIGN_KEYS) | {"etco2": 45}),
            id="v2-etco2-alone",
        ),
        pytest.param(
            replace(GOOD_V2_READING, systolic=None, diastolic=None, map=None, artefact="motion"),
            id="v2-no-bp",
        ),
        pytest.param(replace(GOOD_READING, patient_name="Zoë 🫀" * 20), id="unicode-name"),
        pytest.param(
            replace(GOOD_READING, on_oxygen=True, consciousness="U", artefact="motion"),
            id="optional-fields-set",
        ),
        pytest.param(
            replace(
                GOOD_READING,
                measured_at=datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-11))),
            ),
            id="non-utc-time",
        ),
    ],
)
def test_built_message_validates_against_schema(reading: Reading):
    key, value = reading_to_message(reading)

    assert schema_errors(json.loads(value)) == []
    assert reading_parse(key=key, value=value, now=NOW) == reading


@pytest.mark.parametrize("case", GOOD_CASES.values(), ids=GOOD_CASES.keys())
def test_accepted_message_validates_against_schema(case: Good):
    reading = parse(case.value, key=case.key)  # accepted

    instance = schema_instance(case.value)

    assert instance is not NOT_JSON
    assert schema_errors(without_refused_signs(instance, reading)) == []


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_rejected_message_is_rejected_by_schema_or_documented(case: Bad):
    """The parser is exactly as strict as the schema, plus the checks the schema cannot express."""
    with pytest.raises(InvalidReading) as caught:
        parse(case.value, key=case.key)
    reason, message = caught.value.reason, caught.value.message

    instance = schema_instance(case.value)
    if instance is NOT_JSON:
        # Not a JSON document (or too deep or long-numbered for Python): nothing to validate.
        assert reason in {"empty_message", "payload_too_large", "invalid_encoding", "invalid_json"}
    elif python_re_differs_from_ecma(instance):
        assert reason in {"invalid_uuid", "invalid_timestamp", "invalid_bp"}, message
    elif schema_errors(instance) == []:
        assert reason in SCHEMA_CANNOT_EXPRESS, f"schema accepts what the parser rejects: {message}"
        assert SCHEMA_CANNOT_EXPRESS[reason](message), message


# --- Fuzzing -------------------------------------------------------------------------------------

FUZZ_CHARS = "aZ09 /:-+.TZ\n\t\x00\x7f\x85é李🫀\u2028\ufeff\ud800\u0661\u202e\u200b\u3164\u0301"
JUNK = (
    None,
    True,
    False,
    0,
    -1,
    1,
    1.0,
    72.5,
    -0.0,
    1e308,
    10**20,
    "",
    " ",
    "72",
    "120/80",
    "x" * 300,
    [],
    {},
    [72],
    {"pulse": 72},
    float("nan"),
    float("inf"),
    PATIENT,
)
INT_FIELDS = ("pulse", "resp_rate", "spo2")
OPTIONAL_VALID = {
    "on_oxygen": (True, False),
    "consciousness": CONSCIOUSNESS_LEVELS,
    "artefact": (*ARTEFACTS, None),
}
OPTIONAL_INVALID = {
    "on_oxygen": (None, 1, "true"),
    "consciousness": (None, "a", "X", "", 1),
    "artefact": ("dropout", "MOTION", "", False),
}
STRING_FIELDS = ("patient_uuid", "patient_name", "timestamp", "bp")


def random_valid(rng: random.Random) -> dict[str, Any]:
    offset = timezone(timedelta(minutes=15 * rng.randint(-48, 56)))
    # Recent, up to 30 years ago (some before 2000), or up to 10 minutes ahead of NOW.
    ago = timedelta(seconds=rng.uniform(0, rng.choice((30 * 86400, 30 * 365 * 86400, -600))))
    measured_at = (NOW - ago).astimezone(offset)
    timestamp = measured_at.isoformat(
        timespec=rng.choice(["seconds", "milliseconds", "microseconds"])
    )
    systolic = rng.randint(31, 300)
    data = {
        "schema_version": 1,
        "patient_uuid": str(uuid.UUID(int=rng.getrandbits(128))),
        "patient_name": rng.choice(["bob", " Zoë Ærø ", "李雷", "x" * 200, "O'Brien"]),
        "timestamp": timestamp.replace("+00:00", "Z") if rng.random() < 0.5 else timestamp,
        "pulse": rng.randint(0, 300),
        "resp_rate": rng.randint(0, 100),
        "bp": f"{systolic}/{rng.randint(10, min(250, systolic - 1))}",
        "spo2": rng.randint(0, 100),
        "temperature": round(rng.uniform(25, 45), 1),
        # Each optional field absent half of the time, as older producers send.
        **{
            name: rng.choice(values)
            for name, values in OPTIONAL_VALID.items()
            if rng.random() < 0.5
        },
    }
    if rng.random() < 0.5:
        # Version 2: each sign measured, null or absent; MAP and etCO2 too.
        data |= {"schema_version": 2, "map": rng.randint(15, 280), "etco2": rng.randint(0, 150)}
        for name in SIGN_FIELDS:
            roll = rng.random()
            if roll < 0.3:
                del data[name]
            elif roll < 0.45:
                data[name] = None
    return data


def mutate_fields(rng: random.Random, data: dict[str, Any]) -> None:
    name = rng.choice(FIELDS_V2)
    match rng.randrange(8):
        case 0:
            data.pop(name, None)
        case 1:
            data[name] = rng.choice(JUNK)
        case 2:
            data[rng.choice((*INT_FIELDS, "map", "etco2"))] = rng.randint(-20, 420)
        case 3 if rng.random() < 0.5:
            data["temperature"] = rng.uniform(20, 50)
        case 3:
            data["bp"] = f"{rng.randint(0, 400)}/{rng.randint(0, 300)}"
        case 4:
            data[rng.choice(("extra", "Pulse", ""))] = 1
        case 5:
            name = rng.choice(OPTIONAL_FIELDS)
            data[name] = rng.choice(OPTIONAL_VALID[name] + OPTIONAL_INVALID[name])
        case _:
            name = rng.choice(STRING_FIELDS)
            text = data.get(name)
            if isinstance(text, str) and text:
                at = rng.randrange(len(text) + 1)
                if rng.random() < 0.5:
                    data[name] = text[:at] + rng.choice(FUZZ_CHARS) + text[at:]
                else:
                    data[name] = text[:at] + text[at + 1 :]


def mutate_bytes(rng: random.Random, value: bytes) -> bytes | None:
    match rng.randrange(6):
        case 0:
            return value[: rng.randrange(len(value))]
        case 1:
            at = rng.randrange(len(value))
            return value[:at] + bytes([rng.randrange(256)]) + value[at + 1 :]
        case 2:
            at = rng.randrange(len(value))
            return value[:at] + rng.randbytes(rng.randint(1, 4)) + value[at:]
        case 3:
            return value[:-1] + b', "' + rng.choice(FIELDS).encode() + b'": 1}'
        case 4:
            return rng.randbytes(rng.randrange(64))
        case _:
            return rng.choice([None, b"", b"{}", b"[]", b"null"])


def random_message(rng: random.Random) -> tuple[bytes | None, bytes | None]:
    data = random_valid(rng)
    key = data["patient_uuid"].encode()
    for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
        mutate_fields(rng, data)
    text = json.dumps(
        data,
        ensure_ascii=rng.random() < 0.5,
        separators=rng.choice([(",", ":"), (", ", ": ")]),
    )
    value: bytes | None = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.3:
        value = mutate_bytes(rng, value)
    roll = rng.random()
    if roll < 0.1:
        key = None
    elif roll < 0.15:
        key = OTHER_PATIENT.encode()
    elif roll < 0.2:
        key = rng.randbytes(rng.randrange(40))
    return key, value


def parse_or_error(key: bytes | None, value: bytes | None) -> Reading | InvalidReading:
    try:
        return reading_parse(key=key, value=value, now=NOW)
    except InvalidReading as exc:
        return exc


@pytest.mark.parametrize("seed", [1, 2, 3, 4], ids=lambda seed: f"seed-{seed}")
def test_fuzz_parse_returns_reading_or_invalid_reading(seed: int):
    rng = random.Random(seed)
    accepted = 0
    reasons: set[str] = set()
    for _ in range(1000):
        key, value = random_message(rng)
        # Any exception but InvalidReading propagates and fails the test.
        reading = parse_or_error(key, value)

        if isinstance(reading, InvalidReading):
            assert reading.reason in PARSER_REASONS, (key, value)
            assert reading.message, (key, value)
            reasons.add(reading.reason)
            continue
        instance = schema_instance(value)
        accepted += 1
        reasons.update(refusal.reason for refusal in reading.refused)
        assert instance is not NOT_JSON, value
        assert schema_errors(without_refused_signs(instance, reading)) == [], value
        again_key, again_value = reading_to_message(reading)
        again = reading_parse(key=again_key, value=again_value, now=NOW)
        millis = reading.measured_at.microsecond // 1000 * 1000
        assert again == replace(
            reading, measured_at=reading.measured_at.replace(microsecond=millis), refused=()
        )

    # The fuzz must explore both sides of the contract, or it tests nothing.
    assert 100 <= accepted <= 500
    assert len(reasons) >= 17, sorted(reasons)


@pytest.mark.parametrize("seed", [5, 6], ids=lambda seed: f"seed-{seed}")
def test_fuzz_schema_rejections_are_parser_rejections(seed: int):
    """Direction schema -> parser on generated JSON: what the schema rejects, the parser does,
    or (version 2) it refuses the signs that break the schema and keeps the others."""
    rng = random.Random(seed)
    schema_rejected = 0
    for _ in range(1000):
        key, value = random_message(rng)
        instance = schema_instance(value)
        if instance is NOT_JSON or schema_errors(instance) == []:
            continue
        schema_rejected += 1
        result = parse_or_error(key, value)
        if isinstance(result, Reading):
            assert result.refused, value
            assert schema_errors(without_refused_signs(instance, result)) == [], value
        else:
            assert result.reason in PARSER_REASONS

    assert schema_rejected >= 200
