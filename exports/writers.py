"""The two export formats, written row by row to a text stream: memory stays flat whatever
the number of readings (the readings come from an iterator over the database)."""

import csv
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TextIO

from exports.fhir import (
    KINDS,
    URI_SYSTEM,
    BundleWriter,
    EntryWriter,
    Reading,
    bundle_header,
    iso,
    patient_resource,
)
from vitals.signs import SIGN_BY_KEY, SIGNS, Sign


def _optional(value: Any) -> Any:
    return "" if value is None else value


# A unit as a column name's suffix.
_UNIT_SUFFIX = {"/min": "per_min", "mmHg": "mmhg", "%": "percent", "°C": "celsius"}
# The signs of the first CSV (before contract version 2), whose columns come first in this
# order; every sign registered since gets its column at the end (a stable contract: new columns
# go at the end, so that a reader by position keeps working). Never changes.
_FIRST_CSV_SIGNS = ("pulse", "resp_rate", "systolic", "diastolic", "spo2", "temperature")


def _sign_column(sign: Sign) -> tuple[str, Callable[[Reading], Any]]:
    key = sign.key
    return f"{key}_{_UNIT_SUFFIX[sign.unit]}", lambda r: _optional(getattr(r, key))


# The CSV's columns, in this order, and how each is written. Units are in the names; times are
# ISO 8601 in UTC; empty means null (a sign not measured in the reading, a reading not scored).
CSV_COLUMNS: tuple[tuple[str, Callable[[Reading], Any]], ...] = (
    ("measured_at", lambda r: iso(r.measured_at)),
    *(_sign_column(SIGN_BY_KEY[key]) for key in _FIRST_CSV_SIGNS),
    ("on_oxygen", lambda r: "true" if r.on_oxygen else "false"),
    ("consciousness_acvpu", lambda r: r.consciousness),
    ("artefact", lambda r: r.artefact),
    ("news2_score", lambda r: _optional(r.news2_score)),
    ("news2_risk", lambda r: _optional(r.news2_risk)),
    ("news2_spo2_scale", lambda r: r.spo2_scale),
    ("received_at", lambda r: iso(r.received_at)),
    *(_sign_column(s) for s in SIGNS if s.exported and s.key not in _FIRST_CSV_SIGNS),
    # The NEWS2 parameters without a valid value (space-separated): the score is incomplete.
    ("news2_missing", lambda r: " ".join(r.news2_missing or ())),
)
CSV_HEADER = ("patient_uuid", *(name for name, _ in CSV_COLUMNS))


def csv_write(out: TextIO, *, patient_uuid: uuid.UUID, readings: Iterable[Reading]) -> int:
    """The header, then one row per reading; returns the number of readings written. `out`
    must be opened with newline="" (the csv module writes its own line ends, CRLF)."""
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    patient = str(patient_uuid)
    count = 0
    for reading in readings:
        writer.writerow([patient, *(value(reading) for _, value in CSV_COLUMNS)])
        count += 1
    return count


def fhir_write(
    out: TextIO,
    *,
    patient_uuid: uuid.UUID,
    patient_name: str,
    readings: Iterable[Reading],
    bundle_id: uuid.UUID,
    timestamp: datetime,
) -> int:
    """A `collection` Bundle: the Patient, then every Observation of every reading; returns
    the number of readings written."""
    bundle = BundleWriter(
        out,
        bundle_header(
            type="collection",
            bundle_id=str(bundle_id),
            timestamp=timestamp,
            identifier={"system": URI_SYSTEM, "value": f"urn:uuid:{bundle_id}"},
        ),
    )
    bundle.write_resource(patient_resource(patient_uuid=patient_uuid, name=patient_name))
    observations = EntryWriter(patient_uuid=patient_uuid, kinds=KINDS, search=False)
    count = 0
    for reading in readings:
        for text in observations.entries(reading):
            bundle.write(text)
        count += 1
    bundle.close()
    return count
