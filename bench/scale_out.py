"""Scale-out: two `consume_vitals` processes in one group against one (issue 20, target 1:
two store >= 1.6x what one does), and where the cores go.

The alarm-churn readings of bench/ingest.py (each sign drawn independently per reading: alarms
raised, re-prioritized and resolved all the time) are produced once to a topic of 4
partitions, keyed by patient (each patient's readings on one partition: checked from the
delivery reports). Then, each run from a fresh copy of the migrated database and a new
consumer group (so from offset 0):
- one: one `manage.py consume_vitals` until every reading is stored;
- two: two of them in one group, started together;
- rebalance: two, the second started once the first has stored a quarter (a rebalance in the
  middle of the work: cooperative-sticky moves two partitions to the newcomer).
Each timed from the first partitions' assignment to the last row. During each, the CPU time
of every process that works (the consumers, the broker with its Tansu child, the PostgreSQL
server with its backends, the machine as a whole) from /proc: where the two cores go. Each
consumer's time inside its batch transactions (its `icu_consumer_batch_write_seconds`, scraped
from --metrics-port) says how much of the work is serial on SQLite (one writer at a time: a
transaction begins IMMEDIATE, waiting for the write lock).

Correctness, checked on every run: the rows stored are exactly the readings sent (no loss, no
duplicate, the same values), no batch retried, no reading counted duplicate, and each patient's
alarms (kind, priority, raised, resolved) the same as the one-consumer run's.

Run alone: python -m bench scale_out   (or: python -m bench scale_out --quick --engine sqlite)
"""

import argparse
import json
import os
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

from bench import ingest
from bench.common import (
    CLOCK_TICKS,
    Figure,
    World,
    cpu_seconds,
    django_setup,
    emit,
    json_log_lines,
    manage,
    progress,
    run_child,
    stop,
    wait_for_log,
)
from testing.devservers import free_port

PARTITIONS = 4
RUNS = {"one": (1, 0.0), "two": (2, 0.0), "rebalance": (2, 0.25)}  # consumers, stagger
# The sweeps judge silence and unanswered alarms by the clock, not by the readings: off here,
# so that every run's alarms are the readings' alone and comparable from run to run.
QUIET_SWEEPS = {"ALARM_NO_DATA_AFTER": "86400", "ALARM_ESCALATE_AFTER": "86400"}


# --- /proc -----------------------------------------------------------------------------------


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, CPU ticks used: its own and its reaped children's)."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        # After the name: state, ppid, ... utime (14th field), stime, cutime, cstime.
        table[int(entry.name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
    return table


def tree_cpu_seconds(root: int, table: dict[int, tuple[int, int]]) -> float:
    """CPU seconds of a process and of all its descendants, living or reaped (a reaped one's
    time is in its parent's cutime/cstime, a living one's in its own: nothing counted twice)."""
    children = defaultdict(list)
    for pid, (ppid, _) in table.items():
        children[ppid].append(pid)
    ticks, stack = 0, [root]
    while stack:
        pid = stack.pop()
        if pid in table:
            ticks += table[pid][1]
            stack += children[pid]
    return ticks / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores; idle and iowait excluded)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def broker_pid() -> int:
    """This benchmark's broker: the `run_broker` child of this process (bench.common.world)."""
    me = os.getpid()
    for pid, (ppid, _) in _processes().items():
        if ppid != me:
            continue
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"run_broker" in command:
            return pid
    raise RuntimeError("the benchmark's broker process was not found")


# --- child: produce --------------------------------------------------------------------------


def produce(*, data: Path, topic: str) -> Figure:
    """Every reading to a new topic of PARTITIONS partitions; each key (a patient) must land on
    one partition."""
    from core.kafka import producer_create, topics_ensure

    messages = ingest._messages(data)
    topics_ensure(topics={topic: PARTITIONS})
    producer = producer_create(**{"linger.ms": 20, "queue.buffering.max.messages": 1_000_000})
    partitions_of: dict[bytes, set[int]] = defaultdict(set)
    failed = []

    def on_delivery(error, message) -> None:
        if error is not None:
            failed.append(error)
        else:
            partitions_of[message.key()].add(message.partition())

    started = time.perf_counter()
    for key, value in messages:
        sent = datetime.fromisoformat(json.loads(value)["timestamp"]).timestamp()
        producer.produce(
            topic, key=key, value=value, timestamp=round(sent * 1000), on_delivery=on_delivery
        )
        producer.poll(0)
    assert producer.flush(60) == 0
    seconds = time.perf_counter() - started
    assert not failed, failed[:3]
    split = {k: p for k, p in partitions_of.items() if len(p) > 1}
    assert not split, f"{len(split)} patients' readings on several partitions"
    readings = Counter()
    patient_partition = {k: next(iter(p)) for k, p in partitions_of.items()}
    for key, _ in messages:
        readings[patient_partition[key]] += 1
    return Figure(
        benchmark="scale_out",
        figure="produced",
        value=len(messages) / seconds,
        unit="readings/s",
        details={
            "readings": len(messages),
            "patients": len(partitions_of),
            "readings_per_partition": {str(p): readings[p] for p in sorted(readings)},
        },
    )


# --- child: one run of consumers -------------------------------------------------------------


def _scrape(port: int) -> dict[str, float]:
    """The batch-write histogram's sum and count from a consumer's metrics port (none when
    its server is not up yet: a consumer started late, in a short run)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    found = {}
    for line in text.splitlines():
        for name in ("sum", "count"):
            if line.startswith(f"icu_consumer_batch_write_seconds_{name} "):
                found[name] = float(line.split()[1])
    return found


def _expected_rows(messages: list[tuple[bytes, bytes]]) -> set[tuple]:
    from datetime import UTC

    from vitals.contract import reading_parse

    now = datetime.now(tz=UTC)
    rows = set()
    for key, value in messages:
        r = reading_parse(key=key, value=value, now=now)
        rows.add(
            (
                str(r.patient_uuid),
                r.measured_at,
                r.pulse,
                r.resp_rate,
                r.systolic,
                r.diastolic,
                r.spo2,
                r.temperature,
            )
        )
    return rows


def _stored_rows() -> list[tuple]:
    from vitals.models import PatientMetric

    return [
        (str(u), *rest)
        for u, *rest in PatientMetric.objects.values_list(
            "patient__uuid",
            "measured_at",
            "pulse",
            "resp_rate",
            "systolic",
            "diastolic",
            "spo2",
            "temperature",
        )
    ]


def _alarms() -> list[list]:
    from vitals.models import Alarm

    return sorted(
        [str(u), kind, priority, raised.isoformat(), resolved.isoformat() if resolved else None]
        for u, kind, priority, raised, resolved in Alarm.objects.values_list(
            "patient__uuid", "kind", "priority", "raised_at", "resolved_at"
        )
    )


def consume(
    *,
    data: Path,
    engine: str,
    run: str,
    workdir: Path,
    broker: int,
    postgres: int | None,
) -> Figure:
    """Start the run's consumers, wait until every reading is stored, measure and check."""

    count, stagger = RUNS[run]
    messages = ingest._messages(data)
    total = len(messages)
    logs = [workdir / f"scale-out-{engine}-{run}-{i}.log" for i in range(count)]
    ports = [free_port() for _ in range(count)]

    def start(i: int):
        return manage(
            "consume_vitals", "--metrics-port", str(ports[i]), log=logs[i], env=dict(os.environ)
        )

    processes = [start(0)] + [start(i) for i in range(1, count) if not stagger]
    try:
        wait_for_log(logs[0], "partitions assigned", processes[0], timeout=60)

        def cpu_now() -> dict:
            """CPU seconds so far of each consumer, the broker, the database server, this
            poller and the whole machine (read at the start and at the end of the run)."""
            table = _processes()
            return {
                "consumers": [tree_cpu_seconds(p.pid, table) for p in processes],
                "broker": tree_cpu_seconds(broker, table),
                "database server": tree_cpu_seconds(postgres, table) if postgres else 0.0,
                "this poller": cpu_seconds(os.getpid()),
                "machine": machine_busy_seconds(),
            }

        cpu_start = cpu_now()
        stored, last_report = 0, time.monotonic()
        deadline = time.monotonic() + 600
        while stored < total and time.monotonic() < deadline:
            time.sleep(0.1)
            stored = ingest.readings_stored(total)
            if len(processes) < count and stored >= stagger * total:
                progress(f"  {stored:,} stored: starting the second consumer")
                processes.append(start(len(processes)))
                cpu_start["consumers"].append(tree_cpu_seconds(processes[-1].pid, _processes()))
            if time.monotonic() - last_report > 5:
                progress(f"  {run}: stored {stored:,} of {total:,}")
                last_report = time.monotonic()
        done_wall = time.time()
        cpu_end = cpu_now()
        writes = [_scrape(port) for port in ports[: len(processes)]]
        time.sleep(1)  # the last offsets stored and committed before SIGTERM
    finally:
        for process in processes:
            stop(process)
    assert stored == total, f"{run}: stored {stored} of {total}"

    lines = [json_log_lines(log) for log in logs[: len(processes)]]
    assigned = min(
        datetime.fromisoformat(line["timestamp"]).timestamp()
        for log_lines in lines
        for line in log_lines
        if line.get("message") == "partitions assigned"
    )
    seconds = done_wall - assigned
    # Each consumer's totals as it stopped; none from one stopped before it got going (a
    # --quick run's late joiner, still starting up): it did nothing, which the sums check.
    nothing = dict.fromkeys(("stored", "duplicates", "invalid", "retries", "alarm_events"), 0)
    stopped = [
        next(
            (line for line in reversed(log_lines) if line.get("message") == "consumer stopped"),
            nothing,
        )
        for log_lines in lines
    ]

    def at(log_lines: list[dict], message: str, *, nonempty: bool = False) -> float | None:
        """When a consumer first logged `message` (with partitions, if `nonempty`)."""
        for line in log_lines:
            if line.get("message") == message and (line.get("partitions") or not nonempty):
                return datetime.fromisoformat(line["timestamp"]).timestamp()
        return None

    # From subscribing to holding partitions; and, when a second consumer joined the first's
    # work, how long the partitions moved to it had no owner (revoked, not yet assigned).
    joins = [
        round(got - subscribed, 2) if (subscribed := at(log_lines, "consuming")) and got else None
        for log_lines in lines
        for got in [at(log_lines, "partitions assigned", nonempty=True)]
    ]
    handover = None
    if stagger and len(lines) == 2:
        given_up = at(lines[0], "partitions revoked")
        taken = at(lines[1], "partitions assigned", nonempty=True)
        if given_up and taken and given_up < done_wall:
            handover = round(taken - given_up, 2)
    revoked = [
        line
        for log_lines in lines
        for line in log_lines
        if line.get("message") == "partitions revoked"
    ]

    # What was stored is what was sent: every reading once, with its values.
    rows = _stored_rows()
    assert len(rows) == len(set(rows)) == total, (len(rows), len(set(rows)), total)
    expected = _expected_rows(messages)
    assert set(rows) == expected, f"{len(set(rows) ^ expected)} rows differ from the readings"
    assert sum(s["stored"] for s in stopped) == total, stopped
    assert sum(s["duplicates"] for s in stopped) == 0, stopped
    assert sum(s["invalid"] for s in stopped) == 0, stopped
    alarms = _alarms()
    (workdir / f"scale-out-alarms-{engine}-{run}.json").write_text(json.dumps(alarms))

    cpu = {
        "consumers": [
            round((e - s) / seconds, 3)
            for s, e in zip(cpu_start["consumers"], cpu_end["consumers"], strict=True)
        ],
        **{
            k: round((cpu_end[k] - cpu_start[k]) / seconds, 3)
            for k in ("broker", "database server", "this poller", "machine")
        },
    }
    ours = sum(cpu["consumers"]) + cpu["broker"] + cpu["database server"] + cpu["this poller"]
    cpu["other processes"] = round(max(0.0, cpu["machine"] - ours), 3)
    # What a reading costs in CPU, whoever had the cores: the consumers alone, and with the
    # broker and the database server (what a machine of their own would have to give).
    pipeline = sum(cpu["consumers"]) + cpu["broker"] + cpu["database server"]
    cpu_us = {
        "consumers": round(sum(cpu["consumers"]) * seconds / total * 1e6, 1),
        "pipeline": round(pipeline * seconds / total * 1e6, 1),
    }
    return Figure(
        benchmark="scale_out",
        figure=run,
        value=total / seconds,
        unit="rows/s",
        engine=engine,
        details={
            "rows": total,
            "seconds": round(seconds, 3),
            "cores": cpu,
            "cpu_us_per_reading": cpu_us,
            "batch_write_seconds": [round(w.get("sum", 0.0), 3) for w in writes],
            "batches": [int(w.get("count", 0)) for w in writes],
            "stored": [s["stored"] for s in stopped],
            "retries": [s["retries"] for s in stopped],
            "alarm_events": [s["alarm_events"] for s in stopped],
            "partitions_revoked": len(revoked),
            "join_seconds": joins,
            "partitions_unowned_seconds": handover,
            "alarms": len(alarms),
            "load_average": os.getloadavg(),
        },
    )


# --- orchestration (in the `python -m bench` process) ---------------------------------------


def _cpu_line(fig: Figure) -> str:
    c = fig.details["cores"]
    consumers = " + ".join(f"{x:.2f}" for x in c["consumers"])
    return (
        f"{fig.figure}: {fig.value:,.0f} rows/s in {fig.details['seconds']:.1f} s; cores: "
        f"consumers {consumers}, broker {c['broker']:.2f}, database server "
        f"{c['database server']:.2f}, poller {c['this poller']:.2f}, other processes "
        f"{c['other processes']:.2f}, machine {c['machine']:.2f}; CPU a reading "
        f"{fig.details['cpu_us_per_reading']} us; in batch transactions "
        f"{fig.details['batch_write_seconds']} s; retries {fig.details['retries']}; stored "
        f"{fig.details['stored']}; subscribe to assignment {fig.details['join_seconds']} s"
        + (
            f"; partitions without an owner {fig.details['partitions_unowned_seconds']} s"
            if fig.details["partitions_unowned_seconds"] is not None
            else ""
        )
    )


def _bounds(*, one: Figure, two: Figure, engine: str) -> dict:
    """What the one-consumer run says two could reach at best, on this machine with nothing
    else running: on SQLite, Amdahl's law over its one writer (the share of a consumer's time
    inside its batch transactions cannot overlap); on both, the cores (one consumer keeps at
    most one core busy; two at most the machine's, with the broker and the database server)."""
    serial = one.details["batch_write_seconds"][0] / one.details["seconds"]
    cpus = os.cpu_count() or 1
    consumer_us = one.details["cpu_us_per_reading"]["consumers"]
    pipeline_us = two.details["cpu_us_per_reading"]["pipeline"]
    bounds = {
        "one_consumer_share_in_transactions": round(serial, 3),
        # One consumer at one full core, against two sharing the machine with the rest.
        "cores_bound_x": round(min(2.0, cpus * consumer_us / pipeline_us), 2),
    }
    if engine == "sqlite":
        bounds["one_writer_bound_x"] = round(1 / (serial + (1 - serial) / 2), 2)
    return bounds


def run(world: World, *, engines: list[str], patients: int, per_patient: int) -> list[Figure]:
    data = world.workdir / "scale-out.pickle"
    progress(f"scale_out: generating {patients * per_patient:,} churn readings of {patients:,}")
    run_child(
        "bench.ingest",
        "generate",
        "--workload",
        "churn",
        "--data",
        str(data),
        "--patients",
        str(patients),
        "--per-patient",
        str(per_patient),
        env=world.env(world.database("sqlite", "scale-out-generate")),
    )
    topic = f"bench-scale-out-{uuid.uuid4().hex[:8]}"
    env = world.env(world.database("sqlite", "scale-out-generate"), KAFKA_TOPIC=topic)
    (produced,) = run_child("bench.scale_out", "produce", "--data", str(data), env=env)
    progress(f"scale_out: produced to {PARTITIONS} partitions: {produced.details}")
    broker = broker_pid()
    figures = []
    for engine in engines:
        measured: dict[str, Figure] = {}
        for name in RUNS:
            url = world.database(engine, f"scale_out_{name}")
            env = world.env(
                url,
                KAFKA_TOPIC=topic,
                KAFKA_DLQ_TOPIC=f"{topic}.dlq",
                KAFKA_ALARMS_TOPIC=f"{topic}.alarms",
                KAFKA_GROUP_ID=f"{topic}-{engine}-{name}",
                **QUIET_SWEEPS,
            )
            progress(f"scale_out on {engine}: {name}")
            args = ["consume", "--data", str(data), "--engine", engine, "--run", name]
            args += ["--workdir", str(world.workdir), "--broker-pid", str(broker)]
            if engine == "postgresql":
                args += ["--postgres-pid", str(world.postgres.process.pid)]
            (fig,) = run_child("bench.scale_out", *args, env=env)
            measured[name] = fig
            progress("  " + _cpu_line(fig))
            world.drop(engine, f"scale_out_{name}")
        # Each patient's alarms as one consumer decided them.
        alarms = {
            name: json.loads((world.workdir / f"scale-out-alarms-{engine}-{name}.json").read_text())
            for name in RUNS
        }
        if not measured["rebalance"].details["stored"][-1]:
            progress("  the second consumer joined too late to store anything: no handover seen")
        for name in ("two", "rebalance"):
            assert alarms[name] == alarms["one"], (
                f"{engine}: the alarms of the {name} run differ from one consumer's "
                f"({len(alarms[name])} against {len(alarms['one'])})"
            )
        one = measured["one"]
        bounds = _bounds(one=one, two=measured["two"], engine=engine)
        progress(f"  bounds: {bounds}")
        for name, label, target in (
            ("two", "two consume_vitals in one group", ">= 1.6"),
            ("rebalance", "two, the second joining at a quarter", ""),
        ):
            fig = measured[name]
            figures.append(
                Figure(
                    benchmark="scale_out",
                    figure=label,
                    value=fig.value,
                    unit="rows/s",
                    reference="one consume_vitals",
                    reference_value=one.value,
                    target=target,
                    engine=engine,
                    details={"run": fig.details, "reference": one.details, "bounds": bounds},
                )
            )
        # A machine's load moves the rates (two processes get twice one's share of a busy
        # machine); what a reading costs in CPU does not: scaling out must not add to it.
        figures.append(
            Figure(
                benchmark="scale_out",
                figure="CPU a reading, two consumers (with broker and database server)",
                value=measured["two"].details["cpu_us_per_reading"]["pipeline"],
                unit="us",
                reference="one consumer",
                reference_value=one.details["cpu_us_per_reading"]["pipeline"],
                engine=engine,
            )
        )
        for name in ("one", "two"):
            cores = measured[name].details["cores"]
            who = "one consumer" if name == "one" else "two consumers"
            figures.append(
                Figure(
                    benchmark="scale_out",
                    figure=f"CPU with {who}: consumers",
                    value=sum(cores["consumers"]),
                    unit="cores",
                    engine=engine,
                    details={"cores": cores, "machine_cpus": os.cpu_count()},
                )
            )
            for part in ("broker", "database server", "other processes"):
                if part == "database server" and engine == "sqlite":
                    continue  # SQLite works inside the consumers
                figures.append(
                    Figure(
                        benchmark="scale_out",
                        figure=f"CPU with {who}: {part}",
                        value=cores[part],
                        unit="cores",
                        engine=engine,
                    )
                )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description="One scale-out measurement (run by `python -m bench scale_out`)."
    )
    parser.add_argument("what", choices=["produce", "consume"])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--engine", default="sqlite")
    parser.add_argument("--run", choices=list(RUNS), default="one")
    parser.add_argument("--workdir", type=Path, default=Path("."))
    parser.add_argument("--broker-pid", type=int, default=0)
    parser.add_argument("--postgres-pid", type=int, default=None)
    args = parser.parse_args()
    django_setup()
    if args.what == "produce":
        from django.conf import settings

        emit([produce(data=args.data, topic=settings.KAFKA_TOPIC)])
    else:
        emit(
            [
                consume(
                    data=args.data,
                    engine=args.engine,
                    run=args.run,
                    workdir=args.workdir,
                    broker=args.broker_pid,
                    postgres=args.postgres_pid,
                )
            ]
        )


if __name__ == "__main__":
    main()
