"""The FHIR resources and the FHIR search parameters, without a database: every resource valid
against the R4 models and exactly as the vital-signs profiles ask; the fast templates equal to
the definition; the search parameters' edge cases."""

import io
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from core.exceptions import InvalidParameter
from exports.fhir import (
    KINDS,
    EntryWriter,
    entry,
    iso,
    observation,
    observation_id,
    reading_kinds,
    reading_values,
)
from exports.fhir_search import (
    MAX_COUNT,
    TimeRange,
    code_kinds,
    count_parse,
    cursor_decode,
    cursor_encode,
    date_range,
)
from exports.tests.checks import check_observation, expected_codes, fhir_valid
from exports.writers import CSV_HEADER, csv_write, fhir_write

PATIENT = uuid.UUID("6f1c2a9e-8d4b-4c3e-9f0a-1b2c3d4e5f60")
T0 = datetime(2026, 11, 23, 10, 15, 30, 250000, tzinfo=UTC)


def reading(**values) -> SimpleNamespace:
    base = {
        "measured_at": T0,
        "pulse": 72,
        "resp_rate": 14,
        "systolic": 120,
        "diastolic": 80,
        "map": 93,
        "spo2": 98,
        "temperature": 36.8,
        "etco2": None,
        "on_oxygen": False,
        "consciousness": "A",
        "artefact": "",
        "news2_score": 0,
        "news2_risk": "low",
        "news2_missing": [],
        "spo2_scale": 1,
        "received_at": T0 + timedelta(milliseconds=300),
    }
    return SimpleNamespace(**{**base, **values})


READINGS = [
    reading(),
    # extreme values, a time without fraction, another offset stored as UTC
    reading(
        measured_at=datetime(2026, 11, 23, 11, 0, tzinfo=UTC),
        pulse=0,
        resp_rate=100,
        systolic=300,
        diastolic=10,
        map=107,
        spo2=0,
        temperature=25.0,
        etco2=150,
        on_oxygen=True,
        consciousness="U",
        news2_score=20,
        news2_risk="high",
        spo2_scale=2,
    ),
    reading(measured_at=T0 + timedelta(seconds=5), temperature=38.6, news2_score=5),
    # an artefact: not scored
    reading(
        measured_at=T0 + timedelta(seconds=10),
        spo2=0,
        artefact="spo2_probe_off",
        news2_score=None,
        news2_risk=None,
    ),
    # a partial reading (contract version 2): pulse and SpO2 only, scored incomplete
    reading(
        measured_at=T0 + timedelta(seconds=15),
        resp_rate=None,
        systolic=None,
        diastolic=None,
        map=None,
        temperature=None,
        pulse=88,
        spo2=95,
        news2_score=1,
        news2_missing=["systolic", "temperature"],
    ),
    # a ventilated patient's MAP (an arterial line) and EtCO2 without the cuff's pressures
    reading(
        measured_at=T0 + timedelta(seconds=20),
        systolic=None,
        diastolic=None,
        map=62,
        etco2=48,
    ),
]


def bundle_of(readings, **kwargs) -> dict:
    out = io.StringIO()
    count = fhir_write(
        out,
        patient_uuid=PATIENT,
        patient_name=kwargs.get("name", "Zoë O'Neil"),
        readings=readings,
        bundle_id=uuid.UUID(int=7),
        timestamp=T0,
    )
    assert count == len(readings)
    return json.loads(out.getvalue())


def test_the_bundle_is_a_valid_r4_collection_with_the_patient_and_every_observation():
    bundle = bundle_of(READINGS)

    fhir_valid(bundle)
    assert (bundle["resourceType"], bundle["type"], bundle["id"]) == (
        "Bundle",
        "collection",
        str(uuid.UUID(int=7)),
    )
    assert bundle["identifier"] == {
        "system": "urn:ietf:rfc:3986",
        "value": f"urn:uuid:{uuid.UUID(int=7)}",
    }
    assert bundle["timestamp"] == "2026-11-23T10:15:30.250000Z"
    patient, *observations = bundle["entry"]
    assert patient == {
        "fullUrl": f"urn:uuid:{PATIENT}",
        "resource": {
            "resourceType": "Patient",
            "id": str(PATIENT),
            "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{PATIENT}"}],
            "name": [{"text": "Zoë O'Neil"}],
        },
    }
    fhir_valid(patient["resource"])
    # One Observation per vital sign measured per reading, NEWS2 for the scored ones, in order.
    expected = [(r, code) for r in READINGS for code in expected_codes(r)]
    # Six of each of the first four (one a panel; EtCO2 once; NEWS2 but for the artefact), the
    # partial one's three, the last one's seven.
    assert len(observations) == len(expected) == 6 * 4 + 1 + 3 + 3 + 7
    for item, (source, code) in zip(observations, expected, strict=True):
        assert check_observation(item["resource"], source, patient_uuid=PATIENT) == code
        assert item["fullUrl"] == f"urn:uuid:{item['resource']['id']}"
        assert set(item) == {"fullUrl", "resource"}
    ids = [item["resource"]["id"] for item in observations]
    assert len(set(ids)) == len(ids)


def test_a_bundle_without_readings_holds_the_patient_alone_and_no_empty_array():
    bundle = bundle_of([])
    fhir_valid(bundle)
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == ["Patient"]


def test_the_fast_templates_write_exactly_the_definition():
    """EntryWriter fills pre-rendered templates; they must be the dicts of `observation`."""
    for search in (False, True):
        writer = EntryWriter(patient_uuid=PATIENT, kinds=KINDS, search=search)
        for source in [*READINGS, reading(artefact='odd "quoted" \\ %s artefact')]:
            kinds = reading_kinds(source, KINDS)
            values = reading_values(source, namespace=PATIENT, kinds=KINDS)
            defined = [
                entry(observation(KINDS[k], values, patient_uuid=PATIENT), search=search)
                for k in kinds
            ]
            assert [json.loads(text) for text in writer.entries(source)] == defined


def test_observation_ids_are_uuid5_of_the_patient_time_and_code_and_stable():
    effective = iso(T0)
    assert observation_id(PATIENT, effective, "8867-4") == str(
        uuid.uuid5(PATIENT, f"{effective}|8867-4")
    )
    for n in range(2000):  # every variant nibble and then some
        name = f"2026-11-23T10:15:{n}Z"
        assert observation_id(PATIENT, name, "x") == str(uuid.uuid5(PATIENT, f"{name}|x"))
    first = [e["resource"]["id"] for e in bundle_of(READINGS)["entry"]]
    assert [e["resource"]["id"] for e in bundle_of(READINGS, name="renamed")["entry"]] == first


def test_the_csv_has_a_stable_header_with_units_and_one_row_per_reading():
    out = io.StringIO(newline="")
    assert csv_write(out, patient_uuid=PATIENT, readings=READINGS[:2]) == 2
    # The first CSV's columns, then those of the signs registered since, then news2_missing.
    assert CSV_HEADER == (
        "patient_uuid",
        "measured_at",
        "pulse_per_min",
        "resp_rate_per_min",
        "systolic_mmhg",
        "diastolic_mmhg",
        "spo2_percent",
        "temperature_celsius",
        "on_oxygen",
        "consciousness_acvpu",
        "artefact",
        "news2_score",
        "news2_risk",
        "news2_spo2_scale",
        "received_at",
        "map_mmhg",
        "etco2_mmhg",
        "news2_missing",
    )
    assert out.getvalue().split("\r\n") == [
        ",".join(CSV_HEADER),
        f"{PATIENT},2026-11-23T10:15:30.250000Z,72,14,120,80,98,36.8,false,A,,0,low,1,"
        "2026-11-23T10:15:30.550000Z,93,,",
        f"{PATIENT},2026-11-23T11:00:00Z,0,100,300,10,0,25.0,true,U,,20,high,2,"
        "2026-11-23T10:15:30.550000Z,107,150,",
        "",
    ]
    out = io.StringIO(newline="")
    csv_write(out, patient_uuid=PATIENT, readings=[READINGS[3]])
    assert (
        out.getvalue()
        .splitlines()[1]
        .endswith(",spo2_probe_off,,,1,2026-11-23T10:15:30.550000Z,93,,")
    )


def test_a_sign_not_measured_is_an_empty_cell_in_the_csv():
    out = io.StringIO(newline="")
    assert csv_write(out, patient_uuid=PATIENT, readings=READINGS[4:]) == 2
    assert out.getvalue().split("\r\n")[1:] == [
        f"{PATIENT},2026-11-23T10:15:45.250000Z,88,,,,95,,false,A,,1,low,1,"
        "2026-11-23T10:15:30.550000Z,,,systolic temperature",
        f"{PATIENT},2026-11-23T10:15:50.250000Z,72,14,,,98,36.8,false,A,,0,low,1,"
        "2026-11-23T10:15:30.550000Z,62,48,",
        "",
    ]


def test_a_partial_reading_has_exactly_the_observations_of_the_signs_it_measured():
    _, *observations = bundle_of([READINGS[4]])["entry"]
    assert [
        (o["resource"]["code"]["coding"][0]["code"], o["resource"]["valueQuantity"]["value"])
        for o in observations
    ] == [("8867-4", 88), ("2708-6", 95), ("1104051000000101", 1)]


def test_map_and_etco2_are_observations_of_their_own_and_no_panel_without_both_halves():
    _, *observations = bundle_of([READINGS[5]])["entry"]
    by_code = {o["resource"]["code"]["coding"][0]["code"]: o["resource"] for o in observations}
    # No blood-pressure panel (85354-9): neither half was measured.
    assert list(by_code) == [
        "8867-4",
        "9279-1",
        "8478-0",
        "2708-6",
        "8310-5",
        "19889-5",
        "1104051000000101",
    ]
    common = {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                        "display": "Vital Signs",
                    }
                ],
                "text": "Vital Signs",
            }
        ],
        "subject": {
            "reference": f"urn:uuid:{PATIENT}",
            "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{PATIENT}"},
        },
        "effectiveDateTime": "2026-11-23T10:15:50.250000Z",
    }
    assert by_code["8478-0"] == {
        **common,
        "id": observation_id(PATIENT, "2026-11-23T10:15:50.250000Z", "8478-0"),
        "code": {
            "coding": [
                {"system": "http://loinc.org", "code": "8478-0", "display": "Mean blood pressure"}
            ],
            "text": "Mean arterial pressure",
        },
        "valueQuantity": {
            "value": 62,
            "unit": "mmHg",
            "system": "http://unitsofmeasure.org",
            "code": "mm[Hg]",
        },
    }
    assert by_code["19889-5"] == {
        **common,
        "id": observation_id(PATIENT, "2026-11-23T10:15:50.250000Z", "19889-5"),
        "code": {
            "coding": [
                {
                    "system": "http://loinc.org",
                    "code": "19889-5",
                    "display": "Carbon dioxide [Partial pressure] in Exhaled gas --at end "
                    "expiration",
                }
            ],
            "text": "End-tidal CO2",
        },
        "valueQuantity": {
            "value": 48,
            "unit": "mmHg",
            "system": "http://unitsofmeasure.org",
            "code": "mm[Hg]",
        },
    }
    for resource in by_code.values():
        fhir_valid(resource)


# --- the search parameters ---------------------------------------------------------------------
def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], TimeRange(None, None)),
        (["ge2026-11-23T10:00:00Z"], TimeRange(at("2026-11-23T10:00:00+00:00"), None)),
        (["gt2026-11-23T10:00:00Z"], TimeRange(at("2026-11-23T10:00:01+00:00"), None)),
        (["le2026-11-23T10:00:00Z"], TimeRange(None, at("2026-11-23T10:00:01+00:00"))),
        (["lt2026-11-23T10:00:00Z"], TimeRange(None, at("2026-11-23T10:00:00+00:00"))),
        (
            ["2026-11-23T10:00:00.25+01:00"],
            TimeRange(at("2026-11-23T09:00:00.25+00:00"), at("2026-11-23T09:00:00.26+00:00")),
        ),
        (
            ["eq2026-11-23T10:00Z"],
            TimeRange(at("2026-11-23T10:00:00+00:00"), at("2026-11-23T10:01:00+00:00")),
        ),
        (
            ["2026-11-23"],
            TimeRange(at("2026-11-23T00:00:00+00:00"), at("2026-11-24T00:00:00+00:00")),
        ),
        (
            ["ge2026-02", "le2026-02"],
            TimeRange(at("2026-02-01T00:00:00+00:00"), at("2026-03-01T00:00:00+00:00")),
        ),
        (["gt2028"], TimeRange(at("2029-01-01T00:00:00+00:00"), None)),
        (["le2028-02"], TimeRange(None, at("2028-03-01T00:00:00+00:00"))),
        # all must hold: the narrowest bounds win
        (
            ["ge2026-11-23T10:00:00Z", "ge2026-11-23T09:00:00Z", "lt2026-11-24", "le2026-11-30"],
            TimeRange(at("2026-11-23T10:00:00+00:00"), at("2026-11-24T00:00:00+00:00")),
        ),
        (["le9999"], TimeRange(None, None)),
        (
            ["gt9999-12-31"],
            TimeRange(at("9999-12-31T00:00:00+00:00"), at("9999-12-31T00:00:00+00:00")),
        ),
    ],
)
def test_date_search_values_cover_the_range_of_their_precision(values, expected):
    assert date_range(values) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "ge",
        "sa2026-11-23",  # a FHIR prefix this server does not take
        "ap2026-11-23",
        "2026-11-23T10:00:00",  # a time without its offset
        "2026-11-23T10:00",
        "2026-13-01",
        "2026-02-30",
        "2026-11-23T24:00:00Z",
        "2026-11-23 10:00:00Z",
        "yesterday",
        "0000-01-01",
        "0001-01-01T00:00:00+14:00",  # before year 1 in UTC
        "2026-11-23T10:00:00.1234567Z",
    ],
)
def test_malformed_dates_are_refused_naming_the_parameter(value):
    with pytest.raises(InvalidParameter, match=re.escape(f"'date={value}' is not a FHIR")):
        date_range([value])


@pytest.mark.parametrize(
    ("values", "kinds"),
    [
        ([], list(KINDS)),
        (["8867-4"], ["pulse"]),
        (["http://loinc.org|8867-4"], ["pulse"]),
        (["8478-0"], ["map"]),
        (["http://loinc.org|19889-5"], ["etco2"]),
        (["85354-9"], ["blood_pressure"]),
        (["http://snomed.info/sct|8867-4"], []),
        (["|8867-4"], []),
        (["59408-5"], ["spo2"]),
        (["2708-6,8310-5"], ["spo2", "temperature"]),
        (["http://snomed.info/sct|1104051000000101"], ["news2"]),
        (["http://snomed.info/sct|"], ["news2"]),
        (
            ["http://loinc.org|"],
            ["pulse", "resp_rate", "blood_pressure", "map", "spo2", "temperature", "etco2"],
        ),
        (["8867-4,9279-1", "9279-1"], ["resp_rate"]),  # repeated: all must hold
        (["8480-6"], []),  # a component's code is not the Observation's
        (["no-such-code"], []),
    ],
)
def test_code_tokens_select_the_kinds_of_observation(values, kinds):
    assert code_kinds(values) == kinds


@pytest.mark.parametrize(
    ("value", "count"),
    [(None, 100), ("1", 1), ("250", 250), ("1000", 1000), ("5000", MAX_COUNT)],
)
def test_count(value, count):
    assert count_parse(value) == count


@pytest.mark.parametrize("value", ["0", "-1", "", "ten", "1.5"])
def test_bad_counts_are_refused(value):
    with pytest.raises(InvalidParameter, match=f"'_count={value}' is not a page size"):
        count_parse(value)


def test_cursors_round_trip_and_forgeries_are_refused():
    assert cursor_decode(cursor_encode(T0, 3)) == (T0, 3)
    for bad in ["", "!!!", "bm90IGpzb24", cursor_encode(T0, 3)[:-4], "WzEsMl0", "WyJ4IiwgMV0"]:
        with pytest.raises(InvalidParameter, match="is not a cursor this search issued"):
            cursor_decode(bad)
