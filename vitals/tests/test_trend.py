"""Trends for charts: a patient's readings summarised into at most `points` buckets, by the
selector (one grouped query, on both engines) and through the API."""

import math
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from patients.tests.factories import PatientFactory
from vitals.models import PatientMetric
from vitals.news2 import artefact_voids
from vitals.selectors import (
    NOT_VOIDED,
    TREND_BUCKET_SECONDS,
    reading_trend,
    trend_bucket_seconds,
)
from vitals.tests.factories import PatientMetricFactory

# A whole minute: buckets are aligned on the epoch, so T0's minute is a bucket of its own.
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
WRONG_FORMAT = (
    "Datetime has wrong format. Use one of these formats instead: "
    "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."
)


def stats(low: float, high: float, mean: float) -> dict:
    return {"min": low, "max": high, "mean": mean}


# --- the bucket width ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("span", "width"),
    [
        (timedelta(minutes=15), 5),  # the central station's ranges, at its 300 points
        (HOUR, 15),
        (6 * HOUR, 120),
        (24 * HOUR, 300),
        (timedelta(0), 1),
        (timedelta(days=30), 10800),
        (timedelta(days=365), 108000),  # beyond the list: whole hours (30 h)
    ],
)
def test_the_bucket_width_is_the_narrowest_round_one_that_fits(span, width) -> None:
    assert trend_bucket_seconds(since=T0, until=T0 + span, points=300) == width


def test_fewer_than_two_points_are_refused() -> None:
    with pytest.raises(ValueError, match="points must be at least 2, got 1"):
        trend_bucket_seconds(since=T0, until=T0 + HOUR, points=1)


# --- the selector -------------------------------------------------------------------------------
@pytest.fixture
def patient():
    """Six readings 10 s apart from T0: pulse 60, 62, ... 70; one more a minute later (a
    sensor artefact) and a reading of another patient in between."""
    patient = PatientFactory(name="ann")
    for i in range(6):
        PatientMetricFactory(
            patient=patient,
            measured_at=T0 + timedelta(seconds=10 * i),
            pulse=60 + 2 * i,
            temperature=36.5 + 0.1 * i,
            news2_score=i % 3,
            news2_risk="low",
        )
    PatientMetricFactory(
        patient=patient, measured_at=T0 + timedelta(seconds=70), spo2=0, artefact="spo2_probe_off"
    )
    PatientMetricFactory(measured_at=T0 + timedelta(seconds=15), pulse=200)  # someone else
    return patient


@pytest.mark.django_db
def test_readings_are_summarised_per_bucket(patient) -> None:
    trend = reading_trend(patient=patient, since=T0, until=T0 + timedelta(minutes=2), points=6)

    assert (trend.since, trend.until, trend.bucket_seconds) == (T0, T0 + timedelta(minutes=2), 30)
    assert [b["start"] for b in trend.buckets] == [T0, T0 + timedelta(seconds=30)]
    first, second = trend.buckets
    assert first["count"] == 3
    assert first["pulse"] == stats(60, 64, 62.0)
    assert first["spo2"] == stats(98, 98, 98.0)
    assert first["systolic"] == stats(120, 120, 120.0)
    assert first["diastolic"] == stats(80, 80, 80.0)
    assert first["resp_rate"] == stats(14, 14, 14.0)
    assert first["temperature"] == stats(36.5, 36.7, 36.6)
    assert first["news2"] == stats(0, 2, 1.0)
    assert second["count"] == 3  # the artefact at +70 s is not a physiological value
    assert second["pulse"] == stats(66, 70, 68.0)


@pytest.mark.django_db
def test_the_window_is_inclusive_and_a_bucket_without_a_score_has_none(patient) -> None:
    edge = T0 + timedelta(seconds=50)
    PatientMetric.objects.filter(measured_at=T0 + timedelta(seconds=40)).update(news2_score=None)

    trend = reading_trend(patient=patient, since=T0 + timedelta(seconds=40), until=edge, points=2)

    assert trend.bucket_seconds == 15
    assert [(b["start"], b["count"]) for b in trend.buckets] == [
        (T0 + timedelta(seconds=30), 1),  # +40 s
        (T0 + timedelta(seconds=45), 1),  # +50 s, the until itself
    ]
    assert trend.buckets[0]["news2"] is None
    assert trend.buckets[1]["news2"] == stats(2, 2, 2.0)
    late = reading_trend(patient=patient, since=edge + timedelta(microseconds=1), until=edge + HOUR)
    assert late.buckets == []


@pytest.mark.django_db
def test_a_sign_no_reading_of_a_bucket_measured_is_a_gap(viewer_client) -> None:
    """Partial readings (contract version 2): blood pressure every few minutes, EtCO2 in some;
    a bucket summarises each sign over the readings that measured it, and is null for a sign
    none measured."""
    patient = PatientFactory()
    partial = dict.fromkeys(("resp_rate", "systolic", "diastolic", "temperature"))
    for i, (etco2, bp) in enumerate([(40, True), (44, False), (None, False), (None, False)]):
        PatientMetricFactory(
            patient=patient,
            measured_at=T0 + timedelta(seconds=15 * i),
            pulse=80 + i,
            etco2=etco2,
            **({"map": 93} if bp else partial),
        )

    trend = reading_trend(patient=patient, since=T0, until=T0 + timedelta(seconds=59), points=4)

    assert trend.bucket_seconds == 30
    first, second = trend.buckets
    assert (first["count"], second["count"]) == (2, 2)
    assert {k: first[k] for k in ("pulse", "systolic", "map", "temperature", "etco2")} == {
        "pulse": stats(80, 81, 80.5),
        "systolic": stats(120, 120, 120.0),
        "map": stats(93, 93, 93.0),
        "temperature": stats(36.8, 36.8, 36.8),
        "etco2": stats(40, 44, 42.0),
    }
    assert second == {
        "start": T0 + timedelta(seconds=30),
        "count": 2,
        "pulse": stats(82, 83, 82.5),
        "resp_rate": None,
        "systolic": None,
        "diastolic": None,
        "map": None,
        "spo2": stats(98, 98, 98.0),
        "temperature": None,
        "etco2": None,
        "news2": None,
    }
    response = viewer_client.get(
        f"/api/patients/{patient.uuid}/trend/",
        {"since": "2026-11-23T08:00:00Z", "until": "2026-11-23T08:00:59Z", "points": 4},
    )
    assert response.json()["buckets"][1] == {**second, "start": "2026-11-23T08:00:30Z"}


@pytest.mark.django_db
def test_a_version_2_probe_off_reading_keeps_its_other_signs_in_the_trend() -> None:
    """Version 2: the probe off means no SpO2, and the pulse the same reading carries is the
    patient's (it is judged and scored too). A version 1 artefact sends every value, the
    suspect one included: left out whole, as a motion artefact is."""
    patient = PatientFactory()
    for i, (pulse, spo2, artefact) in enumerate(
        [(90, None, "spo2_probe_off"), (150, 60, "spo2_probe_off"), (160, 97, "motion")]
    ):
        PatientMetricFactory(
            patient=patient,
            measured_at=T0 + timedelta(seconds=i),
            pulse=pulse,
            spo2=spo2,
            artefact=artefact,
        )

    [bucket] = reading_trend(
        patient=patient, since=T0, until=T0 + timedelta(seconds=59), points=2
    ).buckets

    assert (bucket["count"], bucket["pulse"], bucket["spo2"]) == (1, stats(90, 90, 90.0), None)


@pytest.mark.django_db
@pytest.mark.parametrize("points", [2, 3, 7, 10, 59, 300])
def test_never_more_buckets_than_points(points) -> None:
    """A reading every second for ten minutes, the window starting mid-second: whatever the
    points asked for, at most that many buckets, and the width the narrowest that guarantees
    it."""
    patient = PatientFactory()
    start = T0 + timedelta(seconds=7)
    PatientMetric.objects.bulk_create(
        PatientMetricFactory.build(patient=patient, measured_at=start + timedelta(seconds=s))
        for s in range(600)
    )
    since, until = start - timedelta(milliseconds=300), start + timedelta(seconds=599)

    trend = reading_trend(patient=patient, since=since, until=until, points=points)

    assert len(trend.buckets) <= points
    assert sum(b["count"] for b in trend.buckets) == 600
    assert all(b["start"].timestamp() % trend.bucket_seconds == 0 for b in trend.buckets)
    # The next narrower width could need more buckets than points (with another alignment).
    narrower = [w for w in TREND_BUCKET_SECONDS if w < trend.bucket_seconds]
    span = (until - since).total_seconds()
    assert not narrower or math.ceil((span + 1) / narrower[-1]) + 1 > points


# --- the API ------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_trend_endpoint(viewer_client, patient, django_assert_num_queries) -> None:
    url = f"/api/patients/{patient.uuid}/trend/"
    query = {"since": "2026-11-23T08:00:00Z", "until": "2026-11-23T08:02:00Z", "points": 6}

    # The token (with its user and their permissions), the patient (its row alone, not
    # its open alarms: patient_get(plain=True)), and the trend: one query, however many
    # readings. After the response, the access log's row of the window (access/): an INSERT in
    # a savepoint of the test's transaction.
    with django_assert_num_queries(3 + 3):
        response = viewer_client.get(url, query)

    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("since", "until", "bucket_seconds")} == {
        "since": "2026-11-23T08:00:00Z",
        "until": "2026-11-23T08:02:00Z",
        "bucket_seconds": 30,
    }
    assert body["buckets"][0] == {
        "start": "2026-11-23T08:00:00Z",
        "count": 3,
        "pulse": stats(60.0, 64.0, 62.0),
        "resp_rate": stats(14.0, 14.0, 14.0),
        "systolic": stats(120.0, 120.0, 120.0),
        "diastolic": stats(80.0, 80.0, 80.0),
        "map": None,  # not measured in these readings: a gap
        "spo2": stats(98.0, 98.0, 98.0),
        "temperature": stats(36.5, 36.7, 36.6),
        "etco2": None,
        "news2": stats(0.0, 2.0, 1.0),
    }
    assert [b["start"] for b in body["buckets"]] == ["2026-11-23T08:00:00Z", "2026-11-23T08:00:30Z"]


@pytest.mark.django_db
def test_the_trend_defaults_to_the_last_hour(viewer_client) -> None:
    patient = PatientFactory()
    PatientMetricFactory(patient=patient, measured_at=timezone.now() - timedelta(minutes=5))

    before = timezone.now()
    body = viewer_client.get(f"/api/patients/{patient.uuid}/trend/").json()

    until = datetime.fromisoformat(body["until"])
    assert before <= until <= timezone.now()
    assert datetime.fromisoformat(body["since"]) == until - HOUR
    assert body["bucket_seconds"] == 15  # 300 points
    assert [b["count"] for b in body["buckets"]] == [1]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ({"points": 1}, {"points": ["Ensure this value is greater than or equal to 2."]}),
        ({"points": 1001}, {"points": ["Ensure this value is less than or equal to 1000."]}),
        ({"points": "many"}, {"points": ["A valid integer is required."]}),
        (
            {"since": "2026-11-23T09:00:00Z", "until": "2026-11-23T08:00:00Z"},
            {"until": ["'until' must not be before 'since'."]},
        ),
        ({"since": "2999-01-01T00:00:00Z"}, {"since": ["'since' must not be after 'until'."]}),
        ({"until": "yesterday"}, {"until": [WRONG_FORMAT]}),
    ],
)
def test_bad_trend_parameters_are_400(viewer_client, query, fields) -> None:
    patient = PatientFactory()

    response = viewer_client.get(f"/api/patients/{patient.uuid}/trend/", query)

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == fields


@pytest.mark.django_db
def test_the_trend_of_an_unknown_or_malformed_patient(viewer_client) -> None:
    missing = viewer_client.get("/api/patients/00000000-0000-4000-8000-000000000000/trend/")
    malformed = viewer_client.get("/api/patients/123/trend/")

    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "patient_not_found")
    assert (malformed.status_code, malformed.json()["error"]["code"]) == (400, "invalid_parameter")


@pytest.mark.django_db
def test_the_trend_filter_is_artefact_voids() -> None:
    """The trend's SQL filter and NEWS2's rule agree on every kind of reading."""
    patient = PatientFactory()
    start = timezone.now() - timedelta(hours=1)
    cases = [
        (artefact, spo2) for artefact in ("", "spo2_probe_off", "motion") for spo2 in (None, 95)
    ]
    for n, (artefact, spo2) in enumerate(cases):
        PatientMetricFactory(
            patient=patient, measured_at=start + timedelta(minutes=n), artefact=artefact, spo2=spo2
        )
    rows = PatientMetric.objects.filter(patient=patient)
    kept = {(r.artefact, r.spo2) for r in rows.filter(NOT_VOIDED)}
    assert kept == {(r.artefact, r.spo2) for r in rows if not artefact_voids(r)}
    assert kept == {("", None), ("", 95), ("spo2_probe_off", None)}
