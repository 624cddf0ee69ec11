"""An outside tester's attack on the alarms through input (issue 20, round 2): what a monitor
really sends in a cardiac arrest. Through the consumer on fake Kafka clients (vitals/tests/
fakes.py): the message parsed by the contract, stored, judged."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME

from patients.models import Patient
from vitals.models import Alarm, PatientMetric
from vitals.tests.fakes import worker_create

pytestmark = pytest.mark.django_db


def message(patient: uuid.UUID, seconds_ago: float, **signs) -> tuple[bytes, bytes]:
    at = datetime.now(tz=UTC) - timedelta(seconds=seconds_ago)
    body = {
        "schema_version": 2,
        "patient_uuid": str(patient),
        "patient_name": "ann",
        "timestamp": at.isoformat(timespec="milliseconds"),
        **signs,
    }
    return str(patient).encode(), json.dumps(body).encode()


@pytest.mark.parametrize(
    ("other", "refused"),
    [
        pytest.param(
            {"bp": "35/35"}, ("bp_refused", "medium", "active", 35), id="flat_arterial_pressure"
        ),
        pytest.param({"bp": "25/15"}, ("bp_refused", "high", "active", 25), id="systolic_below_30"),
        pytest.param(
            {"temperature": 24.5},
            ("temperature_refused", "high", "active", 24.5),
            id="deep_hypothermia",
        ),
    ],
)
def test_a_pulse_of_0_raises_asystole_whatever_the_other_signs_of_the_arrest_read(other, refused):
    """And the refused sign its own alarm (high below its range), never dropped in silence."""
    asystole_raised_from(other, refused)


def test_a_pulse_of_0_beside_a_low_pressure_in_range_raises_asystole():
    """The reference: the same message with a pressure the contract takes."""
    asystole_raised_from({"bp": "40/30"})


def asystole_raised_from(other: dict, *refused: tuple) -> None:
    worker, consumer, producer = worker_create()
    ann = uuid.uuid4()
    consumer.add([message(ann, 2, pulse=0, spo2=None, **other)])

    assert worker.process_batch() == 1

    assert producer.on("vitals.dlq") == []
    assert list(PatientMetric.objects.values_list("pulse", flat=True)) == [0]
    assert list(
        Alarm.objects.order_by("kind").values_list("kind", "priority", "state", "value")
    ) == [("asystole", "high", "active", 0), *refused]


def test_a_sign_refused_as_below_its_range_is_a_high_alarm_until_a_valid_one_comes():
    """A pressure collapsing below what the contract takes (PEA: a pulse on the ECG, an
    arterial line at 22/14) must not vanish: the rest of the reading is judged, the old
    120/80 is no longer the patient's newest pressure (NEWS2 and the tile would score and show
    it for half an hour), and a `bp_refused` alarm, high for a value below the range, sounds
    at once until a valid pressure comes (found by review: the refused sign was dropped in
    silence, the patient with no alarm at all, where refusing the whole reading had at least
    raised no_data)."""
    worker, consumer, producer = worker_create()
    ann = uuid.uuid4()
    consumer.add([message(ann, 60, pulse=80, bp="120/80", spo2=97, resp_rate=16)])
    worker.process_batch()
    consumer.add([message(ann, 50 - s, pulse=80, bp="22/14") for s in range(3)])

    assert worker.process_batch() == 3

    assert producer.on("vitals.dlq") == []
    patient = Patient.objects.get(uuid=ann)
    assert not {"systolic", "diastolic"} & patient.latest_signs.keys()
    assert patient.latest_signs["pulse"]["value"] == 80
    [alarm] = Alarm.objects.filter(kind="bp_refused")
    assert (alarm.priority, alarm.state, alarm.threshold) == ("high", "active", 30)
    assert alarm.message == "Blood pressure refused: 'systolic' 22 is outside 30-300"

    consumer.add([message(ann, 40, pulse=80, bp="96/60")])
    assert worker.process_batch() == 1

    alarm.refresh_from_db()
    assert alarm.state == "resolved"
    signs = Patient.objects.get(uuid=ann).latest_signs
    assert (signs["systolic"]["value"], signs["diastolic"]["value"]) == (96, 60)


@pytest.mark.parametrize(
    ("signs", "kind", "priority"),
    [
        pytest.param({"temperature": 46.0}, "temperature_refused", "medium", id="above_range"),
        pytest.param({"bp": "35/35"}, "bp_refused", "medium", id="implausible"),
        pytest.param({"spo2": 101}, "spo2_refused", "medium", id="spo2_above"),
    ],
)
def test_a_sign_refused_otherwise_is_a_medium_alarm(signs, kind, priority):
    """Above the range, or a pair that cannot be (an artefact as likely as the patient):
    medium, never silent. Each sign its own kind, so each resolves with its own valid value."""
    worker, consumer, _ = worker_create()
    ann = uuid.uuid4()
    consumer.add([message(ann, 5, pulse=80, **signs)])

    assert worker.process_batch() == 1

    assert list(Alarm.objects.values_list("kind", "priority", "state")) == [
        (kind, priority, "active")
    ]


@pytest.mark.xfail(
    strict=True,
    reason=(
        "A monitor whose clock is set more than VITALS_MAX_FUTURE_SKEW_SECONDS (5 min) ahead "
        "(a date typed wrong after a battery change, a month or a year ahead) has every "
        "reading refused (timestamp_in_future) although its Kafka timestamp, the gateway's "
        "clock, is right: a cardiac arrest raises no asystole, only `no_data` (medium) 15 s "
        "later, saying the monitor is silent, and the `clock_skew` alarm made for exactly "
        "this never sounds, the readings being refused before they are judged. Fix "
        "(vitals/contract.py _parse_timestamp and its callers): refuse a timestamp beyond "
        "max_future only when the message has no Kafka timestamp or that too is beyond it; "
        "otherwise keep it (measured_at as sent), so the engine judges it at sent_at and "
        "raises clock_skew (AlarmEngine.timing already does both); with the idempotency key "
        "including sent_at (test_alarm_clocks.py's set-back test), the stamps it takes from "
        "the future collide with nothing when the clock is set right."
    ),
)
def test_a_monitor_clock_set_a_month_ahead_still_raises_asystole_and_says_its_clock_is_off():
    worker, consumer, producer = worker_create()
    ann = uuid.uuid4()
    ahead = -timedelta(days=30).total_seconds()  # "seconds ago", negative: in the future
    consumer.add([message(ann, ahead + 10, pulse=0), message(ann, ahead + 5, pulse=0)])
    sent = datetime.now(tz=UTC) - timedelta(seconds=1)
    for record in consumer.log:
        record.timestamp = lambda: (TIMESTAMP_CREATE_TIME, int(sent.timestamp() * 1000))

    assert worker.process_batch() == 2

    assert producer.on("vitals.dlq") == []
    kinds = ("asystole", "clock_skew")  # (news2 and sign_missing beside them: pulse only)
    assert sorted(
        Alarm.objects.filter(kind__in=kinds).values_list("kind", "priority", "state")
    ) == [
        ("asystole", "high", "active"),
        ("clock_skew", "low", "active"),
    ]
    assert Alarm.objects.get(kind="clock_skew").message == "Monitor clock 2591996 s ahead"


def test_a_sign_refused_beside_the_pulse_is_logged_not_dropped_silently(caplog):
    """The refused sign is said (one warning with its reason and detail, as a whole refusal's
    DLQ headers would say them), the reading stored without it."""
    worker, consumer, producer = worker_create()
    ann = uuid.uuid4()
    consumer.add([message(ann, 2, pulse=0, temperature=24.5)])

    with caplog.at_level("WARNING", logger="vitals.contract"):
        assert worker.process_batch() == 1

    assert producer.on("vitals.dlq") == []
    assert list(PatientMetric.objects.values_list("pulse", "temperature")) == [(0, None)]
    [record] = [r for r in caplog.records if r.name == "vitals.contract"]
    assert record.getMessage() == "sign refused by the contract: the reading kept without it"
    assert record.patient_uuid == str(ann)
    assert record.refused == [
        {
            "fields": ["temperature"],
            "reason": "out_of_range",
            "detail": "'temperature' 24.5 is outside 25.0-45.0",
        }
    ]
