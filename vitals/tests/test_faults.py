"""Fault injection: the real broker, the real database and the real commands as child
processes, hurt on purpose (kill -9 mid-batch, a consumer of a group dying, SIGTERM under load,
the broker going away and coming back).

Each test compares what was produced (read back from the topic) with what is stored, keyed by
(patient uuid, measured_at), values included: exactly once means no reading missing, none
stored twice, none altered. The figures (produced, stored before the fault, re-delivered,
final) are reported with `report_figure`.

`transactional_db`: the commands run as child processes and must see committed rows.
"""

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Message
from django.core.management import call_command

from core.process import process_stop
from testing.broker import KafkaTopics
from testing.database import database_url
from testing.devservers import free_port
from testing.processes import json_lines, report_figure, start_manage, wait_for_log
from vitals.consumer import DLQ_REASON
from vitals.contract import reading_parse
from vitals.models import PatientMetric

# Kafka's delivery under process faults: the engine-specific write is tried on both engines by
# test_services.py and test_pipeline_e2e.py.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.engine_neutral,
    pytest.mark.django_db(transaction=True),
]

Key = tuple[uuid.UUID, datetime]
VALUE_FIELDS = (
    "patient__name",
    "pulse",
    "resp_rate",
    "systolic",
    "diastolic",
    "spo2",
    "temperature",
    "on_oxygen",
    "consciousness",
    "artefact",
)
# Backlogs of 30 or 60 patients x 100 readings: a consumer with small batches needs a few
# seconds for them, so that a fault lands in the middle.
PATIENTS, PER_PATIENT = 30, 100


@pytest.fixture
def children() -> Iterator[Callable[[subprocess.Popen], None]]:
    """Child processes started by a test are stopped at its end, whatever happened."""
    started: list[subprocess.Popen] = []
    yield started.append
    for process in reversed(started):
        if process.poll() is None:
            process.kill()
            process.wait()


# --- What was produced, what is stored ---------------------------------------------------------


class Produced:
    """The readings in a topic: values by (patient uuid, measured_at), and where each is."""

    def __init__(self, messages: list[Message]) -> None:
        self.values: dict[Key, tuple] = {}
        self.position: dict[Key, tuple[int, int]] = {}
        for message in messages:
            r = reading_parse(key=message.key(), value=message.value())
            key = (r.patient_uuid, r.measured_at)
            assert key not in self.values, f"the topic holds {key} twice (a producer retry?)"
            self.values[key] = (
                r.patient_name,
                r.pulse,
                r.resp_rate,
                r.systolic,
                r.diastolic,
                r.spo2,
                r.temperature,
                r.on_oxygen,
                r.consciousness,
                r.artefact or "",
            )
            self.position[key] = (message.partition(), message.offset())

    def __len__(self) -> int:
        return len(self.values)

    def in_partitions(self, partitions: set[int]) -> set[Key]:
        return {k for k, (p, _) in self.position.items() if p in partitions}

    def end_offsets(self) -> dict[int, int]:
        ends: dict[int, int] = {}
        for p, offset in self.position.values():
            ends[p] = max(ends.get(p, 0), offset + 1)
        return ends


def stored() -> dict[Key, tuple]:
    """The readings in the database, as Produced.values has them; fails on a duplicate."""
    rows = PatientMetric.objects.values_list("patient__uuid", "measured_at", *VALUE_FIELDS)
    found: dict[Key, tuple] = {}
    for patient_uuid, measured_at, *values in rows:
        assert (patient_uuid, measured_at) not in found, "stored twice"
        found[(patient_uuid, measured_at)] = tuple(values)
    return found


def stored_count() -> int:
    return PatientMetric.objects.count()


def backlog(seed: int, patients: int = PATIENTS) -> int:
    """Produce the emulator's readings of `patients` patients, PER_PATIENT each, at once;
    return how many."""
    call_command(
        "run_patient", patients=patients, count=PER_PATIENT, interval=0, seed=seed, verbosity=0
    )
    return patients * PER_PATIENT


def read_until(
    topics: KafkaTopics, enough: Callable[[list[Message]], bool], topic: str = ""
) -> list[Message]:
    """A topic's messages, read again until `enough` of them are there: one read ends at the
    first pause in the flow, which a child process starting on two cores can cause."""
    deadline = time.monotonic() + 30
    while True:
        messages = topics.read(topic, idle=0.5)
        if enough(messages) or time.monotonic() > deadline:
            return messages


def read_backlog(kafka: KafkaTopics, total: int) -> Produced:
    produced = Produced(read_until(kafka, lambda messages: len(messages) >= total))
    assert len(produced) == total
    return produced


# --- The commands ------------------------------------------------------------------------------


def consumer_start(
    kafka: KafkaTopics, log: Path, *args: str, track: Callable | None = None
) -> subprocess.Popen:
    process = start_manage(
        "consume_vitals",
        "--batch-timeout",
        "0.1",
        *args,
        log=log,
        DATABASE_URL=database_url(),
        **kafka.env(),
    )
    if track:
        track(process)
    return process


def log_entries(log: Path) -> list[dict]:
    """The JSON lines a child has written so far (a line being written is left out)."""
    text = log.read_text(errors="replace")
    return json_lines(text[: text.rfind("\n") + 1])


def log_lines(log: Path, message: str) -> list[dict]:
    return [line for line in log_entries(log) if line["message"] == message]


def totals(log: Path) -> dict:
    """The `consumer stopped` summary of a consumer that exited cleanly."""
    [line] = log_lines(log, "consumer stopped")
    return line


def assignment(log: Path) -> set[int]:
    """The partitions a consumer holds now, from its log (cooperative rebalancing logs what is
    added and what is taken away)."""
    held: set[int] = set()
    for line in log_entries(log):
        if line["message"] == "partitions assigned":
            held |= set(line["partitions"])
        elif line["message"] == "partitions revoked":
            held -= set(line["partitions"])
    return held


def wait_until(condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not reached within {timeout}s"
        time.sleep(poll)


def committed_total(kafka: KafkaTopics, partitions: set[int] | None = None) -> int:
    return sum(
        offset
        for p, offset in kafka.committed().items()
        if offset > 0 and (partitions is None or p in partitions)
    )


def kill(process: subprocess.Popen, sig: int) -> None:
    process.send_signal(sig)
    process.wait(timeout=20)


# --- 1. kill -9 in the middle of a batch -------------------------------------------------------


def test_consumer_killed_mid_batch_loses_nothing_and_stores_nothing_twice(
    kafka: KafkaTopics, tmp_path: Path, children
):
    """SIGKILL: no `finally`, no commit, no leaving the group. What the killed consumer stored
    but had not committed yet comes again to its successor, and the unique constraint absorbs
    exactly that many duplicates."""
    first_log = tmp_path / "first.log"
    first = consumer_start(kafka, first_log, "--batch-size", "20", track=children)
    # Produced while the consumer joins the group (the broker waits 3 s for more members).
    total = backlog(seed=1, patients=2 * PATIENTS)
    produced = read_backlog(kafka, total)
    wait_for_log(first_log, "partitions assigned", first, timeout=30)
    # Killed 0.3 s after librdkafka's first commit (it commits every second), while it goes
    # on storing batches: some readings are stored and committed, some stored and not yet.
    wait_until(lambda: committed_total(kafka) > 0, 30, "a first commit", poll=0.1)
    time.sleep(0.3)
    kill(first, signal.SIGKILL)
    assert first.returncode == -signal.SIGKILL
    assert not log_lines(first_log, "consumer stopped")  # it really had no chance to clean up

    before = stored_count()
    committed = committed_total(kafka)
    assert before < total, "the kill must land in the middle of the backlog"
    # Offsets are stored after the transaction and committed later: never ahead of the rows.
    assert 0 < committed < before, "an uncommitted tail must be left to re-deliver"

    second_log = tmp_path / "second.log"
    second = consumer_start(kafka, second_log, track=children)
    wait_until(lambda: stored_count() == total, 45, "the rest stored", poll=0.2)
    process_stop(second)
    assert second.returncode == 0, second_log.read_text()

    after = totals(second_log)
    # It starts from the group's committed offsets: the killed consumer's uncommitted tail is
    # re-delivered, and each re-delivered reading is a duplicate, not a second row.
    assert after["consumed"] == total - committed
    assert after["duplicates"] == before - committed
    assert after["stored"] == total - before
    assert after["invalid"] == 0
    assert stored() == produced.values
    assert {p: o for p, o in kafka.committed().items() if o >= 0} == produced.end_offsets()

    report_figure(
        "kill -9 mid-batch (batch 20)",
        f"produced {total}, stored before the kill {before}, committed at the kill "
        f"{committed}, re-delivered after restart {after['consumed'] - after['stored']} "
        f"(duplicates {after['duplicates']}), stored by the restarted consumer "
        f"{after['stored']}, final {stored_count()}",
    )


# --- 2. one of two consumers of a group dies ---------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_survivor_takes_over_the_partitions_of_a_consumer_that_dies(
    kafka: KafkaTopics, tmp_path: Path, children, sig: int
):
    """SIGKILL: the group notices after session.timeout.ms (KAFKA_SESSION_TIMEOUT_MS, 2 s in
    the tests), the survivor resumes from
    the dead one's last commit and absorbs its uncommitted tail as duplicates. SIGTERM: the
    dying consumer finishes its batch, commits and leaves at once: no duplicate."""
    logs = {name: tmp_path / f"{name}.log" for name in ("survivor", "victim")}
    survivor = consumer_start(kafka, logs["survivor"], "--batch-size", "20", track=children)
    victim = consumer_start(kafka, logs["victim"], "--batch-size", "20", track=children)

    def split() -> bool:
        mine, theirs = assignment(logs["survivor"]), assignment(logs["victim"])
        return bool(mine) and bool(theirs) and not mine & theirs and mine | theirs == {0, 1, 2}

    wait_until(split, 40, "the two consumers sharing the three partitions", poll=0.2)
    theirs = assignment(logs["victim"])
    # Big enough that the victim, a second and more after its first batch, has work left.
    total = backlog(seed=2, patients=4 * PATIENTS)

    # 0.3 s after the victim's first commit (librdkafka commits every second), while it goes on.
    wait_until(lambda: committed_total(kafka, theirs) > 0, 30, "a first commit", poll=0.1)
    time.sleep(0.3)
    killed_at = time.time()
    kill(victim, sig)
    if sig == signal.SIGKILL:
        # The survivor cannot take them before the session timeout: what is stored of their
        # readings now is the victim's doing.
        at_kill = stored().keys()
        theirs_committed = committed_total(kafka, theirs)
    else:
        assert victim.returncode == 0, logs["victim"].read_text()
        assert totals(logs["victim"])["duplicates"] == 0

    wait_until(lambda: stored_count() == total, 40, "the whole backlog stored", poll=0.2)
    assert theirs <= assignment(logs["survivor"])
    process_stop(survivor)
    assert survivor.returncode == 0, logs["survivor"].read_text()
    produced = read_backlog(kafka, total)
    their_readings = produced.in_partitions(theirs)
    if sig == signal.SIGKILL:
        theirs_stored = len(their_readings & at_kill)
        assert theirs_committed <= theirs_stored
    else:
        theirs_stored = theirs_committed = totals(logs["victim"])["stored"]
    assert theirs_stored < len(their_readings), "the victim must die with work left"

    after = totals(logs["survivor"])
    assert after["stored"] == total - theirs_stored
    assert after["duplicates"] == theirs_stored - theirs_committed
    assert stored() == produced.values
    takeover = next(
        line
        for line in log_lines(logs["survivor"], "partitions assigned")
        if set(line["partitions"]) & theirs
        and datetime.fromisoformat(line["timestamp"]).timestamp() > killed_at
    )
    takeover_s = datetime.fromisoformat(takeover["timestamp"]).timestamp() - killed_at

    report_figure(
        f"one of two consumers {signal.Signals(sig).name} mid-backlog (batch 20)",
        f"produced {total} ({len(their_readings)} in the victim's partitions "
        f"{sorted(theirs)}), stored by the victim {theirs_stored} (committed "
        f"{theirs_committed}), its partitions taken over {takeover_s:.1f} s after the "
        f"signal, duplicates {after['duplicates']}, final {stored_count()}",
    )


# --- 3. the broker goes away and comes back ---------------------------------------------------


def test_broker_restart_under_a_running_emulator_and_consumer(tmp_path: Path, settings, children):
    """A broker of the test's own (`run_broker`) crashes (its Tansu process is killed) and is
    started again on the same port while `run_patient` and `consume_vitals` run. Both log the
    outage and keep running; the emulator keeps its readings queued and delivers them to the
    new broker; the consumer rejoins the group and stores them, and its DLQ works again.

    The development broker keeps everything in memory: the restarted one has new, empty topics
    (run_broker recreates them), and what the old one held and the consumer had not stored yet
    is gone. So what is asserted is: every reading measured from the moment the broker was
    down reaches the new broker and the database, unchanged and once.
    """
    suffix = uuid.uuid4().hex[:10]
    topics = KafkaTopics(
        bootstrap=f"127.0.0.1:{free_port()}",
        topic=f"vitals-{suffix}",
        dlq_topic=f"vitals-{suffix}.dlq",
        alarms_topic=f"alarms-{suffix}",
        group_id=f"group-{suffix}",
    )
    env = {
        **topics.env(),
        # Tansu forgets producer ids when it restarts and then refuses every later write of an
        # idempotent producer (UNKNOWN_PRODUCER_ID, for good): see icu/kafka.producer_create.
        "KAFKA_IDEMPOTENT_PRODUCER": "false",
    }
    settings.KAFKA_BOOTSTRAP_SERVERS = topics.bootstrap  # for topics.read() and .produce()

    def broker_start(log: Path) -> subprocess.Popen:
        broker = start_manage("run_broker", "--partitions", "3", log=log, **env)
        children(broker)
        wait_for_log(log, "broker ready", broker, timeout=30)
        return broker

    logs = {name: tmp_path / f"{name}.log" for name in ("broker", "consumer", "emulator")}
    broker = broker_start(logs["broker"])
    consumer = start_manage(
        "consume_vitals",
        "--batch-timeout",
        "0.1",
        log=logs["consumer"],
        **env,
        DATABASE_URL=database_url(),
    )
    children(consumer)
    interval = 0.2
    emulator = start_manage(
        "run_patient",
        "--patients",
        "3",
        "--interval",
        str(interval),
        "--seed",
        "3",
        log=logs["emulator"],
        **env,
    )
    children(emulator)
    running = {"emulator": emulator, "consumer": consumer}
    wait_until(lambda: stored_count() >= 10, 30, "readings flowing to the database", poll=0.1)

    # The broker crashes: Tansu itself (run_broker's child) is killed, no goodbye to anyone.
    [ready] = log_lines(logs["broker"], "broker ready")
    os.kill(ready["pid"], signal.SIGKILL)
    down_at = datetime.now(tz=UTC)
    assert broker.wait(timeout=15) == 1
    assert "The broker exited unexpectedly" in logs["broker"].read_text()
    for name in ("emulator", "consumer"):
        wait_for_log(logs[name], "Kafka broker unreachable", running[name], timeout=15)
    time.sleep(1)
    assert emulator.poll() is None, logs["emulator"].read_text()
    assert consumer.poll() is None, logs["consumer"].read_text()

    broker_start(tmp_path / "broker-again.log")
    up_at = datetime.now(tz=UTC)
    for name in ("emulator", "consumer"):
        wait_for_log(logs[name], "Kafka broker reachable again", running[name], timeout=30)
    # The consumer's own producer (DLQ, alarms) works with the new broker too.
    topics.produce([(str(uuid.uuid4()).encode(), b"not json")])
    emulator.send_signal(signal.SIGTERM)
    assert emulator.wait(timeout=30) == 0, logs["emulator"].read_text()

    readings = {
        (uuid.UUID(line["patient_uuid"]), datetime.fromisoformat(line["measured_at"])): (
            line["patient"],
            line.get("pulse"),
            line.get("resp_rate"),
            # Contract version 2: the signs not measured this time are not sent.
            *(map(int, line["bp"].split("/")) if line.get("bp") else (None, None)),
            line.get("spo2"),
            line.get("temperature"),
            line["on_oxygen"],
            line["consciousness"],
            line["artefact"] or "",
        )
        for line in log_lines(logs["emulator"], "reading")
    }
    [summary] = log_lines(logs["emulator"], "emulator stopped")
    assert summary["produced"] == summary["delivered"] == len(readings)
    assert (summary["failed"], summary["undelivered"]) == (0, 0)

    since_down = {k for k in readings if k[1] >= down_at}

    def readings_of(messages: list[Message]) -> Produced:
        return Produced([m for m in messages if m.value() != b"not json"])

    new_broker = readings_of(
        read_until(topics, lambda messages: since_down <= readings_of(messages).values.keys())
    )
    assert new_broker.values.items() <= readings.items()
    assert since_down <= new_broker.values.keys()
    during = {k for k in since_down if k[1] < up_at}
    assert len(during) >= 10, "readings measured while the broker was down"

    wait_until(lambda: new_broker.values.keys() <= stored().keys(), 30, "readings stored", poll=0.2)
    process_stop(consumer)
    assert consumer.returncode == 0, logs["consumer"].read_text()
    rows = stored()
    assert rows.items() <= readings.items()
    lost = readings.keys() - rows.keys()
    assert all(measured_at < down_at for _, measured_at in lost)
    [dlq] = read_until(topics, bool, topic=topics.dlq_topic)
    assert dict(dlq.headers())[DLQ_REASON] == b"invalid_json"

    done = totals(logs["consumer"])
    for name in ("emulator", "consumer"):
        [line] = log_lines(logs[name], "Kafka broker unreachable; retrying")
        assert line["level"] == "ERROR"
    report_figure(
        "broker killed and restarted under the emulator and the consumer",
        f"readings produced {len(readings)}, measured while the broker was down {len(during)} "
        f"(all delivered to the new broker, {len(new_broker)} in all), stored {len(rows)}, "
        f"lost with the old broker's memory {len(lost)}; consumer: consumed {done['consumed']}, "
        f"duplicates {done['duplicates']}, invalid {done['invalid']}",
    )


# --- 4. SIGTERM under load ---------------------------------------------------------------------


def test_sigterm_during_a_backlog_commits_exactly_what_is_stored(
    kafka: KafkaTopics, tmp_path: Path, children
):
    """The batch in flight is finished and its offsets committed before exit: the committed
    offset of each partition is exactly its number of stored readings, and a restarted consumer
    stores the rest with no duplicate."""
    first_log = tmp_path / "first.log"
    first = consumer_start(kafka, first_log, "--batch-size", "200", track=children)
    total = backlog(seed=4)
    produced = read_backlog(kafka, total)
    wait_for_log(first_log, "partitions assigned", first, timeout=30)
    wait_until(lambda: stored_count() >= total // 5, 30, "a fifth of the backlog stored")
    kill(first, signal.SIGTERM)
    assert first.returncode == 0, first_log.read_text()

    done = totals(first_log)
    rows = stored()
    assert 0 < len(rows) < total, "SIGTERM must come in the middle of the backlog"
    assert (done["consumed"], done["stored"], done["duplicates"]) == (len(rows), len(rows), 0)
    committed = {p: o for p, o in kafka.committed().items() if o >= 0}
    # Per partition: the rows stored are exactly the messages below the committed offset.
    for partition in range(3):
        offset = committed.get(partition, 0)
        below = {k for k, (p, o) in produced.position.items() if p == partition and o < offset}
        assert {k for k in rows if produced.position[k][0] == partition} == below

    second_log = tmp_path / "second.log"
    second = consumer_start(kafka, second_log, track=children)
    wait_until(lambda: stored_count() == total, 45, "the rest stored", poll=0.2)
    process_stop(second)
    assert second.returncode == 0, second_log.read_text()
    after = totals(second_log)
    assert after["consumed"] == after["stored"] == total - len(rows)
    assert after["duplicates"] == 0
    assert stored() == produced.values

    report_figure(
        "SIGTERM mid-backlog (batch 200)",
        f"produced {total}, stored and committed at exit {len(rows)} "
        f"(committed offsets {sum(committed.values())}), stored by the restarted consumer "
        f"{after['stored']}, duplicates 0, final {stored_count()}",
    )
