"""Alarms end to end through the real broker (Tansu) and the real database: readings on the
vitals topic -> the real consumer -> Alarm rows and messages on the alarms topic; an
acknowledgement through the API -> the alarms topic on the consumer's next outbox sweep.

`transactional_db`, as in test_pipeline_e2e: the consumer commits, and a consumer run as a
subprocess must see the rows the test wrote and the test the rows it wrote.
"""

import json
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Message
from django.core.management import call_command

from core.kafka import consumer_create, producer_create
from core.process import process_stop
from patients.models import Patient
from patients.tests.factories import PatientFactory
from testing.broker import KafkaTopics
from testing.database import database_url
from testing.processes import json_lines, report_figure, start_manage, wait_for_log
from vitals.alarms import Limits, PatientAlarms
from vitals.consumer import VitalsConsumer
from vitals.contract import Reading, reading_to_message
from vitals.emulator import patient_uuid_for_name
from vitals.heartbeat_selectors import alarm_processing_status
from vitals.models import Alarm, AlarmEvent, AlarmProcessingHeartbeat, PatientMetric
from vitals.news2 import news2_of
from vitals.services import alarm_switch_off
from vitals.tests.factories import AlarmFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

START = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(minutes=10)


def patient_uuid(name: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_DNS, f"alarms-e2e-{name}")


def message(name: str, seconds: int, **values) -> tuple[bytes, bytes]:
    """One reading as a monitor sends it (the documented contract, written out by hand): a
    normal adult unless `values` say otherwise."""
    body = {
        "schema_version": 1,
        "patient_uuid": str(patient_uuid(name)),
        "patient_name": name,
        "timestamp": (START + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "pulse": 72,
        "resp_rate": 14,
        "bp": "120/80",
        "spo2": 98,
        "temperature": 36.8,
        **values,
    }
    return str(patient_uuid(name)).encode(), json.dumps(body).encode()


def alarm_messages(kafka: KafkaTopics) -> list[tuple[bytes, dict, dict]]:
    """(key, JSON value, headers) of every message on the alarms topic, in order."""
    messages: list[Message] = kafka.read(kafka.alarms_topic)
    return [(m.key(), json.loads(m.value()), dict(m.headers() or [])) for m in messages]


def summary(value: dict) -> tuple:
    return (
        value["event"],
        value["alarm"]["kind"],
        value["alarm"]["priority"],
        value["alarm"]["state"],
        value["patient"]["uuid"],
        value["patient"]["name"],
    )


def event_ids(**filters) -> list[int]:
    return list(AlarmEvent.objects.filter(**filters).order_by("id").values_list("id", flat=True))


def test_a_deteriorating_patient_alarms_in_the_db_and_on_the_alarms_topic(kafka, tmp_path):
    erin, frank, hana = (str(patient_uuid(name)) for name in ("erin", "frank", "hana"))
    # Hana's SpO2 low alarm is switched off (a clinician's decision, with a reason); one still
    # open is left over (as if raised a moment before): the consumer resolves it, raises no new
    # one, while NEWS2, which cannot be switched off, still alarms.
    hana_patient = PatientFactory(uuid=patient_uuid("hana"), name="hana")
    alarm_switch_off(patient=hana_patient, kind="spo2_low", reason="COPD, target 88-92", user=None)
    left_over = AlarmFactory(patient=hana_patient, kind="spo2_low", raised_at=START)
    kafka.produce(
        [
            *(message("hana", s, spo2=86) for s in range(0, 15, 5)),
            *(message("frank", s) for s in range(0, 25, 5)),
            message("erin", 0),
            message("erin", 5),
            message("erin", 10, spo2=88),  # below 90 and a NEWS2 red score: counting starts
            message("erin", 15, spo2=88),  # the second in a row: both alarms raised
            message("erin", 20, spo2=83),  # below the critical 85: SpO2 low goes high
        ]
    )

    # The real command, as deployed: a child process, configured by the environment.
    log = tmp_path / "consumer.log"
    process = start_manage(
        "consume_vitals",
        "--exit-on-idle",
        "1",
        "--batch-timeout",
        "0.1",
        log=log,
        DATABASE_URL=database_url(),
        **kafka.env(),
    )
    try:
        assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()

    assert PatientMetric.objects.count() == 13
    assert list(
        Alarm.objects.filter(patient__name="hana")
        .order_by("id")
        .values_list("kind", "priority", "state", "raised_at", "resolved_at")
    ) == [
        ("spo2_low", "medium", "resolved", START, START),
        ("news2", "medium", "active", START + timedelta(seconds=5), None),
    ]
    assert list(
        Alarm.objects.filter(patient__name="erin")
        .order_by("id")
        .values_list(
            "patient__name", "kind", "priority", "state", "value", "threshold", "raised_at"
        )
    ) == [
        ("erin", "spo2_low", "high", "active", 83, 90, START + timedelta(seconds=15)),
        ("erin", "news2", "medium", "active", 3, 5, START + timedelta(seconds=15)),
    ]
    assert not AlarmEvent.objects.filter(published_at__isnull=True).exists()

    published = alarm_messages(kafka)
    assert sorted(value["event_id"] for _, value, _ in published) == event_ids()
    of_hana = [value for _, value, _ in published if value["patient"]["uuid"] == hana]
    assert [summary(value) for value in of_hana] == [
        ("resolved", "spo2_low", "medium", "resolved", hana, "hana"),
        ("raised", "news2", "medium", "active", hana, "hana"),
    ]
    assert of_hana[0]["alarm"]["id"] == left_over.pk
    published = [p for p in published if p[1]["patient"]["uuid"] == erin]
    assert [summary(value) for _, value, _ in published] == [
        ("raised", "spo2_low", "medium", "active", erin, "erin"),
        ("raised", "news2", "medium", "active", erin, "erin"),
        ("priority_changed", "spo2_low", "high", "active", erin, "erin"),
    ]
    assert [key for key, _, _ in published] == [erin.encode()] * 3
    erin_events = event_ids(alarm__patient__name="erin")
    assert [value["event_id"] for _, value, _ in published] == erin_events
    assert [headers["event_id"] for _, _, headers in published] == [
        str(pk).encode() for pk in erin_events
    ]
    alarm_ids = list(
        Alarm.objects.filter(patient__name="erin").order_by("id").values_list("id", flat=True)
    )
    assert [value["alarm"]["id"] for _, value, _ in published] == [*alarm_ids, alarm_ids[0]]
    assert [value["alarm"]["value"] for _, value, _ in published] == [88, 3, 83]
    assert frank not in {value["patient"]["uuid"] for _, value, _ in alarm_messages(kafka)}


def test_an_emulated_cardiac_arrest_raises_high_priority_alarms(kafka: KafkaTopics):
    # 8 readings 20 ms apart at 30000x: each one 10 simulated minutes, and the arrest comes
    # 10-40 minutes in, so the last readings are of a patient in arrest.
    call_command(
        "run_patient",
        name=["xavier:cardiac_arrest"],
        count=8,
        interval=0.02,
        speed=30000,
        seed=3,
        # Every sign in every reading (version 1), for every limit alarm on the same reading.
        schema_version=1,
    )
    call_command("consume_vitals", exit_on_idle=1, batch_timeout=0.1)

    patient = Patient.objects.get(name="xavier")
    assert patient.uuid == patient_uuid_for_name("xavier")
    arrest = list(patient.metrics.filter(pulse=0).order_by("measured_at"))
    assert len(arrest) >= 2
    assert (arrest[0].resp_rate, arrest[0].systolic, arrest[0].diastolic) == (0, 40, 20)
    # No pulse alarms at once (asystole has no delay); the limit alarms and NEWS2 follow on the
    # second reading, each already beyond its critical level: high, never escalated.
    expected = [
        ("asystole", "high", "active", arrest[0].measured_at),
        *(
            (kind, "high", "active", arrest[1].measured_at)
            # The registry's order (vitals/signs.py); MAP from the blood pressure, 27 mmHg.
            for kind in (
                "pulse_low",
                "resp_rate_low",
                "systolic_low",
                "diastolic_low",
                "map_low",
                "spo2_low",
                "news2",
            )
        ),
    ]
    assert (
        list(Alarm.objects.order_by("id").values_list("kind", "priority", "state", "raised_at"))
        == expected
    )

    published = alarm_messages(kafka)
    xavier = str(patient.uuid)
    assert [summary(value) for _, value, _ in published] == [
        ("raised", kind, "high", "active", xavier, "xavier") for kind, *_ in expected
    ]
    assert {key for key, _, _ in published} == {xavier.encode()}
    assert [value["event_id"] for _, value, _ in published] == event_ids()
    assert not AlarmEvent.objects.filter(published_at__isnull=True).exists()


def drive(worker: VitalsConsumer, until: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "condition not reached in time"
        worker.process_batch()


def all_published() -> bool:
    return not AlarmEvent.objects.filter(published_at__isnull=True).exists()


def test_an_acknowledgement_through_the_api_is_published_on_the_next_sweep(kafka, api_client, user):
    gus = str(patient_uuid("gus"))
    kafka.produce([message("gus", 0), message("gus", 5, spo2=88), message("gus", 10, spo2=88)])
    consumer = consumer_create(group_id=kafka.group_id)
    worker = VitalsConsumer(
        consumer=consumer,
        producer=producer_create(),
        dlq_topic=kafka.dlq_topic,
        alarms_topic=kafka.alarms_topic,
        batch_timeout=0.1,
        alarm_sweep_interval=0.3,
    )
    consumer.subscribe([kafka.topic], on_assign=worker.on_assign, on_revoke=worker.on_revoke)
    try:
        drive(worker, lambda: AlarmEvent.objects.count() == 2 and all_published())
        alarm = Alarm.objects.get(kind="spo2_low")
        assert (alarm.state, alarm.priority) == ("active", "medium")

        response = api_client.post(f"/api/alarms/{alarm.pk}/acknowledge/")
        assert response.status_code == 200
        assert response.json()["state"] == "acknowledged"
        ack = AlarmEvent.objects.get(type="acknowledged")
        assert ack.published_at is None
        # No reading comes: the idle consumer's periodic sweep publishes it.
        drive(worker, all_published)

        # Issue 14: SpO2 falls below the critical 85. The acknowledgement covered a medium
        # alarm, not a high one: active again, in the API and on the alarms topic.
        kafka.produce([message("gus", 12, spo2=83)])
        drive(worker, lambda: AlarmEvent.objects.count() == 4 and all_published())
        body = api_client.get(f"/api/alarms/{alarm.pk}/").json()
        assert {k: body[k] for k in ("state", "priority", "message", "acknowledged_by")} == {
            "state": "active",
            "priority": "high",
            "message": "SpO2 low: 83 % (< 90)",
            "acknowledged_by": "nurse",
        }
        assert (body["acknowledged_priority"], body["acknowledged_message"]) == (
            "medium",
            "SpO2 low: 88 % (< 90)",
        )
        assert [(h["type"], h["priority"], h["state"], h["by"]) for h in body["history"]] == [
            ("raised", "medium", "active", None),
            ("acknowledged", "medium", "acknowledged", "nurse"),
            ("priority_changed", "high", "active", None),
        ]

        # The patient recovers: both alarms resolve.
        kafka.produce([message("gus", 15), message("gus", 20)])
        drive(worker, lambda: AlarmEvent.objects.count() == 6 and all_published())
    finally:
        worker.close()

    assert list(Alarm.objects.order_by("id").values_list("kind", "state", "acknowledged_by")) == [
        ("spo2_low", "resolved", user.pk),
        ("news2", "resolved", None),
    ]
    published = alarm_messages(kafka)
    assert [summary(value) for _, value, _ in published] == [
        ("raised", "spo2_low", "medium", "active", gus, "gus"),
        ("raised", "news2", "medium", "active", gus, "gus"),
        ("acknowledged", "spo2_low", "medium", "acknowledged", gus, "gus"),
        ("priority_changed", "spo2_low", "high", "active", gus, "gus"),
        ("resolved", "spo2_low", "high", "resolved", gus, "gus"),
        ("resolved", "news2", "medium", "resolved", gus, "gus"),
    ]
    assert published[3][1]["reactivated"] is True
    assert {key for key, _, _ in published} == {gus.encode()}
    assert [value["event_id"] for _, value, _ in published] == event_ids()
    acknowledged = published[2][1]
    assert acknowledged["event_id"] == ack.pk
    assert acknowledged["alarm"]["id"] == alarm.pk
    assert acknowledged["alarm"]["acknowledged_by"] == "nurse"
    assert acknowledged["alarm"]["acknowledged_at"] is not None
    assert published[4][1]["alarm"]["resolved_at"] == (START + timedelta(seconds=20)).isoformat()


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.2)
    return result


def alarm_rows(kind: str) -> list[tuple]:
    return list(
        Alarm.objects.filter(kind=kind)
        .order_by("patient__name", "id")
        .values_list("patient__name", "priority", "state")
    )


@pytest.mark.timeout(150)
def test_silences_wrong_clocks_and_unanswered_alarms_with_two_consumers(
    kafka: KafkaTopics, tmp_path, api_client
):
    """Issue 14, items 2, 7 and 8, through the real broker, two real consumers in one group
    and a real emulator process: a monitor killed mid-stream raises exactly one `no_data`
    within 10 s of its silence passing ALARM_NO_DATA_AFTER, resolved by its next reading or
    by ending its monitoring; a monitor 290 s fast gets its asystole alarm at once, stamped
    no later than received, and a `clock_skew` alarm; a high alarm unanswered for
    ALARM_ESCALATE_AFTER is escalated exactly once, on the alarms topic."""
    env = {
        **kafka.env(),
        "DATABASE_URL": database_url(),
        "ALARM_NO_DATA_AFTER": "3",
        "ALARM_ESCALATE_AFTER": "2",
        "ALARM_CLOCK_SKEW_WARN": "30",
    }
    consumers = [
        start_manage("consume_vitals", "--batch-timeout", "0.1", log=tmp_path / f"c{i}.log", **env)
        for i in (1, 2)
    ]
    emulator = start_manage(
        "run_patient", "--name", "quinn", "--name", "sam", "--interval", "0.5",
        log=tmp_path / "emulator.log", **env,
    )  # fmt: skip
    try:
        wait_until(
            lambda: (
                Patient.objects.filter(metrics__isnull=False).distinct().count() == 2
                and PatientMetric.objects.count() >= 8
            ),
            60,
            "the emulated readings stored",
        )
        emulator.kill()  # SIGKILL: no goodbye, the monitor just stops
        emulator.wait(5)

        # Exactly one no_data per silent patient, within ALARM_NO_DATA_AFTER + 10 s of their
        # last reading, whichever consumer swept first.
        wait_until(lambda: len(alarm_rows("no_data")) == 2, 3 + 10 + 5, "no_data raised")
        delays = []
        for alarm in Alarm.objects.filter(kind="no_data").select_related("patient"):
            last = alarm.patient.metrics.order_by("-pk").first().received_at
            assert timedelta(seconds=3) <= alarm.raised_at - last <= timedelta(seconds=3 + 10)
            assert alarm.message.startswith("No data for ")
            delays.append((alarm.raised_at - last).total_seconds())
        report_figure(
            "no_data raised after the last reading received (ALARM_NO_DATA_AFTER 3 s, "
            "two consumers sweeping every 2 s)",
            ", ".join(f"{d:.1f} s" for d in sorted(delays)),
        )
        # A fast monitor (290 s ahead, the Kafka timestamp says when it really sent) in
        # cardiac arrest: asystole at once, high, and a clock_skew alarm.
        ahead = datetime.now(tz=UTC) + timedelta(seconds=290)
        kafka.produce(
            [message("rex", 0, pulse=0, timestamp=(ahead + timedelta(seconds=s)).isoformat())
             for s in (0, 1, 2)],
            sent="now",
        )  # fmt: skip
        wait_until(lambda: alarm_rows("asystole"), 15, "asystole raised")
        # Both consumers sweep every 2 s: the no_data alarms stay one per silence.
        time.sleep(4.5)
        silences = alarm_rows("no_data")
        assert [row for row in silences if row[0] != "rex"] == [
            ("quinn", "medium", "active"),
            ("sam", "medium", "active"),
        ]
        assert [row[0] for row in silences].count("rex") <= 1  # rex falls silent too
        asystole = Alarm.objects.get(kind="asystole")
        rex_first = PatientMetric.objects.filter(patient__name="rex").order_by("pk").first()
        assert rex_first.measured_at > rex_first.received_at + timedelta(seconds=280)
        assert asystole.raised_at <= rex_first.received_at  # never in the future
        assert alarm_rows("clock_skew") == [("rex", "low", "active")]
        assert Alarm.objects.get(kind="clock_skew").message in {
            f"Monitor clock {s} s ahead" for s in range(285, 296)
        }
        # Unanswered for 2 s: escalated, once, by one of the two consumers.
        wait_until(
            lambda: Alarm.objects.filter(kind="asystole", escalated_at__isnull=False).exists(),
            10,
            "asystole escalated",
        )
        escalated = Alarm.objects.get(kind="asystole")
        report_figure(
            "asystole escalated after going unanswered (ALARM_ESCALATE_AFTER 2 s)",
            f"{(escalated.escalated_at - escalated.activated_at).total_seconds():.1f} s",
        )
        # The API shows the silence on the patient; ending quinn's monitoring resolves it.
        quinn = Patient.objects.get(name="quinn")
        body = api_client.get(f"/api/patients/{quinn.uuid}/").json()
        assert [(a["kind"], a["state"]) for a in body["active_alarms"]] == [("no_data", "active")]
        ended = api_client.post(f"/api/patients/{quinn.uuid}/monitoring/end/")
        assert ended.status_code == 200
        assert (ended.json()["monitoring_ended_by"], ended.json()["active_alarms"]) == ("nurse", [])
        # sam's monitor comes back: the next reading resolves the silence.
        emulator = start_manage(
            "run_patient", "--name", "sam", "--interval", "0.5",
            log=tmp_path / "emulator2.log", **env,
        )  # fmt: skip
        wait_until(
            lambda: ("sam", "medium", "resolved") in alarm_rows("no_data"), 20, "sam resolved"
        )
        time.sleep(4.5)  # more sweeps: quinn's ended monitoring raises nothing again
        assert [row for row in alarm_rows("no_data") if row[0] in ("quinn", "sam")] == [
            ("quinn", "medium", "resolved"),
            ("sam", "medium", "resolved"),
        ]
        wait_until(all_published, 10, "every alarm event published")
        # Each consumer's sweeps stamp its own heartbeat: alarm processing is alive, twice.
        beats = set(AlarmProcessingHeartbeat.objects.values_list("process", flat=True))
        assert {f"{socket.gethostname()}:{c.pid}" for c in consumers} <= beats
        status = alarm_processing_status()
        assert (status.status, status.consumers) == ("ok", 2)
    finally:
        for process in (*consumers, emulator):
            if process.poll() is None:
                process.terminate()
        for process in consumers:
            process.wait(20)

    # Delivery is at least once (docs/alarms.md): both consumers may publish an event the other
    # is publishing; a subscriber drops an event_id it has seen, and so does this test. What
    # must be once is the event itself: one per escalation, one per silence.
    messages = [value for _, value, _ in alarm_messages(kafka)]
    published = list({value["event_id"]: value for value in messages}.values())
    report_figure(
        "alarm events published twice by two consumers sweeping at once (at least once)",
        str(len(messages) - len(published)),
    )
    escalations = [v for v in published if v["event"] == "escalated"]
    # Once each, though two consumers sweep: no pulse is asystole and pulse_low, both high.
    assert sorted((v["alarm"]["kind"], v["patient"]["name"]) for v in escalations) == [
        ("asystole", "rex"),
        ("pulse_low", "rex"),
    ]
    no_data = [
        (v["event"], v["patient"]["name"])
        for v in published
        if v["alarm"]["kind"] == "no_data" and v["patient"]["name"] != "rex"
    ]
    assert sorted(no_data) == [
        ("raised", "quinn"), ("raised", "sam"), ("resolved", "quinn"), ("resolved", "sam"),
    ]  # fmt: skip
    for i in (1, 2):
        log = (tmp_path / f"c{i}.log").read_text()
        assert "Traceback" not in log, log[-3000:]
        assert "IntegrityError" not in log, log[-3000:]


def detector_alarms(readings: list[Reading]) -> list[tuple]:
    """The alarms the pure detector decides on one patient's readings in order, with the
    default limits: (kind, priority, raised_at, resolved_at) in the order raised."""
    state, alarms, open_by_kind = PatientAlarms(), [], {}
    for reading in readings:
        news2 = news2_of(reading, spo2_scale=1)
        for decision in state.evaluate(reading, news2, Limits()):
            if decision.action == "raise":
                open_by_kind[decision.kind] = len(alarms)
                alarms.append([decision.kind, decision.priority, decision.at, None])
            elif decision.action == "priority":
                alarms[open_by_kind[decision.kind]][1] = decision.priority
            else:
                alarms[open_by_kind.pop(decision.kind)][3] = decision.at
    return [tuple(alarm) for alarm in alarms]


# A patient's course, reading by reading (5 s apart): SpO2 falls, worsens, recovers; the pulse
# races and settles; the blood pressure drops and comes back.
COURSE = [
    {},
    {"spo2": 88},
    {"spo2": 88},
    {"spo2": 83},
    {"spo2": 84, "pulse": 130},
    {"pulse": 135},
    {"pulse": 128, "systolic": 85, "diastolic": 55},
    {"systolic": 84, "diastolic": 55},
    {},
    {},
    {"spo2": 89},
    {},
    {},
]


def test_two_consumers_decide_each_patients_alarms_as_the_detector_does(kafka, tmp_path):
    """Two `consume_vitals` processes in one group share the 3 partitions; each patient's
    readings (keyed) reach one of them in order, so the Alarm rows equal the pure detector's
    decisions on the same readings. A keyless reading goes to the DLQ (missing_key): stored,
    its order among the patient's others would be whichever consumer got there first."""
    patients = [f"pt{i:02d}" for i in range(12)]
    readings: dict[str, list[Reading]] = {name: [] for name in patients}
    messages = []
    for step, change in enumerate(COURSE):
        for i, name in enumerate(patients):
            # Each patient a step shifted (some start mid-course), so the courses differ.
            values = {"pulse": 72, "resp_rate": 14, "systolic": 120, "diastolic": 80, "spo2": 98}
            values |= COURSE[(step + i) % len(COURSE)] if i % 3 else change
            reading = Reading(
                patient_uuid=patient_uuid(name),
                patient_name=name,
                measured_at=START + timedelta(seconds=5 * step),
                temperature=36.8,
                **values,
            )
            readings[name].append(reading)
            messages.append(reading_to_message(reading))
    keyless = reading_to_message(
        Reading(
            patient_uuid=patient_uuid("pt00"),
            patient_name="pt00",
            measured_at=START + timedelta(seconds=5 * len(COURSE)),
            pulse=20,  # asystole-like, were it stored
            resp_rate=14,
            systolic=120,
            diastolic=80,
            spo2=98,
            temperature=36.8,
        )
    )
    logs = [tmp_path / "consumer-a.log", tmp_path / "consumer-b.log"]
    processes = [
        start_manage(
            "consume_vitals",
            "--batch-timeout",
            "0.05",
            "--batch-size",
            "10",
            log=log,
            DATABASE_URL=database_url(),
            **kafka.env(),
        )
        for log in logs
    ]
    try:
        for log, process in zip(logs, processes, strict=True):
            wait_for_log(log, "partitions assigned", process, timeout=40)
        kafka.produce([*messages, (None, keyless[1])])
        deadline = time.monotonic() + 60
        while PatientMetric.objects.count() < len(messages) or not all_published():
            assert time.monotonic() < deadline, [log.read_text() for log in logs]
            time.sleep(0.2)
        time.sleep(1.5)  # the keyless message's DLQ copy, and nothing more
    finally:
        for process in processes:
            process_stop(process)

    assert PatientMetric.objects.count() == len(messages)
    for name in patients:
        stored = list(
            Alarm.objects.filter(patient__uuid=patient_uuid(name))
            .order_by("raised_at", "id")
            .values_list("kind", "priority", "raised_at", "resolved_at")
        )
        expected = sorted(detector_alarms(readings[name]), key=lambda a: a[2])
        assert stored == expected, name
    assert Alarm.objects.count() >= 24  # the course alarms and resolves, for every patient
    assert Alarm.objects.filter(resolved_at__isnull=True).count() < Alarm.objects.count()
    [dlq] = kafka.read(kafka.dlq_topic)
    assert (dlq.key(), dlq.value()) == (None, keyless[1])
    assert dict(dlq.headers())["dlq.reason"] == b"missing_key"
    outputs = [log.read_text() for log in logs]
    for output in outputs:
        assert "IntegrityError" not in output, output
        assert "UNIQUE constraint" not in output, output
        assert not [
            line for line in json_lines(output) if line["level"] in ("ERROR", "CRITICAL")
        ], output
    stopped = [
        line
        for output in outputs
        for line in json_lines(output)
        if line["message"] == "consumer stopped"
    ]
    assert len(stopped) == 2
    assert all(line["consumed"] > 0 for line in stopped)  # both had partitions
    assert sum(line["stored"] for line in stopped) == len(messages)
    assert sum(line["invalid"] for line in stopped) == 1
