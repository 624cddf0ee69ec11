"""The alarm engine against the database: readings stored with reading_bulk_store, judged by
AlarmEngine in the same transaction, Alarm rows and AlarmEvent outbox rows written; and the
consumer's alarm path (VitalsConsumer driven with fake Kafka clients): a failed transaction,
the outbox sweep to the alarms topic."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import TopicPartition
from django.db import OperationalError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from patients.models import Patient
from patients.tests.factories import PatientFactory
from vitals.alarm_engine import AlarmEngine
from vitals.contract import Reading, reading_to_message
from vitals.models import Alarm, AlarmEvent, PatientMetric
from vitals.selectors import patient_metrics_newest
from vitals.services import alarm_acknowledge, reading_bulk_store
from vitals.tests.factories import (
    T0,
    AlarmFactory,
    AlarmLimitsFactory,
    PatientMetricFactory,
)
from vitals.tests.fakes import worker_create

pytestmark = pytest.mark.django_db

NORMAL = {
    "pulse": 72,
    "resp_rate": 14,
    "systolic": 120,
    "diastolic": 80,
    "spo2": 98,
    "temperature": 36.8,
}  # NEWS2 0
PROBE_OFF = {"spo2": 0, "artefact": "spo2_probe_off"}


def at(seconds: float, start: datetime = T0) -> datetime:
    return start + timedelta(seconds=seconds)


def reading(patient: Patient, seconds: float, start: datetime = T0, **values) -> Reading:
    """A normal adult reading of `patient` at start + seconds, with `values` changed."""
    return Reading(
        patient_uuid=patient.uuid,
        patient_name=patient.name,
        measured_at=at(seconds, start),
        **(NORMAL | values),
    )


def judge(engine: AlarmEngine, readings: list[Reading]) -> list[tuple[str, str]]:
    """Store readings and judge the new ones in one transaction, as the consumer does;
    return the outbox events written, as (type, alarm kind)."""
    with transaction.atomic():
        result = reading_bulk_store(readings=readings)
        events = engine.process(result.new)
    return [(event.type, event.alarm.kind) for event in events]


def alarms(patient: Patient | None = None) -> list[tuple]:
    rows = Alarm.objects.order_by("id")
    if patient is not None:
        rows = rows.filter(patient=patient)
    return list(
        rows.values_list(
            "kind", "priority", "state", "value", "threshold", "raised_at", "resolved_at"
        )
    )


def events(patient: Patient | None = None) -> list[tuple[str, str]]:
    rows = AlarmEvent.objects.order_by("id")
    if patient is not None:
        rows = rows.filter(alarm__patient=patient)
    return list(rows.values_list("type", "alarm__kind"))


def assert_recent(iso: str) -> None:
    """The `at` of a payload: when the event was written, i.e. just now."""
    written = datetime.fromisoformat(iso)
    assert timedelta(0) <= timezone.now() - written < timedelta(seconds=30)


# --- raising -----------------------------------------------------------------------------------


def test_two_consecutive_breaching_readings_in_one_batch_raise_one_alarm_and_one_event():
    patient = PatientFactory(name="ann")

    # Pulse 130 breaches the bedside limit 120 and scores NEWS2 2: only the limit alarm.
    written = judge(AlarmEngine(), [reading(patient, 0, pulse=130), reading(patient, 5, pulse=130)])

    assert written == [("raised", "pulse_high")]
    assert alarms(patient) == [("pulse_high", "medium", "active", 130, 120, at(5), None)]
    alarm = Alarm.objects.get()
    assert alarm.message == "Pulse high: 130 /min (> 120)"
    [event] = AlarmEvent.objects.all()
    assert (event.alarm_id, event.type, event.published_at) == (alarm.pk, "raised", None)
    assert event.payload == {
        "event": "raised",
        "alarm": {
            "id": alarm.pk,
            "kind": "pulse_high",
            "priority": "medium",
            "state": "active",
            "message": "Pulse high: 130 /min (> 120)",
            "value": 130,
            "threshold": 120,
            "raised_at": "2026-11-23T08:00:05+00:00",
            "activated_at": alarm.activated_at.isoformat(),
            "escalated_at": None,
            "acknowledged_at": None,
            "acknowledged_by": None,
            "acknowledged_priority": None,
            "acknowledged_message": None,
            "resolved_at": None,
        },
        "patient": {"uuid": str(patient.uuid), "name": "ann"},
        "at": event.payload["at"],
    }
    assert_recent(event.payload["at"])
    assert_recent(event.payload["alarm"]["activated_at"])


def test_one_breaching_reading_raises_nothing():
    patient = PatientFactory()
    assert judge(AlarmEngine(), [reading(patient, 0, pulse=130), reading(patient, 5)]) == []
    assert judge(AlarmEngine(), [reading(patient, 10, pulse=130)]) == []
    assert (alarms(), events()) == ([], [])


def test_spo2_88_raises_spo2_low_and_the_news2_red_score_alarm_together():
    patient = PatientFactory(name="bob")

    # SpO2 88: below the limit 90, and NEWS2 scale 1 scores it 3, a single-parameter red score.
    written = judge(AlarmEngine(), [reading(patient, 0, spo2=88), reading(patient, 5, spo2=88)])

    assert written == [("raised", "spo2_low"), ("raised", "news2")]
    assert alarms(patient) == [
        ("spo2_low", "medium", "active", 88, 90, at(5), None),
        ("news2", "medium", "active", 3, 5, at(5), None),
    ]
    assert list(Alarm.objects.order_by("id").values_list("message", flat=True)) == [
        "SpO2 low: 88 % (< 90)",
        "NEWS2 3 (low-medium risk)",
    ]
    payloads = [e.payload for e in AlarmEvent.objects.order_by("id")]
    assert [(p["event"], p["alarm"]["kind"], p["alarm"]["value"]) for p in payloads] == [
        ("raised", "spo2_low", 88),
        ("raised", "news2", 3),
    ]
    assert all(p["patient"] == {"uuid": str(patient.uuid), "name": "bob"} for p in payloads)


# --- continuity across a restart ---------------------------------------------------------------


def test_a_new_engine_replays_the_database_and_raises_on_the_second_breaching_reading():
    patient = PatientFactory()
    assert judge(AlarmEngine(), [reading(patient, 0, spo2=88)]) == []

    # The consumer restarted: a new engine sees only the second reading, the first is in the DB.
    written = judge(AlarmEngine(), [reading(patient, 5, spo2=88)])

    assert written == [("raised", "spo2_low"), ("raised", "news2")]
    assert alarms(patient) == [
        ("spo2_low", "medium", "active", 88, 90, at(5), None),
        ("news2", "medium", "active", 3, 5, at(5), None),
    ]


def test_replay_uses_readings_stored_without_the_engine():
    # Readings written by anything else (an earlier release, a bulk import) count as well.
    patient = PatientFactory()
    PatientMetricFactory(patient=patient, measured_at=at(0), pulse=130)

    assert judge(AlarmEngine(), [reading(patient, 5, pulse=130)]) == [("raised", "pulse_high")]
    assert alarms(patient) == [("pulse_high", "medium", "active", 130, 120, at(5), None)]


def test_a_new_engine_replays_every_new_patient_of_a_batch_in_one_statement():
    # Ann's last stored reading breaches; Bob's breaching one is older than 20 normal ones
    # (out of the replay); Cid has a reading of the batch only.
    ann, bob, cid = PatientFactory(name="ann"), PatientFactory(name="bob"), PatientFactory()
    PatientMetricFactory(patient=ann, measured_at=at(0), pulse=130)
    PatientMetricFactory(patient=bob, measured_at=at(0), pulse=130)
    for n in range(1, 21):
        PatientMetricFactory(patient=bob, measured_at=at(n), pulse=72)
    engine = AlarmEngine()
    with transaction.atomic():
        new = reading_bulk_store(readings=[reading(p, 30, pulse=130) for p in (ann, bob, cid)]).new
        with CaptureQueriesContext(connection) as queries:
            written = [(e.type, e.alarm.patient.name) for e in engine.process(new)]

    assert written == [("raised", "ann")]
    warm_up = [q["sql"] for q in queries.captured_queries if "vitals_patientmetric" in q["sql"]]
    assert len(warm_up) == 1
    if connection.vendor == "postgresql":
        # One LATERAL join over the ids and counts (two array parameters), planned once
        # whatever the number of patients.
        assert warm_up[0].count("LATERAL") == 1
        assert "UNION" not in warm_up[0]
    else:
        assert warm_up[0].count("UNION ALL") == 2


def test_the_warm_up_reads_each_patients_newest_readings():
    # The engine's warm-up query (patient_metrics_newest: a LATERAL join on PostgreSQL, a
    # UNION ALL on SQLite) against each patient's own ORM query: the same rows, newest first,
    # for patients with more readings than asked for, fewer, none, and one whose readings
    # arrived out of their measured order.
    ann, bob, cid, dan = PatientFactory.create_batch(4)
    for n in range(5):
        PatientMetricFactory(patient=ann, measured_at=at(n), pulse=70 + n)
    PatientMetricFactory(patient=bob, measured_at=at(9), pulse=90)
    PatientMetricFactory(patient=dan, measured_at=at(9), pulse=91)
    PatientMetricFactory(patient=dan, measured_at=at(3), pulse=92)
    counts = {ann.pk: 3, bob.pk: 4, cid.pk: 2, dan.pk: 21}

    found = patient_metrics_newest(counts=counts)

    def shown(newest):
        return {pid: [(m.pk, m.pulse, m.measured_at) for m in ms] for pid, ms in newest.items()}

    each_alone = {
        pid: list(PatientMetric.objects.filter(patient_id=pid).order_by("-id")[:n])
        for pid, n in counts.items()
    }
    assert shown(found) == shown(each_alone)
    assert [m.pulse for m in found[ann.pk]] == [74, 73, 72]
    assert found[cid.pk] == []
    assert [m.pulse for m in found[dan.pk]] == [92, 91]
    assert all(m.patient_id == pid for pid, ms in found.items() for m in ms)


@pytest.mark.parametrize("state", ["active", "acknowledged"])
def test_an_open_alarm_is_not_raised_again_by_a_new_engine_and_resolves_with_hysteresis(state):
    patient = PatientFactory(name="cid")
    for seconds in (0, 5):
        PatientMetricFactory(patient=patient, measured_at=at(seconds), pulse=130)
    alarm = AlarmFactory(
        patient=patient,
        kind="pulse_high",
        state=state,
        message="Pulse high: 130 /min (> 120)",
        value=130,
        threshold=120,
        raised_at=at(5),
    )

    engine = AlarmEngine()
    assert judge(engine, [reading(patient, 10, pulse=130)]) == []
    assert Alarm.objects.count() == 1
    # Hysteresis: the alarm at > 120 clears at <= 115; 118 and 117 are neither a breach nor a
    # clear, and each one starts the count of clears again.
    assert (
        judge(
            engine,
            [
                reading(patient, 15, pulse=118),
                reading(patient, 20, pulse=115),
                reading(patient, 25, pulse=117),
                reading(patient, 30, pulse=110),
            ],
        )
        == []
    )
    # Another restart between the first and the second clear: the count survives it too.
    written = judge(AlarmEngine(), [reading(patient, 35, pulse=100)])

    assert written == [("resolved", "pulse_high")]
    assert alarms() == [("pulse_high", "medium", "resolved", 130, 120, at(5), at(35))]
    [event] = AlarmEvent.objects.all()
    assert event.alarm_id == alarm.pk
    assert event.payload["event"] == "resolved"
    assert event.payload["alarm"] | {"id": None} == {
        "id": None,
        "kind": "pulse_high",
        "priority": "medium",
        "state": "resolved",
        "message": "Pulse high: 130 /min (> 120)",
        "value": 130,
        "threshold": 120,
        "raised_at": "2026-11-23T08:00:05+00:00",
        "activated_at": None,
        "escalated_at": None,
        "acknowledged_at": None,
        "acknowledged_by": None,
        "acknowledged_priority": None,
        "acknowledged_message": None,
        "resolved_at": "2026-11-23T08:00:35+00:00",
    }


def test_a_new_engine_escalates_an_alarm_it_loaded_from_the_database():
    patient = PatientFactory()
    PatientMetricFactory(patient=patient, measured_at=at(0), spo2=88)
    PatientMetricFactory(patient=patient, measured_at=at(5), spo2=88)
    AlarmFactory(patient=patient, raised_at=at(5))  # spo2_low, medium, 88 < 90
    AlarmFactory(
        patient=patient, kind="news2", message="NEWS2 3", value=3, threshold=5, raised_at=at(5)
    )

    written = judge(AlarmEngine(), [reading(patient, 10, spo2=83)])

    assert written == [("priority_changed", "spo2_low")]
    assert alarms() == [
        ("spo2_low", "high", "active", 83, 90, at(5), None),
        ("news2", "medium", "active", 3, 5, at(5), None),
    ]


def test_readings_stamped_before_the_stored_ones_are_judged_in_arrival_order_by_any_engine():
    # Issue 14: readings stamped before those already stored (a monitor clock set back, or
    # one that ran fast before) used to be ignored as "late": five pulse-0 readings raised no
    # asystole alarm. The order the monitor sent them in is the order they are judged in.
    patient = PatientFactory()
    engine = AlarmEngine()
    judge(engine, [reading(patient, s, pulse=130) for s in (10, 15, 20)])
    assert alarms() == [("pulse_high", "medium", "active", 130, 120, at(15), None)]

    # The clock goes back: two normal readings resolve the alarm, at a time that never goes
    # back (the last reading judged).
    assert judge(engine, [reading(patient, 2), reading(patient, 3)]) == [("resolved", "pulse_high")]
    assert alarms() == [("pulse_high", "medium", "resolved", 130, 120, at(15), at(20))]
    # A new engine (a restart) replays in arrival order too: no pulse is an alarm at once.
    assert judge(AlarmEngine(), [reading(patient, 4, pulse=0)]) == [("raised", "asystole")]
    assert PatientMetric.objects.filter(patient=patient).count() == 6


# --- per-patient limits ------------------------------------------------------------------------


def test_alarm_limits_rows_replace_the_bedside_defaults_of_their_patient_only():
    own, default = PatientFactory(name="own"), PatientFactory(name="default")
    AlarmLimitsFactory(patient=own, pulse_high=140)
    engine = AlarmEngine()

    written = judge(
        engine,
        [reading(p, s, pulse=130) for p in (own, default) for s in (0, 5, 10)],
    )

    assert written == [("raised", "pulse_high")]
    assert alarms(own) == []
    assert alarms(default) == [("pulse_high", "medium", "active", 130, 120, at(5), None)]

    # Above 140 it alarms (and pulse >= 131 is a NEWS2 red score too).
    assert judge(engine, [reading(own, 15, pulse=145), reading(own, 20, pulse=145)]) == [
        ("raised", "pulse_high"),
        ("raised", "news2"),
    ]
    assert alarms(own) == [
        ("pulse_high", "medium", "active", 145, 140, at(20), None),
        ("news2", "medium", "active", 3, 5, at(20), None),
    ]
    assert Alarm.objects.get(patient=own, kind="pulse_high").message == (
        "Pulse high: 145 /min (> 140)"
    )


def test_delay_readings_of_the_limits_row_governs_raising_and_resolving():
    patient = PatientFactory()
    AlarmLimitsFactory(patient=patient, delay_readings=3)
    engine = AlarmEngine()

    # Pulse 125: above 120, NEWS2 2 only.
    assert judge(engine, [reading(patient, 0, pulse=125), reading(patient, 5, pulse=125)]) == []
    assert judge(engine, [reading(patient, 10, pulse=125)]) == [("raised", "pulse_high")]
    assert judge(engine, [reading(patient, 15), reading(patient, 20)]) == []
    assert judge(engine, [reading(patient, 25)]) == [("resolved", "pulse_high")]

    assert alarms() == [("pulse_high", "medium", "resolved", 125, 120, at(10), at(25))]
    assert events() == [("raised", "pulse_high"), ("resolved", "pulse_high")]


def test_delay_of_one_reading_alarms_at_once():
    patient = PatientFactory()
    AlarmLimitsFactory(patient=patient, delay_readings=1)

    assert judge(AlarmEngine(), [reading(patient, 0, pulse=125)]) == [("raised", "pulse_high")]
    assert alarms() == [("pulse_high", "medium", "active", 125, 120, at(0), None)]


# --- escalation --------------------------------------------------------------------------------


def test_a_value_past_the_critical_level_escalates_medium_to_high_once():
    patient = PatientFactory(name="dee")
    engine = AlarmEngine()
    judge(engine, [reading(patient, 0, pulse=130), reading(patient, 5, pulse=130)])

    # Beyond 150 the pulse alarm is high priority.
    assert judge(engine, [reading(patient, 10, pulse=155)]) == [("priority_changed", "pulse_high")]

    assert alarms() == [("pulse_high", "high", "active", 155, 120, at(5), None)]
    alarm = Alarm.objects.get()
    assert alarm.message == "Pulse high: 155 /min (> 120)"
    escalated = AlarmEvent.objects.get(type="priority_changed")
    assert escalated.alarm_id == alarm.pk
    assert {k: escalated.payload["alarm"][k] for k in ("priority", "value", "message")} == {
        "priority": "high",
        "value": 155,
        "message": "Pulse high: 155 /min (> 120)",
    }
    assert escalated.payload["alarm"]["raised_at"] == "2026-11-23T08:00:05+00:00"
    # The raised event kept the alarm as it was then.
    raised = AlarmEvent.objects.get(type="raised")
    assert (raised.payload["alarm"]["priority"], raised.payload["alarm"]["value"]) == (
        "medium",
        130,
    )

    # Back to a medium-level value: no de-escalation, no event.
    assert judge(engine, [reading(patient, 15, pulse=130)]) == []
    assert alarms() == [("pulse_high", "high", "active", 155, 120, at(5), None)]
    assert events() == [("raised", "pulse_high"), ("priority_changed", "pulse_high")]


# --- artefacts ---------------------------------------------------------------------------------


def test_probe_off_raises_the_low_priority_technical_alarm_and_not_spo2_low():
    patient = PatientFactory()
    engine = AlarmEngine()

    written = judge(engine, [reading(patient, s, **PROBE_OFF) for s in (0, 5, 10)])

    # SpO2 0 three times, yet no spo2_low and no NEWS2 alarm: the values are not the patient's.
    assert written == [("raised", "spo2_probe_off")]
    assert alarms() == [("spo2_probe_off", "low", "active", 0, None, at(0), None)]
    assert Alarm.objects.get().message == "SpO2 probe off: no oximetry"
    assert (
        list(PatientMetric.objects.values_list("artefact", "news2_score"))
        == [("spo2_probe_off", None)] * 3
    )
    payload = AlarmEvent.objects.get().payload["alarm"]
    assert (payload["priority"], payload["threshold"]) == ("low", None)

    # The probe back on: the technical alarm resolves with the first good reading.
    assert judge(engine, [reading(patient, 15)]) == [("resolved", "spo2_probe_off")]
    assert alarms() == [("spo2_probe_off", "low", "resolved", 0, None, at(0), at(15))]


def test_an_artefact_between_two_low_readings_counts_neither_for_nor_against_spo2_low():
    patient = PatientFactory()

    written = judge(
        AlarmEngine(),
        [
            reading(patient, 0, spo2=88),
            reading(patient, 5, **PROBE_OFF),
            reading(patient, 10, spo2=88),
        ],
    )

    assert written == [
        ("raised", "spo2_probe_off"),
        ("resolved", "spo2_probe_off"),
        ("raised", "spo2_low"),
        ("raised", "news2"),
    ]
    assert alarms() == [
        ("spo2_probe_off", "low", "resolved", 0, None, at(5), at(10)),
        ("spo2_low", "medium", "active", 88, 90, at(10), None),
        ("news2", "medium", "active", 3, 5, at(10), None),
    ]


# --- the consumer's alarm path, with fake Kafka clients ------------------------------------------


# Consumer tests go through reading_parse, which refuses readings from the future.
RECENT = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(minutes=10)


def test_a_failed_transaction_makes_the_engine_forget_and_the_retry_rederives_from_the_db(
    monkeypatch,
):
    patient = PatientFactory(name="dan")
    worker, consumer, producer = worker_create()
    engine = worker.alarm_engine
    judge_for_real = engine.process
    fail_next = []

    def process_then_fail(metrics):
        decided = judge_for_real(metrics)  # memory changed, alarm rows written...
        if fail_next:
            fail_next.pop()
            raise OperationalError("database is locked")  # ...then all rolled back
        return decided

    monkeypatch.setattr(engine, "process", process_then_fail)

    def batch(*changes: tuple[float, dict], fail: bool = False) -> None:
        consumer.add_readings([reading(patient, s, RECENT, **values) for s, values in changes])
        fail_next[:] = [True] if fail else []
        assert worker.process_batch() == len(changes)
        if fail:
            # Nothing of the batch is left: no reading, no memory (of alarms, of patients);
            # the consumer seeks back.
            assert engine.states == {}
            assert worker.patient_cache.patients == worker.patient_cache.latest == {}
            assert consumer.next == len(consumer.log) - len(changes)
            assert worker.process_batch() == len(changes)
        assert consumer.next == len(consumer.log)

    low = {"spo2": 88}
    batch((0, low))  # the first breaching reading: remembered
    assert set(engine.states) == {patient.pk}
    assert set(worker.patient_cache.patients) == {patient.uuid}
    batch((5, low), fail=True)  # the second: its transaction fails, then the retry goes through
    assert alarms() == [
        ("spo2_low", "medium", "active", 88, 90, at(5, RECENT), None),
        ("news2", "medium", "active", 3, 5, at(5, RECENT), None),
    ]
    batch((10, {}), (15, {}), fail=True)  # resolution, failed once then retried
    batch((20, low), (25, low))  # the condition comes back: new alarms, not a duplicate

    assert alarms() == [
        ("spo2_low", "medium", "resolved", 88, 90, at(5, RECENT), at(15, RECENT)),
        ("news2", "medium", "resolved", 3, 5, at(5, RECENT), at(15, RECENT)),
        ("spo2_low", "medium", "active", 88, 90, at(25, RECENT), None),
        ("news2", "medium", "active", 3, 5, at(25, RECENT), None),
    ]
    assert events() == [
        ("raised", "spo2_low"),
        ("raised", "news2"),
        ("resolved", "spo2_low"),
        ("resolved", "news2"),
        ("raised", "spo2_low"),
        ("raised", "news2"),
    ]
    totals = worker.totals
    assert (totals.stored, totals.duplicates, totals.invalid, totals.retries) == (6, 0, 0, 2)
    assert totals.alarm_events == 6
    assert PatientMetric.objects.count() == 6
    assert consumer.stored[-1] == ("vitals", 0, 6)
    # Each committed batch's events went out at once, each exactly once; nothing to the DLQ.
    published = producer.on("alarms")
    assert [m["event_id"] for _, m, _ in published] == list(
        AlarmEvent.objects.order_by("id").values_list("id", flat=True)
    )
    assert producer.on("vitals.dlq") == []
    assert not AlarmEvent.objects.filter(published_at__isnull=True).exists()


def test_revoked_partitions_take_the_alarm_memory_with_them():
    patient = PatientFactory()
    worker, consumer, _ = worker_create()
    consumer.add_readings([reading(patient, 0, RECENT, spo2=88)])
    worker.process_batch()
    assert set(worker.alarm_engine.states) == {patient.pk}
    assert set(worker.patient_cache.patients) == {patient.uuid}

    worker.on_revoke(consumer, [TopicPartition("vitals", 0)])

    assert worker.alarm_engine.states == {}
    assert worker.patient_cache.patients == worker.patient_cache.latest == {}
    consumer.add_readings([reading(patient, 5, RECENT, spo2=88)])
    worker.process_batch()
    assert events() == [("raised", "spo2_low"), ("raised", "news2")]


def test_incremental_assignments_add_up_and_revocations_take_away():
    """Cooperative-sticky rebalancing: on_assign and on_revoke get only the partitions that
    change hands."""
    worker, consumer, _ = worker_create()

    worker.on_assign(consumer, [TopicPartition("vitals", 0), TopicPartition("vitals", 1)])
    worker.on_assign(consumer, [TopicPartition("vitals", 2)])
    assert worker.assigned == {("vitals", 0), ("vitals", 1), ("vitals", 2)}

    worker.on_revoke(consumer, [TopicPartition("vitals", 1)])
    assert worker.assigned == {("vitals", 0), ("vitals", 2)}


def test_publish_sends_each_pending_event_once_and_marks_only_the_delivered(django_user_model):
    ann, bob = PatientFactory(name="ann"), PatientFactory(name="bob")
    judge(
        AlarmEngine(),
        [reading(ann, s, pulse=130) for s in (0, 5)] + [reading(bob, s, spo2=88) for s in (0, 5)],
    )
    worker, _, producer = worker_create()
    pending = list(AlarmEvent.objects.order_by("id"))
    assert [(e.type, e.alarm.kind, e.alarm.patient.name) for e in pending] == [
        ("raised", "pulse_high", "ann"),
        ("raised", "spo2_low", "bob"),
        ("raised", "news2", "bob"),
    ]

    producer.fail = 1  # the broker does not take the first one
    assert worker.publish_alarm_events() == 2

    assert producer.on("alarms") == [
        (
            str(e.alarm.patient.uuid).encode(),
            {"event_id": e.pk, **e.payload},
            [("event_id", str(e.pk).encode())],
        )
        for e in pending
    ]
    assert producer.on("alarms")[1][1]["patient"] == {"uuid": str(bob.uuid), "name": "bob"}
    assert producer.on("alarms")[1][1]["alarm"]["kind"] == "spo2_low"
    unpublished = AlarmEvent.objects.filter(published_at__isnull=True)
    assert list(unpublished.values_list("id", flat=True)) == [pending[0].pk]

    # The next sweep sends the one left, and only it.
    producer.produced.clear()
    assert worker.publish_alarm_events() == 1
    assert producer.on("alarms") == [
        (
            str(ann.uuid).encode(),
            {"event_id": pending[0].pk, **pending[0].payload},
            [("event_id", str(pending[0].pk).encode())],
        )
    ]
    assert not unpublished.exists()

    # An acknowledgement (written by the API) goes out on the sweep after it; nothing else.
    producer.produced.clear()
    alarm = Alarm.objects.get(patient=bob, kind="spo2_low")
    alarm_acknowledge(alarm=alarm, user=django_user_model.objects.create_user("nurse"))
    assert worker.publish_alarm_events() == 1
    [(key, message, _)] = producer.on("alarms")
    assert key == str(bob.uuid).encode()
    ack = AlarmEvent.objects.get(type="acknowledged")
    assert message["event_id"] == ack.pk
    assert (message["event"], message["alarm"]["state"], message["alarm"]["acknowledged_by"]) == (
        "acknowledged",
        "acknowledged",
        "nurse",
    )
    producer.produced.clear()
    assert worker.publish_alarm_events() == 0
    assert producer.produced == []


def test_alarm_messages_are_keyed_like_the_readings_of_their_patient():
    # Keys are the patient uuid as text: the same bytes the readings are keyed by.
    patient = PatientFactory(uuid=uuid.UUID("6f1c2a9e-8d4b-4c3e-9f0a-1b2c3d4e5f60"))
    judge(AlarmEngine(), [reading(patient, s, spo2=88) for s in (0, 5)])
    worker, _, producer = worker_create()

    assert worker.publish_alarm_events() == 2

    key, _ = reading_to_message(reading(patient, 0))
    assert {k for k, _, _ in producer.on("alarms")} == {key}


# --- partial readings (contract version 2) -------------------------------------------------------

NOT_MEASURED = dict.fromkeys(NORMAL)
BP_85_50 = NOT_MEASURED | {"systolic": 85, "diastolic": 50, "map": 62}
SPO2_ONLY = NOT_MEASURED | {"spo2": 97}


def test_partial_readings_are_judged_sign_by_sign_and_news2_on_the_newest_valid_values():
    patient = PatientFactory()
    judge(AlarmEngine(), [reading(patient, 0)])

    # The blood pressure of 5 s counts once; the SpO2 of 10 s leaves it be, but its NEWS2 takes
    # that systolic (valid 30 min): a 3, the second in a row, raises the escalation alarm.
    assert judge(
        AlarmEngine(), [reading(patient, 5, **BP_85_50), reading(patient, 10, **SPO2_ONLY)]
    ) == [("raised", "news2")]
    # A new engine replays the partial readings stored: the second low pressure raises.
    assert judge(AlarmEngine(), [reading(patient, 15, **BP_85_50)]) == [
        ("raised", "systolic_low"),
        ("raised", "map_low"),
    ]
    assert [(k, p, v, t) for k, p, _, v, t, *_ in alarms(patient)] == [
        ("news2", "medium", 3, 5),
        ("systolic_low", "medium", 85, 90),
        ("map_low", "medium", 62, 65),
    ]
    assert Alarm.objects.get(kind="map_low").message == "MAP low: 62 mmHg (< 65)"


def test_an_incomplete_news2_that_triggers_raises_the_escalation_alarm():
    patient = PatientFactory()
    # Never a pulse, resp. rate, SpO2 or temperature: NEWS2 3 (systolic), incomplete: a lower
    # bound that already triggers (a single 3).
    written = judge(AlarmEngine(), [reading(patient, s, **BP_85_50) for s in (0, 5, 10)])

    assert written == [
        ("raised", "systolic_low"),
        ("raised", "map_low"),
        ("raised", "sign_missing"),  # no pulse, resp. rate or SpO2 ever: their sensors are off
        ("raised", "news2"),
    ]
    alarm = Alarm.objects.get(patient=patient, kind="news2")
    assert (alarm.priority, alarm.message) == (
        "medium",
        "NEWS2 3 or more (low-medium risk; incomplete: no valid Resp. rate, SpO2, Pulse, "
        "Temperature)",
    )
    news2 = PatientMetric.objects.filter(patient=patient).first().news2
    assert (news2.score, news2.complete) == (3, False)
    assert news2.missing == ("resp_rate", "spo2", "pulse", "temperature")


# --- statements per batch ----------------------------------------------------------------------


def _churn_batches(patients: list[Patient], engine: AlarmEngine) -> list[list[tuple]]:
    """Two batches of alarm churn for each patient: raised (batch 1); resolved, raised again
    and made high priority (batch 2). Returns [the second batch's statements, its events]."""
    judge(
        engine, [r for p in patients for r in (reading(p, 0, pulse=130), reading(p, 5, pulse=130))]
    )
    second = [
        r
        for p in patients
        for r in (
            reading(p, 10),
            reading(p, 15),
            reading(p, 20, pulse=130),
            reading(p, 25, pulse=130),
            reading(p, 30, pulse=155),
        )
    ]
    with CaptureQueriesContext(connection) as queries:
        written = judge(engine, second)
    return [len(queries.captured_queries), written]


def test_a_batch_of_alarm_changes_takes_the_same_statements_for_one_patient_as_for_many():
    one = PatientFactory(name="one")
    many = PatientFactory.create_batch(6)
    engine = AlarmEngine()

    [statements_one, written_one] = _churn_batches([one], engine)
    [statements_many, written_many] = _churn_batches(many, engine)

    # The readings' (savepoints, patients, the INSERT, latest_metric), the limits and
    # switched-off alarms, the no_data resolution (an UPDATE and a SELECT), then the alarms':
    # one SELECT of the open ones, one UPDATE, one INSERT of alarms, one of events; whatever
    # the number of patients and of their changes (one by one: 19 for one patient, 59 for 6).
    # PostgreSQL: five of them (the readings, latest_metric, the alarms' UPDATE and INSERT, the
    # events' INSERT) COPY their rows into a temporary table first: one statement more each
    # (the COPY itself goes around Django's cursor, uncounted).
    # The batch also locks its patients first, in id order: one SELECT ... FOR UPDATE more.
    # And the engine checks its memory's open alarms against the table's: one SELECT.
    postgresql = 5 + 1 if connection.vendor == "postgresql" else 0
    assert statements_many == statements_one == 16 + postgresql
    change = [
        ("resolved", "pulse_high"),
        ("raised", "pulse_high"),
        ("priority_changed", "pulse_high"),
    ]
    assert written_one == change
    assert written_many == change * 6
    # The stored alarm was resolved before its successor was inserted (one open alarm of a
    # kind at a time), and each event carries its alarm as it then was, with its id.
    for patient in [one, *many]:
        assert alarms(patient) == [
            ("pulse_high", "medium", "resolved", 130, 120, at(5), at(15)),
            ("pulse_high", "high", "active", 155, 120, at(25), None),
        ]
        first, second = Alarm.objects.filter(patient=patient).order_by("id")
        rows = AlarmEvent.objects.filter(alarm__patient=patient).order_by("id")
        assert [
            (
                e.alarm_id,
                e.type,
                e.payload["alarm"]["id"],
                e.payload["alarm"]["state"],
                e.payload["alarm"]["priority"],
                e.payload["alarm"]["value"],
            )
            for e in rows
        ] == [
            (first.pk, "raised", first.pk, "active", "medium", 130),
            (first.pk, "resolved", first.pk, "resolved", "medium", 130),
            (second.pk, "raised", second.pk, "active", "medium", 130),
            (second.pk, "priority_changed", second.pk, "active", "high", 155),
        ]
