"""Consumer memory: the resident memory of `consume_vitals` after 1,000,000 readings against
after the first 100,000 (a long-running worker must not grow with what it has processed).

The readings: 100 readings of 1,000 emulated patients (a mixed ward, so alarms are raised and
resolved), repeated ten times 100 s later each time, produced while the consumer runs. RSS is
read from /proc each second alongside the count of stored rows.
"""

import argparse
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import (
    Figure,
    World,
    django_setup,
    emit,
    manage,
    progress,
    rss_mib,
    run_child,
    stop,
    topic_create,
    topic_env,
    wait_for_log,
)

_TIMESTAMP = re.compile(rb'"timestamp":"([^"]+)"')


def measure(*, patients: int, rounds: int, topic: str, workdir, first: int) -> list[Figure]:
    from django.db import connection

    from core.kafka import producer_create
    from vitals.contract import reading_to_message
    from vitals.emulation import emulators_build
    from vitals.models import PatientMetric

    emulators = emulators_build(names=[], patients=patients, patient_uuid=None,
                                scenario="random", seed=3, artefacts=True)  # fmt: skip
    steps = 100
    start = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(seconds=steps * rounds)
    block = [
        reading_to_message(e.reading(start + timedelta(seconds=step), 30.0))
        for step in range(steps)
        for e in emulators
    ]
    total = len(block) * rounds
    env = topic_env(topic)
    log = workdir / f"memory-consumer-{topic}.log"
    consumer = manage("consume_vitals", log=log, env=env)
    samples: list[tuple[int, float]] = []
    try:
        wait_for_log(log, "partitions assigned", consumer, 60)
        producer = producer_create(**{"linger.ms": 20, "queue.buffering.max.messages": 1_000_000})
        for k in range(rounds):
            shift = timedelta(seconds=steps * k)
            for key, value in block:
                at = datetime.fromisoformat(_TIMESTAMP.search(value)[1].decode()) + shift
                stamp = at.isoformat(timespec="milliseconds").encode()
                value = _TIMESTAMP.sub(b'"timestamp":"' + stamp + b'"', value, count=1)
                while True:
                    try:
                        # Sent as measured: right clocks (no clock_skew alarms).
                        producer.produce(
                            topic, key=key, value=value, timestamp=round(at.timestamp() * 1000)
                        )
                        break
                    except BufferError:
                        producer.poll(0.1)
                producer.poll(0)
            samples.append(_sample(consumer.pid, PatientMetric, connection))
        assert producer.flush(60) == 0
        progress(f"memory: produced {total:,} readings; waiting for the consumer")
        deadline = time.monotonic() + 900
        while samples[-1][0] < total and time.monotonic() < deadline:
            time.sleep(1)
            samples.append(_sample(consumer.pid, PatientMetric, connection))
            if len(samples) % 10 == 0:
                progress(f"memory: {samples[-1][0]:,} stored, RSS {samples[-1][1]:.1f} MiB")
    finally:
        stop(consumer)
    if samples[-1][0] != total:
        raise RuntimeError(f"the consumer stored {samples[-1][0]} of {total}")
    at_first = next(rss for stored, rss in samples if stored >= first)
    at_half = next(rss for stored, rss in samples if stored >= total // 2)
    at_end = samples[-1][1]
    details = {"samples": [[s, round(r, 1)] for s, r in samples], "readings": total}
    # The second line tells growth that levels off (caches, the allocator warming up) from a
    # leak, which would go on growing over the second half.
    return [
        Figure("memory", f"consumer RSS after {total:,}", at_end, "MiB",
               reference=f"RSS after {first:,}", reference_value=at_first, target="<= 1.1",
               details=details),
        Figure("memory", f"consumer RSS after {total:,}", at_end, "MiB",
               reference=f"RSS after {total // 2:,}", reference_value=at_half, details=details),
    ]  # fmt: skip


def _sample(pid: int, model, connection) -> tuple[int, float]:
    stored = model.objects.count()
    connection.close()  # a fresh snapshot next time (SQLite WAL)
    return stored, rss_mib(pid)


def run(
    world: World, *, engines: list[str], patients: int, rounds: int, first: int
) -> list[Figure]:
    figures = []
    for engine in engines:
        topic = f"bench-memory-{uuid.uuid4().hex[:8]}"
        topic_create(world.bootstrap, topic)
        url = world.database(engine, f"memory_{engine}")
        progress(f"memory on {engine}: {patients * 100 * rounds:,} readings through consume_vitals")
        for figure in run_child(
            "bench.memory", "--patients", str(patients), "--rounds", str(rounds),
            "--first", str(first), "--topic", topic, "--workdir", str(world.workdir),
            env=world.env(url),
        ):  # fmt: skip
            figure.engine = engine
            figures.append(figure)
        world.drop(engine, f"memory_{engine}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description="Consumer memory (run by `python -m bench`).")
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--first", type=int, default=100_000)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    django_setup()
    emit(measure(patients=args.patients, rounds=args.rounds, topic=args.topic,
                 workdir=args.workdir, first=args.first))  # fmt: skip


if __name__ == "__main__":
    main()
