"""Freshness: how long from a reading's timestamp until the API shows it, with a ward of 1,000
patients at 1 Hz flowing through the real emulator, broker and consumer.

A poller asks the API (Django's test client, in this process, against the same database) for a
sample of patients' latest reading, round after round; the first round that shows a reading
gives its delay: seen - measured_at. The measurement overstates each delay by up to one round
(reported), so the true figures are at most that much better.
"""

import argparse
import json
import time
from datetime import datetime
from pathlib import Path

from bench.common import (
    Figure,
    World,
    django_setup,
    emit,
    manage,
    percentile,
    progress,
    run_child,
    stop,
    topic_create,
    topic_env,
    wait_for_log,
)


def measure(
    *, patients: int, sample: int, warm_up: float, window: float, topic: str, workdir
) -> list[Figure]:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client
    from rest_framework.authtoken.models import Token

    from vitals.emulator import patient_uuid_for_name

    user = get_user_model().objects.create_superuser("bench", password=None)
    token = Token.objects.create(user=user)
    client = Client(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Token {token.key}")
    env = topic_env(topic)
    consumer = manage("consume_vitals", log=workdir / "freshness-consumer.log", env=env)
    emulator = manage(
        "run_patient", "--patients", str(patients), "--interval", "1", "--scenario", "random",
        "--seed", "2", log=workdir / "freshness-emulator.log", env=env,
    )  # fmt: skip
    urls = [
        f"/{settings.API_PREFIX}patients/{patient_uuid_for_name(f'bed-{i:03d}')}/"
        for i in range(1, patients + 1, max(1, patients // sample))
    ]
    delays, rounds, seen = [], [], {}
    try:
        wait_for_log(workdir / "freshness-consumer.log", "partitions assigned", consumer, 60)
        progress(
            f"freshness: warming up {warm_up:g} s, then polling {len(urls)} patients "
            f"for {window:g} s"
        )
        time.sleep(warm_up)
        end = time.monotonic() + window
        while time.monotonic() < end:
            started = time.monotonic()
            for url in urls:
                response = client.get(url)
                now = time.time()
                if response.status_code != 200:
                    continue  # not created yet
                latest = json.loads(response.content)["latest_metric"]
                if latest and seen.get(url) != latest["measured_at"]:
                    if url in seen:  # the first sight may be of a reading stored long ago
                        delays.append(
                            now - datetime.fromisoformat(latest["measured_at"]).timestamp()
                        )
                    seen[url] = latest["measured_at"]
            rounds.append(time.monotonic() - started)
    finally:
        stop(emulator)
        stop(consumer)
    if not delays:
        raise RuntimeError("no reading reached the API")
    details = {"patients": patients, "polled": len(urls), "readings_seen": len(delays),
               "poll_round_p50_ms": round(percentile(rounds, 50) * 1000, 1)}  # fmt: skip
    ms = [d * 1000 for d in delays]
    return [
        Figure("freshness", "reading to API p50", percentile(ms, 50), "ms", details=details),
        Figure("freshness", "reading to API p99", percentile(ms, 99), "ms", target="<= 1000",
               details=details),
        Figure("freshness", "poll round (resolution)", percentile(rounds, 50) * 1000, "ms",
               details=details),
    ]  # fmt: skip


def run(
    world: World, *, engines: list[str], patients: int, sample: int, warm_up: float, window: float
) -> list[Figure]:
    figures = []
    for engine in engines:
        topic = f"bench-fresh-{engine}"
        topic_create(world.bootstrap, topic)
        url = world.database(engine, f"freshness_{engine}")
        progress(f"freshness on {engine}: {patients:,} patients at 1 Hz")
        for figure in run_child(
            "bench.freshness", "--patients", str(patients), "--sample", str(sample),
            "--warm-up", str(warm_up), "--window", str(window), "--topic", topic,
            "--workdir", str(world.workdir), env=world.env(url),
        ):  # fmt: skip
            figure.engine = engine
            figures.append(figure)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description="One freshness measurement (run by `python -m bench`)."
    )
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--sample", type=int, default=20)
    parser.add_argument("--warm-up", type=float, default=10)
    parser.add_argument("--window", type=float, default=30)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    django_setup()
    emit(measure(patients=args.patients, sample=args.sample, warm_up=args.warm_up,
                 window=args.window, topic=args.topic, workdir=args.workdir))  # fmt: skip


if __name__ == "__main__":
    main()
