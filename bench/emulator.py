"""Emulator scale: one `run_patient` process, 10,000 patients at one reading per second.

The real command runs for a while; its CPU time is read from /proc over a window after the
start-up, and every reading it produced is read back from the topic afterwards: the rate is
readings measured in the window per second, the jitter of each patient's interval is
|measured_at - previous measured_at - 1 s| (the emulator stamps a reading with the wall clock as
it sends it, so this is the lateness of its schedule as the broker received it).
"""

import json
import re
import time
import uuid
from collections import defaultdict
from datetime import datetime
from itertools import pairwise

from confluent_kafka import Consumer, TopicPartition

from bench.common import (
    Figure,
    World,
    cpu_seconds,
    manage,
    percentile,
    progress,
    stop,
    topic_create,
    wait_for_log,
)

_TIMESTAMP = re.compile(rb'"timestamp":"([^"]+)"')


def run(
    world: World, *, engines: list[str], patients: int, warm_up: float, window: float
) -> list[Figure]:
    topic = f"bench-emulator-{uuid.uuid4().hex[:8]}"
    topic_create(world.bootstrap, topic)
    log = world.workdir / "emulator.log"
    env = world.env("sqlite:///unused.sqlite3", LOG_LEVEL="INFO")
    progress(
        f"emulator: {patients:,} patients at 1 Hz, {warm_up:g} s warm-up, {window:g} s measured"
    )
    process = manage(
        "run_patient", "--patients", str(patients), "--interval", "1", "--scenario", "random",
        "--seed", "1", "--topic", topic, log=log, env=env,
    )  # fmt: skip
    try:
        wait_for_log(log, "emulating patients", process, timeout=120)
        if process.poll() is not None:
            raise RuntimeError(f"run_patient exited:\n{log.read_text()[-2000:]}")
        time.sleep(warm_up)
        cpu_before, wall_before = cpu_seconds(process.pid), time.time()
        time.sleep(window)
        cpu_after, wall_after = cpu_seconds(process.pid), time.time()
    finally:
        status = stop(process)
    progress(f"emulator stopped (status {status}); reading the topic back")
    times = _read_back(world.bootstrap, topic)

    produced = sum(wall_before <= t < wall_after for ts in times.values() for t in ts)
    jitter_ms = []
    for ts in times.values():
        ts.sort()
        jitter_ms += [
            abs(b - a - 1.0) * 1000 for a, b in pairwise(ts) if wall_before <= b < wall_after
        ]
    seconds = wall_after - wall_before
    cores = (cpu_after - cpu_before) / seconds
    details = {"patients": patients, "window_s": round(seconds, 1), "intervals": len(jitter_ms)}
    return [
        Figure("emulator", "readings produced", produced / seconds, "readings/s",
               reference="patients x 1 Hz", reference_value=float(patients), target=">= 0.99",
               details=details),
        Figure("emulator", "interval jitter p50", percentile(jitter_ms, 50), "ms", details=details),
        Figure("emulator", "interval jitter p99", percentile(jitter_ms, 99), "ms", target="<= 100",
               details=details),
        Figure("emulator", "interval jitter max", max(jitter_ms), "ms", details=details),
        Figure("emulator", "CPU used", cores, "cores", target="<= 1.0", details=details),
    ]  # fmt: skip


def _consumer(bootstrap: str) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}",
                     "enable.auto.commit": False})  # fmt: skip


def _read_back(bootstrap: str, topic: str) -> dict[bytes, list[float]]:
    """Every reading's measured_at (epoch seconds) by patient, read until the topic is idle."""
    consumer = _consumer(bootstrap)
    times: dict[bytes, list[float]] = defaultdict(list)
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 2.0:
            batch = consumer.consume(10_000, 0.2)
            if batch:
                idle_since = time.monotonic()
            for message in batch:
                if message.error():
                    continue
                match = _TIMESTAMP.search(message.value())
                stamp = match[1].decode() if match else json.loads(message.value())["timestamp"]
                times[message.key()].append(datetime.fromisoformat(stamp).timestamp())
    finally:
        consumer.close()
    return times
