"""The alarm-burden report (units/report.py, GET {API_PREFIX}units/{code}/alarm-report/): every
figure with exact values on a fixture unit of 4 beds (one empty), a transfer mid-window, an
admission before the window, alarms of several kinds and priorities, acknowledged and
self-resolved; alarms of another unit, of no admission, and before or after an admission are
not the unit's."""

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from patients.tests.factories import PatientFactory
from units.models import Admission, Bed, Unit
from units.report import unit_alarm_report
from vitals.tests.factories import AlarmFactory

pytestmark = pytest.mark.django_db

W = datetime(2026, 3, 2, tzinfo=UTC)  # the window: [W, W + 2 days)
UNTIL = W + timedelta(days=2)
H = timedelta(hours=1)
S = timedelta(seconds=1)


def alarm_at(patient, at, kind, priority, *, ack=None, resolved=None, **extra):
    """An alarm raised at `at`, acknowledged `ack` seconds later (at the same priority),
    resolved `resolved` seconds later (None: still open)."""
    state = "resolved" if resolved is not None else ("acknowledged" if ack else "active")
    return AlarmFactory(
        patient=patient,
        kind=kind,
        priority=priority,
        state=state,
        raised_at=at,
        acknowledged_at=None if ack is None else at + ack * S,
        acknowledged_priority="" if ack is None else priority,
        resolved_at=None if resolved is None else at + resolved * S,
        **extra,
    )


@pytest.fixture
def unit() -> Unit:
    unit = Unit.objects.create(code="icu-a", name="ICU A")
    other = Unit.objects.create(code="icu-b", name="ICU B")
    bed1, bed2, bed3, _empty = (
        Bed.objects.create(unit=unit, label=str(i), position=i) for i in (1, 2, 3, 4)
    )
    bed_x = Bed.objects.create(unit=other, label="X", position=1)
    ann, bob, cid, dan, eve = (PatientFactory(name=n) for n in ("ann", "bob", "cid", "dan", "eve"))

    # Ann: bed 1 since the day before the window: 2 bed-days.
    Admission.objects.create(patient=ann, bed=bed1, admitted_at=W - 24 * H)
    # Bob: bed 2 for 12 h, transferred to bed 3 for 12 h, discharged: 0.5 + 0.5.
    Admission.objects.create(
        patient=bob,
        bed=bed2,
        admitted_at=W + 12 * H,
        discharged_at=W + 24 * H,
        end_reason="transfer",
    )
    Admission.objects.create(
        patient=bob,
        bed=bed3,
        admitted_at=W + 24 * H,
        discharged_at=W + 36 * H,
        end_reason="discharge",
    )
    # Cid: bed 2 after Bob, to the end of the window: 0.75.
    Admission.objects.create(patient=cid, bed=bed2, admitted_at=W + 30 * H)
    # Dan: another unit's.
    Admission.objects.create(patient=dan, bed=bed_x, admitted_at=W - 24 * H)

    # Bed 1 (Ann)
    alarm_at(ann, W + 1 * H, "spo2_low", "medium", ack=20, resolved=600)
    alarm_at(ann, W + 2 * H, "spo2_low", "medium", resolved=10)  # nuisance
    alarm_at(ann, W + 3 * H, "spo2_probe_off", "low", resolved=25)  # nuisance, technical
    alarm_at(ann, W + 4 * H, "pulse_high", "high", ack=40, resolved=120)
    # Raised before the window, open for its first 30 min: time in alarm only.
    alarm_at(ann, W - 1 * H, "pulse_high", "medium", resolved=5400)
    # Still open at the end of the window: 600 s of it in the window.
    alarm_at(ann, UNTIL - 600 * S, "news2", "medium")
    # Bed 2 (Bob, then Cid) and bed 3 (Bob)
    alarm_at(bob, W + 13 * H, "resp_rate_high", "medium", ack=60, resolved=300)
    alarm_at(bob, W + 25 * H, "spo2_low", "high", ack=100, resolved=200)
    alarm_at(bob, W + 26 * H, "no_data", "low", resolved=40)  # > 30 s: not a nuisance
    alarm_at(cid, W + 31 * H, "spo2_low", "medium", ack=30, resolved=60)
    alarm_at(cid, W + 32 * H, "clock_skew", "low", ack=5, resolved=20)  # acknowledged
    # Not the unit's: Bob before his admission and after his discharge, Dan, Eve (no bed).
    alarm_at(bob, W + 6 * H, "spo2_low", "medium", resolved=10)
    alarm_at(bob, W + 37 * H, "spo2_low", "medium", resolved=10)
    alarm_at(dan, W + 1 * H, "spo2_low", "medium", ack=1, resolved=10)
    alarm_at(eve, W + 1 * H, "spo2_low", "medium", resolved=10)
    # Ann's, after the window.
    alarm_at(ann, UNTIL + 1 * H, "spo2_low", "medium", resolved=10)
    return unit


EXPECTED = {
    "unit": {"code": "icu-a", "name": "ICU A"},
    "since": "2026-03-02T00:00:00Z",
    "until": "2026-03-04T00:00:00Z",
    "bed_days": 3.75,
    "alarms": {"total": 10, "technical": 3, "physiological": 7, "per_bed_day": 2.67},
    "by_kind": [
        {"kind": "spo2_low", "category": "physiological", "alarms": 4, "per_bed_day": 1.07,
         "acknowledged": 3, "self_resolved": 1, "nuisance_share": 0.25},
        {"kind": "clock_skew", "category": "technical", "alarms": 1, "per_bed_day": 0.27,
         "acknowledged": 1, "self_resolved": 0, "nuisance_share": 0.0},
        {"kind": "news2", "category": "physiological", "alarms": 1, "per_bed_day": 0.27,
         "acknowledged": 0, "self_resolved": 0, "nuisance_share": 0.0},
        {"kind": "no_data", "category": "technical", "alarms": 1, "per_bed_day": 0.27,
         "acknowledged": 0, "self_resolved": 0, "nuisance_share": 0.0},
        {"kind": "pulse_high", "category": "physiological", "alarms": 1, "per_bed_day": 0.27,
         "acknowledged": 1, "self_resolved": 0, "nuisance_share": 0.0},
        {"kind": "resp_rate_high", "category": "physiological", "alarms": 1,
         "per_bed_day": 0.27, "acknowledged": 1, "self_resolved": 0, "nuisance_share": 0.0},
        {"kind": "spo2_probe_off", "category": "technical", "alarms": 1, "per_bed_day": 0.27,
         "acknowledged": 0, "self_resolved": 1, "nuisance_share": 1.0},
    ],
    "by_priority": [
        {"category": "physiological", "priority": "high", "alarms": 2, "per_bed_day": 0.53},
        {"category": "physiological", "priority": "medium", "alarms": 5, "per_bed_day": 1.33},
        {"category": "technical", "priority": "low", "alarms": 3, "per_bed_day": 0.8},
    ],
    # medium: 20, 30, 60 s; high: 40, 100 s; low: 5 s (nearest rank).
    "acknowledge": [
        {"priority": "high", "count": 2, "median_seconds": 40.0, "p90_seconds": 100.0},
        {"priority": "medium", "count": 3, "median_seconds": 30.0, "p90_seconds": 60.0},
        {"priority": "low", "count": 1, "median_seconds": 5.0, "p90_seconds": 5.0},
    ],
    "acknowledge_histogram": {
        "bins": [0, 10, 30, 60, 120, 300, 600],
        "counts": {
            "high": [0, 0, 1, 1, 0, 0, 0],
            "medium": [0, 1, 1, 1, 0, 0, 0],
            "low": [1, 0, 0, 0, 0, 0, 0],
        },
    },
    # Noisiest first; bed 1: 600 + 10 + 25 + 120 + 1800 (clipped) + 600 (open) s in alarm.
    "beds": [
        {"label": "1", "position": 1, "bed_days": 2.0, "alarms": 5, "alarms_per_bed_day": 2.5,
         "seconds_in_alarm": 3155.0},
        {"label": "2", "position": 2, "bed_days": 1.25, "alarms": 3, "alarms_per_bed_day": 2.4,
         "seconds_in_alarm": 380.0},
        {"label": "3", "position": 3, "bed_days": 0.5, "alarms": 2, "alarms_per_bed_day": 4.0,
         "seconds_in_alarm": 240.0},
        {"label": "4", "position": 4, "bed_days": 0.0, "alarms": 0, "alarms_per_bed_day": None,
         "seconds_in_alarm": 0.0},
    ],
}  # fmt: skip

URL = f"/{settings.API_PREFIX}units/icu-a/alarm-report/"
WINDOW = {"since": "2026-03-02T00:00:00Z", "until": "2026-03-04T00:00:00Z"}


def test_every_figure_has_its_exact_value_in_four_queries(unit, viewer_client):
    with CaptureQueriesContext(connection) as queries:
        report = unit_alarm_report(unit=unit, since=W, until=UNTIL)
    assert len(queries) == 4

    body = viewer_client.get(URL, WINDOW).json()
    for bed in body["beds"]:
        assert bed.pop("id") == Bed.objects.get(unit=unit, label=bed["label"]).pk
    assert body == EXPECTED
    assert report["bed_days"] == 3.75


def test_csv_download_holds_the_same_figures(unit, viewer_client):
    response = viewer_client.get(URL, {**WINDOW, "format": "csv"})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="alarm-report-icu-a.csv"'
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == ["figure", "group", "key", "measure", "value"]
    assert ["window", "", "", "bed_days", "3.75"] in rows
    assert ["by_kind", "technical", "spo2_probe_off", "nuisance_share", "1.0"] in rows
    assert ["acknowledge", "", "medium", "p90_seconds", "60.0"] in rows
    assert ["acknowledge_histogram", "high", ">=30s", "alarms", "1"] in rows
    assert ["beds", "", "1", "seconds_in_alarm", "3155.0"] in rows
    assert ["beds", "", "4", "alarms_per_bed_day", ""] in rows
    assert len(rows) == 1 + 3 + 4 + 7 * 5 + 3 * 2 + 3 * 3 + 3 * 7 + 4 * 4


def test_unknown_unit_bad_window_and_anonymous(unit, viewer_client, anon_client):
    missing = viewer_client.get(f"/{settings.API_PREFIX}units/nope/alarm-report/")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "unit_not_found"
    # Asked as CSV, an error is still the API's one JSON shape (schemathesis found it as CSV).
    as_csv = viewer_client.get(f"/{settings.API_PREFIX}units/nope/alarm-report/?format=csv")
    assert (as_csv.status_code, as_csv["Content-Type"]) == (404, "application/json")
    assert as_csv.json()["error"] == {
        "status": 404,
        "code": "unit_not_found",
        "message": "No unit with code 'nope'.",
    }
    reversed_window = {"since": WINDOW["until"], "until": WINDOW["since"]}
    refused = viewer_client.get(URL, reversed_window)
    assert refused.status_code == 400
    assert refused.json()["error"]["fields"] == {"until": ["'until' must not be before 'since'."]}
    # The unit is looked up first, as a patient is before their readings' cursor: an unknown
    # unit is a 404 whatever its window (schemathesis found a 400 for unit "X").
    both = viewer_client.get(f"/{settings.API_PREFIX}units/X/alarm-report/", reversed_window)
    assert (both.status_code, both.json()["error"]["code"]) == (404, "unit_not_found")
    assert anon_client.get(URL).status_code == 401


def test_until_is_clipped_to_now_and_defaults_to_the_last_seven_days(unit, viewer_client):
    body = viewer_client.get(URL).json()
    # Ann's open admission counts up to now, no further: 7 days exactly.
    assert body["beds"][-1]["label"] == "4"
    assert [b["bed_days"] for b in body["beds"] if b["label"] == "1"] == [7.0]
    assert body["alarms"]["total"] == 0


def test_time_in_alarm_is_each_beds_while_its_patient_lay_in_it(db):
    """An alarm counts for the bed its patient was in when it was raised; its time in alarm
    is split between the beds its patient lay in while it was open, and none of it falls to
    a bed before its patient came or after they left."""
    unit = Unit.objects.create(code="icu-t", name="ICU T")
    bed1, bed2 = (Bed.objects.create(unit=unit, label=str(i), position=i) for i in (1, 2))
    fay = PatientFactory(name="fay")
    Admission.objects.create(
        patient=fay, bed=bed1, admitted_at=W, discharged_at=W + 10 * H, end_reason="transfer"
    )
    Admission.objects.create(patient=fay, bed=bed2, admitted_at=W + 10 * H)
    # Raised unassigned an hour before her admission, resolved 30 min into it.
    alarm_at(fay, W - 1 * H, "spo2_low", "medium", resolved=5400)
    # Raised in bed 1 an hour before the transfer, resolved an hour after it.
    alarm_at(fay, W + 9 * H, "pulse_high", "medium", ack=29.96, resolved=7200)

    report = unit_alarm_report(unit=unit, since=W - 2 * H, until=W + 12 * H)

    beds = {b["label"]: (b["alarms"], b["seconds_in_alarm"]) for b in report["beds"]}
    assert beds == {"1": (1, 1800.0 + 3600.0), "2": (0, 3600.0)}
    assert report["alarms"]["total"] == 1
    # 29.96 s is under 30 s: in the bin below, and read 29.9 s (truncated to the tenth).
    assert report["acknowledge"] == [
        {"priority": "medium", "count": 1, "median_seconds": 29.9, "p90_seconds": 29.9}
    ]
    assert report["acknowledge_histogram"]["counts"]["medium"] == [0, 1, 0, 0, 0, 0, 0]
