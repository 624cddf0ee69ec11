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


def _optional(value: Any) -> Any:
    return "" if value is None else value


# The CSV's columns, in this order (a stable contract: new columns go at the end), and how
# each is written. Units are in the names; times are ISO 8601 in UTC; empty means null.
CSV_COLUMNS: tuple[tuple[str, Callable[[Reading], Any]], ...] = (
    ("measured_at", lambda r: iso(r.measured_at)),
    ("pulse_per_min", lambda r: r.pulse),
    ("resp_rate_per_min", lambda r: r.resp_rate),
    ("systolic_mmhg", lambda r: r.systolic),
    ("diastolic_mmhg", lambda r: r.diastolic),
    ("spo2_percent", lambda r: r.spo2),
    ("temperature_celsius", lambda r: r.temperature),
    ("on_oxygen", lambda r: "true" if r.on_oxygen else "false"),
    ("consciousness_acvpu", lambda r: r.consciousness),
    ("artefact", lambda r: r.artefact),
    ("news2_score", lambda r: _optional(r.news2_score)),
    ("news2_risk", lambda r: _optional(r.news2_risk)),
    ("news2_spo2_scale", lambda r: r.spo2_scale),
    ("received_at", lambda r: iso(r.received_at)),
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
