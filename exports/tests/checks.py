"""What the tests hold every export to.

FHIR: valid against the FHIR R4 (4.0.1) models of fhir.resources, and exactly the codes, units
and values the vital-signs profiles ask for, taken from the reading it claims to show. CSV:
read back, every value equal to the database's.
"""

import csv
import io
import uuid
from datetime import datetime
from typing import Any

from fhir.resources import construct_fhir_element

from exports.fhir import iso
from patients.models import Patient
from vitals.models import PatientMetric

VS = "http://hl7.org/fhir/StructureDefinition/"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

# What each Observation must be, written out independently of exports/fhir.py: its profile,
# category, codings (system, code), and the value's reading field, UCUM unit and code.
EXPECTED: dict[str, dict[str, Any]] = {
    "8867-4": {
        "profile": VS + "heartrate",
        "category": "vital-signs",
        "codings": [(LOINC, "8867-4")],
        "value": ("pulse", "/min"),
    },
    "9279-1": {
        "profile": VS + "resprate",
        "category": "vital-signs",
        "codings": [(LOINC, "9279-1")],
        "value": ("resp_rate", "/min"),
    },
    "2708-6": {
        "profile": VS + "oxygensat",
        "category": "vital-signs",
        "codings": [(LOINC, "2708-6"), (LOINC, "59408-5")],
        "value": ("spo2", "%"),
    },
    "8310-5": {
        "profile": VS + "bodytemp",
        "category": "vital-signs",
        "codings": [(LOINC, "8310-5")],
        "value": ("temperature", "Cel"),
    },
    "85354-9": {
        "profile": VS + "bp",
        "category": "vital-signs",
        "codings": [(LOINC, "85354-9")],
        "components": [("8480-6", "systolic"), ("8462-4", "diastolic")],
    },
    "8478-0": {
        "profile": None,
        "category": "vital-signs",
        "codings": [(LOINC, "8478-0")],
        "value": ("map", "mm[Hg]"),
    },
    "19889-5": {
        "profile": None,
        "category": "vital-signs",
        "codings": [(LOINC, "19889-5")],
        "value": ("etco2", "mm[Hg]"),
    },
    "1104051000000101": {
        "profile": None,
        "category": "survey",
        "codings": [("http://snomed.info/sct", "1104051000000101")],
        "value": ("news2_score", "{score}"),
    },
}


def fhir_valid(resource: dict) -> dict:
    """`resource` unchanged, after checking it against its FHIR R4 model (a ValidationError
    otherwise): types, cardinalities, required elements, no unknown element."""
    construct_fhir_element(resource["resourceType"], resource)
    return resource


def check_observation(resource: dict, reading, *, patient_uuid: uuid.UUID) -> str:
    """Check one Observation against EXPECTED and the reading it shows; returns its primary
    code."""
    fhir_valid(resource)
    codings = [(c["system"], c["code"]) for c in resource["code"]["coding"]]
    expected = EXPECTED[codings[0][1]]
    assert codings == expected["codings"]
    assert all(c["display"] for c in resource["code"]["coding"])
    assert resource["status"] == "final"
    [category] = resource["category"]
    assert [(c["system"], c["code"]) for c in category["coding"]] == [
        (CATEGORY, expected["category"])
    ]
    assert resource.get("meta", {}).get("profile") == (
        [expected["profile"]] if expected["profile"] else None
    )
    urn = f"urn:uuid:{patient_uuid}"
    assert resource["subject"] == {
        "reference": urn,
        "identifier": {"system": "urn:ietf:rfc:3986", "value": urn},
    }
    assert resource["effectiveDateTime"] == iso(reading.measured_at)
    uuid.UUID(resource["id"])
    if "components" in expected:
        assert "valueQuantity" not in resource
        components = [
            (c["code"]["coding"][0]["code"], c["valueQuantity"]) for c in resource["component"]
        ]
        assert [code for code, _ in components] == [code for code, _ in expected["components"]]
        for (_, quantity), (_, field) in zip(components, expected["components"], strict=True):
            assert quantity == {
                "value": getattr(reading, field),
                "unit": "mmHg",
                "system": UCUM,
                "code": "mm[Hg]",
            }
    else:
        field, unit = expected["value"]
        quantity = resource["valueQuantity"]
        assert (quantity["value"], quantity["system"], quantity["code"]) == (
            getattr(reading, field),
            UCUM,
            unit,
        )
        assert type(quantity["value"]) is type(getattr(reading, field))
    if codings[0][1] == "1104051000000101":
        assert resource["interpretation"] == [
            {"text": f"NEWS2 clinical risk: {reading.news2_risk}"}
        ]
    if reading.artefact:
        [note] = resource["note"]
        assert f"sensor artefact ({reading.artefact})" in note["text"]
    else:
        assert "note" not in resource
    return codings[0][1]


# The Observations a reading may have, in the order they come, and the values each shows.
OBSERVATIONS = [
    ("8867-4", ("pulse",)),
    ("9279-1", ("resp_rate",)),
    ("85354-9", ("systolic", "diastolic")),
    ("8478-0", ("map",)),
    ("2708-6", ("spo2",)),
    ("8310-5", ("temperature",)),
    ("19889-5", ("etco2",)),
    ("1104051000000101", ("news2_score",)),
]


def expected_codes(reading) -> list[str]:
    """The Observations a reading must have, in the order they come: those of the values it
    has (the signs measured; NEWS2 when scored)."""
    return [
        code
        for code, names in OBSERVATIONS
        if all(getattr(reading, name) is not None for name in names)
    ]


def stored_readings(patient: Patient, **filters) -> list[PatientMetric]:
    return list(PatientMetric.objects.filter(patient=patient, **filters).order_by("measured_at"))


def check_fhir_export(bundle: dict, patient: Patient, readings: list[PatientMetric]) -> None:
    """A collection Bundle holding the patient and exactly the Observations of `readings`."""
    fhir_valid(bundle)
    assert bundle["type"] == "collection"
    first, *observations = bundle["entry"]
    assert fhir_valid(first["resource"]) == {
        "resourceType": "Patient",
        "id": str(patient.uuid),
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{patient.uuid}"}],
        "name": [{"text": patient.name}],
    }
    expected = [(r, code) for r in readings for code in expected_codes(r)]
    assert len(observations) == len(expected)
    for item, (reading, code) in zip(observations, expected, strict=True):
        assert check_observation(item["resource"], reading, patient_uuid=patient.uuid) == code


def check_csv_export(text: str, patient: Patient, readings: list[PatientMetric]) -> None:
    """One row per reading, in time order, every column read back equal to the database."""
    assert text.startswith("patient_uuid,measured_at,pulse_per_min,")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert len(rows) == len(readings)

    def number(cell: str, kind: type) -> int | float | None:
        return kind(cell) if cell else None  # an empty cell: not measured

    for row, m in zip(rows, readings, strict=True):
        assert {
            "patient_uuid": uuid.UUID(row["patient_uuid"]),
            "measured_at": datetime.fromisoformat(row["measured_at"]),
            "pulse": number(row["pulse_per_min"], int),
            "resp_rate": number(row["resp_rate_per_min"], int),
            "systolic": number(row["systolic_mmhg"], int),
            "diastolic": number(row["diastolic_mmhg"], int),
            "map": number(row["map_mmhg"], int),
            "spo2": number(row["spo2_percent"], int),
            "temperature": number(row["temperature_celsius"], float),
            "etco2": number(row["etco2_mmhg"], int),
            "on_oxygen": {"true": True, "false": False}[row["on_oxygen"]],
            "consciousness": row["consciousness_acvpu"],
            "artefact": row["artefact"],
            "news2_score": number(row["news2_score"], int),
            "news2_risk": row["news2_risk"] or None,
            "news2_missing": row["news2_missing"].split(),
            "spo2_scale": int(row["news2_spo2_scale"]),
            "received_at": datetime.fromisoformat(row["received_at"]),
        } == {
            "patient_uuid": patient.uuid,
            "measured_at": m.measured_at,
            "pulse": m.pulse,
            "resp_rate": m.resp_rate,
            "systolic": m.systolic,
            "diastolic": m.diastolic,
            "map": m.map,
            "spo2": m.spo2,
            "temperature": m.temperature,
            "etco2": m.etco2,
            "on_oxygen": m.on_oxygen,
            "consciousness": m.consciousness,
            "artefact": m.artefact,
            "news2_score": m.news2_score,
            "news2_risk": m.news2_risk,
            "news2_missing": m.news2_missing,
            "spo2_scale": m.spo2_scale,
            "received_at": m.received_at,
        }
