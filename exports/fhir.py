"""The readings as FHIR R4 resources: a Patient, and per reading one Observation per vital sign
measured, following the FHIR vital-signs profiles
(http://hl7.org/fhir/R4/observation-vitalsigns.html), plus the NEWS2 score.

The Observations are those of the signs of vitals/signs.py, each with its LOINC codings and
its value in the sign's UCUM unit; blood pressure's halves (the signs travelling in `bp`) make
one panel, LOINC 85354-9, with a component each. A reading has the Observations of the signs it
measured (a partial reading, contract version 2, fewer): the panel when both halves were.

- heart rate (profile heartrate): LOINC 8867-4, `pulse` in UCUM `/min`;
- respiratory rate (resprate): LOINC 9279-1, `resp_rate` in `/min`;
- blood pressure (bp): panel LOINC 85354-9 with components 8480-6 (systolic) and 8462-4
  (diastolic) in `mm[Hg]`;
- mean arterial pressure: LOINC 8478-0 in `mm[Hg]` (category vital-signs, no profile of its
  own, as the FHIR specification's example "mbp");
- oxygen saturation (oxygensat): LOINC 2708-6 and 59408-5 (by pulse oximetry), `spo2` in `%`;
- body temperature (bodytemp): LOINC 8310-5, `temperature` in `Cel`;
- end-tidal CO2: LOINC 19889-5 in `mm[Hg]` (category vital-signs, no profile);
- NEWS2 (no vital-signs profile, category `survey`): SNOMED CT 1104051000000101, `news2_score`
  in `{score}`, the risk band as interpretation text.

NEWS2: we found no LOINC code for the NEWS2 total that FHIR implementers use; SNOMED CT (UK
edition) has the concept 1104051000000101 "Royal College of Physicians NEWS2 (National Early
Warning Score 2) total score", which NHS England's FHIR guidance (UK Core Observation) uses,
with category `survey`. Readings flagged as sensor
artefacts are not scored: they have no NEWS2 Observation, and their Observations carry a note.

Every resource is built by the functions below as a dict (the definition). Exports of a
million readings cannot afford building and serialising millions of dicts, so `EntryWriter`
renders each kind once per patient with placeholders (`observation_template`) and fills in the
values of each reading: the same JSON, a few times faster (the tests check the two agree).

Ids are stable: an Observation's id is a uuid5 of the patient's uuid and the reading's time and
code, so the same reading has the same id in every export and in the search endpoint.
"""

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from vitals.signs import SIGN_KEYS, SIGNS, Sign

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
# Identifier system meaning "the value is a URI", here urn:uuid:<uuid>.
URI_SYSTEM = "urn:ietf:rfc:3986"
VITAL_SIGNS_PROFILE = "http://hl7.org/fhir/StructureDefinition/"
NEWS2_SNOMED = "1104051000000101"

FHIR_JSON = "application/fhir+json"


class Reading(Protocol):
    """What the resources are made of: a PatientMetric, or a row of its values; and every
    sign of vitals/signs.py by its key (None: not measured in this reading)."""

    measured_at: datetime
    artefact: str
    news2_score: int | None
    news2_risk: str | None


def iso(moment: datetime) -> str:
    """An instant in UTC, ISO 8601 with `Z`, as the API writes times (microseconds kept)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def quantity(value: Any, unit: str, code: str) -> dict:
    return {"value": value, "unit": unit, "system": UCUM, "code": code}


def coding(system: str, code: str, display: str) -> dict:
    return {"system": system, "code": code, "display": display}


@dataclass(frozen=True)
class Kind:
    """One kind of Observation: its code(s), profile, category and how a reading fills it.

    `value(v)` returns the value elements from `v`, the reading's values by name (real values,
    or placeholders when a template is made). `fields`: the reading's values it shows; a
    reading has this Observation when none of them is null (not measured, not scored).
    """

    key: str
    codings: tuple[tuple[str, str, str], ...]
    text: str
    value: Callable[[Mapping[str, Any]], dict]
    fields: tuple[str, ...]
    profile: str | None = None
    category: tuple[str, str] = ("vital-signs", "Vital Signs")

    @property
    def code(self) -> str:
        """The primary code (the first coding's)."""
        return self.codings[0][1]

    def codes(self) -> set[tuple[str, str]]:
        return {(system, code) for system, code, _ in self.codings}


# The profiles of the FHIR R4 vital-signs profiles, by the LOINC code each one fixes (the
# specification's table; a sign whose code has none is a plain vital-signs Observation).
PROFILES = {
    "8867-4": "heartrate",
    "9279-1": "resprate",
    "2708-6": "oxygensat",
    "8310-5": "bodytemp",
    "85354-9": "bp",
}
BP_PANEL = (LOINC, "85354-9", "Blood pressure panel with all children optional")


def _codings(sign: Sign) -> tuple[tuple[str, str, str], ...]:
    return tuple((LOINC, c.code, c.display) for c in sign.loinc)


def _sign_value(sign: Sign) -> Callable[[Mapping[str, Any]], dict]:
    return lambda v: {"valueQuantity": quantity(v[sign.key], sign.unit, sign.ucum)}


def _panel_value(signs: tuple[Sign, ...]) -> Callable[[Mapping[str, Any]], dict]:
    return lambda v: {
        "component": [
            {
                "code": {"coding": [coding(*c) for c in _codings(sign)]},
                "valueQuantity": quantity(v[sign.key], sign.unit, sign.ucum),
            }
            for sign in signs
        ]
    }


def _news2(v: Mapping[str, Any]) -> dict:
    return {
        "valueQuantity": quantity(v["news2_score"], "score", "{score}"),
        "interpretation": [{"text": f"NEWS2 clinical risk: {v['news2_risk']}"}],
    }


def _sign_kinds() -> list[Kind]:
    """A kind per exported sign, in the registry's order; the signs that travel together in one
    contract field (`bp`) make one panel, where the first of them stands."""
    kinds: list[Kind] = []
    for sign in SIGNS:
        if not sign.exported:
            continue
        if sign.wire is None:
            code = sign.loinc[0].code
            kinds.append(
                Kind(
                    sign.key,
                    _codings(sign),
                    sign.label,
                    _sign_value(sign),
                    (sign.key,),
                    profile=PROFILES.get(code),
                )
            )
        elif sign.wire not in {kind.key for kind in kinds}:
            panel = tuple(s for s in SIGNS if s.wire == sign.wire and s.exported)
            kinds.append(
                Kind(
                    "blood_pressure",
                    (BP_PANEL,),
                    "Blood pressure",
                    _panel_value(panel),
                    tuple(s.key for s in panel),
                    profile=PROFILES[BP_PANEL[1]],
                )
            )
    return kinds


NEWS2_KIND = Kind(
    "news2",
    (
        (
            SNOMED,
            NEWS2_SNOMED,
            "Royal College of Physicians NEWS2 (National Early Warning Score 2) total score",
        ),
    ),
    "NEWS2 score",
    _news2,
    ("news2_score",),
    category=("survey", "Survey"),
)
KINDS: dict[str, Kind] = {kind.key: kind for kind in (*_sign_kinds(), NEWS2_KIND)}
# The reading's values each kind reads, for the placeholders of a template.
NUMBERS = (*SIGN_KEYS, "news2_score")
TEXTS = ("effective", "news2_risk", "artefact")


def kinds_matching(tokens: Iterable[tuple[str | None, str]]) -> set[str]:
    """The kinds whose code matches one of the (system or None, code) search tokens."""
    return {
        kind.key
        for kind in KINDS.values()
        for system, code in tokens
        if any(code == c and system in (None, s) for s, c in kind.codes())
    }


# --- resources as dicts (the definition) -------------------------------------------------------
# The Observation search the facade has (exports/apis.py, exports/fhir_search.py): its R4
# search parameters, by name, type and definition.
_SEARCH_PARAMS = [
    ("patient", "reference", "clinical-patient", "The patient's uuid, or `Patient/<uuid>`."),
    ("date", "date", "clinical-date", "Repeatable, all must hold: eq, ge, gt, le, lt."),
    ("code", "token", "clinical-code", "`[system|]code`: LOINC or the NEWS2 SNOMED CT code."),
]
# When what the CapabilityStatement says last changed.
CAPABILITIES_DATE = "2026-12-03"


def capability_statement(*, base_url: str) -> dict:
    """The CapabilityStatement served at [base]/metadata: what a FHIR client asks first."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": CAPABILITIES_DATE,
        "kind": "instance",
        "software": {"name": "ICU Monitor"},
        "implementation": {"description": "ICU Monitor's FHIR facade", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "Searches are authenticated like the API: a token "
                "(`Authorization: Token <key>`) or a session; the viewer role may search. "
                "`_count` (at most 1000) and the `next` link page through the results.",
                "security": {"cors": False},
                "resource": [
                    {
                        "type": "Observation",
                        "profile": VITAL_SIGNS_PROFILE + "vitalsigns",
                        "interaction": [{"code": "search-type"}],
                        "searchParam": [
                            {
                                "name": name,
                                "definition": f"http://hl7.org/fhir/SearchParameter/{ref}",
                                "type": kind,
                                "documentation": doc,
                            }
                            for name, kind, ref, doc in _SEARCH_PARAMS
                        ],
                    }
                ],
            }
        ],
    }


def operation_outcome(*, code: str, diagnostics: str) -> dict:
    """An OperationOutcome with one error `issue` (`code` from the R4 IssueType codes)."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }


def patient_urn(patient_uuid: uuid.UUID | str) -> str:
    return f"urn:uuid:{patient_uuid}"


def patient_resource(*, patient_uuid: uuid.UUID | str, name: str) -> dict:
    return {
        "resourceType": "Patient",
        "id": str(patient_uuid),
        "identifier": [{"system": URI_SYSTEM, "value": patient_urn(patient_uuid)}],
        "name": [{"text": name}],
    }


def subject(patient_uuid: uuid.UUID | str) -> dict:
    """The patient by its uuid: a reference that resolves to the Patient entry of a
    collection Bundle (whose fullUrl is the same URN), and the business identifier."""
    urn = patient_urn(patient_uuid)
    return {"reference": urn, "identifier": {"system": URI_SYSTEM, "value": urn}}


def artefact_note(artefact: str) -> str:
    return (
        f"The bedside monitor flagged this reading as a sensor artefact ({artefact}): "
        "its values may not be the patient's. Not scored (no NEWS2)."
    )


def observation(kind: Kind, v: Mapping[str, Any], *, patient_uuid: uuid.UUID | str) -> dict:
    """The Observation of one kind of one reading; `v` holds its values by name, and its id
    as `id_<kind>`."""
    category, display = kind.category
    resource: dict[str, Any] = {"resourceType": "Observation", "id": v[f"id_{kind.key}"]}
    if kind.profile:
        resource["meta"] = {"profile": [VITAL_SIGNS_PROFILE + kind.profile]}
    resource |= {
        "status": "final",
        "category": [
            {"coding": [coding(OBSERVATION_CATEGORY, category, display)], "text": display}
        ],
        "code": {"coding": [coding(*c) for c in kind.codings], "text": kind.text},
        "subject": subject(patient_uuid),
        "effectiveDateTime": v["effective"],
        **kind.value(v),
    }
    if v.get("artefact"):
        resource["note"] = [{"text": artefact_note(v["artefact"])}]
    return resource


def entry(resource: dict, *, search: bool) -> dict:
    """A Bundle entry; `search`: of a searchset, as a match."""
    item = {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource}
    if search:
        item["search"] = {"mode": "match"}
    return item


def observation_id(namespace: uuid.UUID, effective: str, code: str) -> str:
    """uuid5(namespace, "<effective>|<code>"), as uuid.uuid5 computes it, without building a
    UUID object (a million readings make six million ids)."""
    name = f"{effective}|{code}".encode()
    digest = hashlib.sha1(namespace.bytes + name, usedforsecurity=False).hexdigest()
    return (
        f"{digest[:8]}-{digest[8:12]}-5{digest[13:16]}-"
        f"{_VARIANT[digest[16]]}{digest[17:20]}-{digest[20:32]}"
    )


_VARIANT = {c: format((int(c, 16) & 0x3) | 0x8, "x") for c in "0123456789abcdef"}


def reading_values(reading: Reading, *, namespace: uuid.UUID, kinds: Iterable[str]) -> dict:
    """A reading's values by name, as `observation` and the templates take them."""
    effective = iso(reading.measured_at)
    values = {name: getattr(reading, name) for name in NUMBERS}
    values |= {
        "effective": effective,
        "news2_risk": reading.news2_risk,
        "artefact": reading.artefact,
    }
    for key in kinds:
        values[f"id_{key}"] = observation_id(namespace, effective, KINDS[key].code)
    return values


def reading_kinds(reading: Reading, kinds: Iterable[str]) -> list[str]:
    """The kinds of Observation a reading has, of those asked: those whose values it has (the
    signs it measured; NEWS2 when it was scored)."""
    return [k for k in kinds if all(getattr(reading, name) is not None for name in KINDS[k].fields)]


# --- the same resources, fast ------------------------------------------------------------------
def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def observation_template(
    kind: Kind, *, patient_uuid: uuid.UUID | str, search: bool, artefact: bool
) -> str:
    """The JSON of `entry(observation(kind, ...))` with %-placeholders for the values:
    numbers replace their quoted placeholder, texts (which must be JSON-escaped) sit inside
    their strings."""
    placeholders: dict[str, Any] = {name: f"@{name}@" for name in (*NUMBERS, *TEXTS)}
    placeholders[f"id_{kind.key}"] = "@id@"
    placeholders["artefact"] = "@artefact@" if artefact else ""
    text = _dumps(entry(observation(kind, placeholders, patient_uuid=patient_uuid), search=search))
    text = text.replace("%", "%%")
    for name in NUMBERS:
        text = text.replace(f'"@{name}@"', f"%({name})s")
    text = text.replace("@id@", f"%(id_{kind.key})s")
    for name in TEXTS:
        text = text.replace(f"@{name}@", f"%({name})s")
    if "@" in text:  # a placeholder not replaced: a value would be missing
        raise ValueError(f"placeholder left in the template of {kind.key}: {text}")
    return text


class EntryWriter:
    """Renders the Observation entries of readings of one patient, as JSON text."""

    def __init__(self, *, patient_uuid: uuid.UUID, kinds: Iterable[str], search: bool) -> None:
        self.namespace = patient_uuid
        self.kinds = [k for k in KINDS if k in set(kinds)]  # in a fixed order
        self.templates = {
            (key, artefact): observation_template(
                KINDS[key], patient_uuid=patient_uuid, search=search, artefact=artefact
            )
            for key in self.kinds
            for artefact in (False, True)
        }

    def entries(self, reading: Reading) -> list[str]:
        values = reading_values(reading, namespace=self.namespace, kinds=self.kinds)
        artefact = bool(reading.artefact)
        if artefact:
            values["artefact"] = _dumps(reading.artefact)[1:-1]
        if reading.news2_risk is not None:
            values["news2_risk"] = _dumps(reading.news2_risk)[1:-1]
        return [
            self.templates[key, artefact] % values for key in reading_kinds(reading, self.kinds)
        ]


class BundleWriter:
    """Writes a Bundle to a text stream entry by entry, never holding more than one: the
    header's elements, then `"entry":[...]` (left out when empty: FHIR allows no empty
    arrays), then the closing brace."""

    def __init__(self, out: TextIO, header: dict) -> None:
        self.out = out
        self.count = 0
        out.write(_dumps(header)[:-1])

    def write(self, entry_json: str) -> None:
        self.out.write(',"entry":[' if not self.count else ",\n")
        self.out.write(entry_json)
        self.count += 1

    def write_resource(self, resource: dict, *, search: bool = False) -> None:
        self.write(_dumps(entry(resource, search=search)))

    def close(self) -> None:
        self.out.write("]}\n" if self.count else "}\n")


def bundle_header(*, type: str, bundle_id: str, timestamp: datetime, **elements: Any) -> dict:
    return {
        "resourceType": "Bundle",
        "id": bundle_id,
        "meta": {"lastUpdated": iso(timestamp)},
        "type": type,
        "timestamp": iso(timestamp),
        **elements,
    }
