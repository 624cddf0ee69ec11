"""Prometheus metrics (core/metrics.py), with exact values.

- the consumer's counters, driven through `VitalsConsumer.process_batch()` with fake Kafka
  clients and read from the registry before and after: exactly these series change, by exactly
  this much;
- the web middleware and `/metrics` through Django's test client, and several gunicorn workers
  (multiprocess mode) adding up in one scrape;
- end to end: `consume_vitals` and `run_patient` as subprocesses against the real broker,
  scraped over HTTP as Prometheus would.
"""

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from django.db import IntegrityError, OperationalError
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from core.process import process_stop
from patients.tests.factories import PatientFactory
from testing.broker import KafkaTopics
from testing.database import database_url
from testing.devservers import free_port
from testing.processes import BASE_DIR, start_manage, subprocess_env, wait_for_log
from vitals import consumer as consumer_module
from vitals.contract import REASONS, Reading, reading_parse, reading_to_message
from vitals.models import AlarmEvent, PatientMetric
from vitals.services import reading_bulk_store
from vitals.tests.fakes import worker_create

Key = tuple[str, frozenset]


# --- reading the registry ----------------------------------------------------------------------
def registry_samples(prefix: str) -> dict[Key, float]:
    """Every sample of the registry whose name starts with `prefix` (creation times aside)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in REGISTRY.collect()
        for s in family.samples
        if s.name.startswith(prefix) and not s.name.endswith("_created")
    }


def changes(before: dict[Key, float], after: dict[Key, float]) -> dict[Key, float]:
    """The samples that changed, by how much (a new series counts from 0)."""
    return {
        key: value - before.get(key, 0.0)
        for key, value in after.items()
        if value != before.get(key, 0.0)
    }


def key(name: str, **labels: str) -> Key:
    return (name, frozenset(labels.items()))


def buckets(name: str, bounds: list[str], value: float, count: int = 1) -> dict[Key, float]:
    """The bucket samples a histogram's observation of `value` raises (each `count` times)."""
    return {key(f"{name}_bucket", le=le): count for le in bounds if float(le) >= value}


BATCH_SIZE_BOUNDS = "1.0 5.0 10.0 25.0 50.0 100.0 250.0 500.0 1000.0 2500.0 5000.0 10000.0 +Inf"
DELAY_BOUNDS = "0.05 0.1 0.25 0.5 1.0 2.5 5.0 10.0 30.0 60.0 300.0 900.0 3600.0 +Inf"


def message(name: str, measured_at: datetime, **values) -> tuple[bytes, bytes]:
    normal = {"pulse": 72, "resp_rate": 14, "systolic": 120, "diastolic": 80, "spo2": 98}
    return reading_to_message(
        Reading(
            patient_uuid=uuid.uuid5(uuid.NAMESPACE_DNS, f"metrics-{name}"),
            patient_name=name,
            measured_at=measured_at,
            temperature=36.8,
            **(normal | values),
        )
    )


def reading_of(msg: tuple[bytes, bytes]) -> Reading:
    return reading_parse(key=msg[0], value=msg[1])


# --- the consumer, unit ------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_mixed_batch_adds_exactly_its_totals_to_the_consumer_metrics():
    # Readings ten minutes old: every delay lands between the 300 s and 900 s bucket bounds.
    start = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(minutes=10)
    old, new = message("ann", start), [message("bob", start + timedelta(seconds=s)) for s in (1, 2)]
    new.append(message("cy", start + timedelta(seconds=3)))
    reading_bulk_store(readings=[reading_of(old)])  # stored before: its replay is a duplicate
    unknown_field = new[0][1].replace(b'"pulse"', b'"rhythm": "AF", "pulse"')
    worker, consumer, producer = worker_create()
    consumer.add(
        [
            new[0],
            (new[0][0], b"not json at all"),  # invalid_json
            old,  # already in the database: duplicate
            new[1],
            (new[0][0], b'{"schema_version": 1}'),  # missing_field
            new[0],  # the same reading twice in one batch: duplicate
            (new[0][0], unknown_field),  # unknown_field
            (new[0][0], unknown_field),  # unknown_field
            (new[0][0], None),  # empty_message
            new[2],
        ]
    )
    before = registry_samples("icu_consumer_")

    assert worker.process_batch() == 10

    delta = changes(before, registry_samples("icu_consumer_"))
    write_count = key("icu_consumer_batch_write_seconds_count")
    assert delta.pop(write_count) == 1
    # The transaction's duration is the clock's: its buckets and sum are checked for sense only.
    write = {k: delta.pop(k) for k in list(delta) if k[0].startswith("icu_consumer_batch_write")}
    assert 0 < write[key("icu_consumer_batch_write_seconds_sum")] < 30
    assert write[key("icu_consumer_batch_write_seconds_bucket", le="+Inf")] == 1
    delay_sum = delta.pop(key("icu_consumer_reading_delay_seconds_sum"))
    assert 3 * 597 <= delay_sum <= 3 * 900
    assert delta == {
        key("icu_consumer_readings_consumed_total"): 10,
        key("icu_consumer_readings_stored_total"): 3,
        key("icu_consumer_readings_duplicate_total"): 2,
        key("icu_consumer_readings_rejected_total", reason="invalid_json"): 1,
        key("icu_consumer_readings_rejected_total", reason="missing_field"): 1,
        key("icu_consumer_readings_rejected_total", reason="unknown_field"): 2,
        key("icu_consumer_readings_rejected_total", reason="empty_message"): 1,
        key("icu_consumer_dlq_messages_total"): 5,
        key("icu_consumer_batch_size_count"): 1,
        key("icu_consumer_batch_size_sum"): 10,
        **buckets("icu_consumer_batch_size", BATCH_SIZE_BOUNDS.split(), 10),
        key("icu_consumer_reading_delay_seconds_count"): 3,
        **buckets("icu_consumer_reading_delay_seconds", DELAY_BOUNDS.split(), 600, count=3),
    }
    # The registry agrees with the consumer's own totals and with the database.
    assert (worker.totals.consumed, worker.totals.stored, worker.totals.duplicates) == (10, 3, 2)
    assert PatientMetric.objects.count() == 4
    assert len([t for t, *_ in producer.produced if t == "vitals.dlq"]) == 5


@pytest.mark.django_db
def test_a_sign_the_contract_refuses_beside_others_is_counted_by_its_reason():
    """A reading keeps its other signs when one is refused (a pulse of 0 is judged whatever
    the arrest does to the temperature): the refused sign is logged and counted, never lost
    silently, and the reading is stored, not rejected."""
    start = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(minutes=1)
    key_, value = message("ann", start, pulse=0)
    worker, consumer, _ = worker_create()
    value = value.replace(b'"schema_version":1', b'"schema_version":2')  # signs optional
    consumer.add([(key_, value.replace(b'"temperature":36.8', b'"temperature":24.5'))])
    before = registry_samples("icu_consumer_readings_") | registry_samples("icu_consumer_signs")

    assert worker.process_batch() == 1

    after = registry_samples("icu_consumer_readings_") | registry_samples("icu_consumer_signs")
    assert changes(before, after) == {
        key("icu_consumer_readings_consumed_total"): 1,
        key("icu_consumer_readings_stored_total"): 1,
        key("icu_consumer_signs_refused_total", reason="out_of_range"): 1,
    }
    assert list(PatientMetric.objects.values_list("pulse", "temperature")) == [(0, None)]
    for reason in REASONS:  # every reason at 0 from the start, as for whole refusals
        value = REGISTRY.get_sample_value("icu_consumer_signs_refused_total", {"reason": reason})
        assert value is not None, reason


def test_every_dlq_reason_is_exposed_from_the_start_at_zero():
    worker_create()
    for reason in REASONS:
        value = REGISTRY.get_sample_value(
            "icu_consumer_readings_rejected_total", {"reason": reason}
        )
        assert value is not None, reason
    assert (
        REGISTRY.get_sample_value("icu_consumer_readings_rejected_total", {"reason": "x"}) is None
    )


@pytest.mark.django_db
def test_a_database_outage_counts_one_retry_and_nothing_else_until_the_batch_goes_through(
    monkeypatch,
):
    start = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(minutes=10)
    worker, consumer, _ = worker_create()
    consumer.add([message("dan", start + timedelta(seconds=s)) for s in range(4)])
    real_store = consumer_module.reading_bulk_store
    outage = [OperationalError("database is locked")]

    def flaky_store(**kwargs):
        if outage:
            raise outage.pop()
        return real_store(**kwargs)

    monkeypatch.setattr(consumer_module, "reading_bulk_store", flaky_store)
    before = registry_samples("icu_consumer_")

    assert worker.process_batch() == 4  # fails, seeks back
    assert changes(before, registry_samples("icu_consumer_")) == {
        key("icu_consumer_batches_retried_total"): 1
    }

    assert worker.process_batch() == 4  # the same batch again, stored
    delta = changes(before, registry_samples("icu_consumer_"))
    assert delta[key("icu_consumer_batches_retried_total")] == 1
    assert delta[key("icu_consumer_readings_consumed_total")] == 4
    assert delta[key("icu_consumer_readings_stored_total")] == 4
    assert delta[key("icu_consumer_batch_size_count")] == 1
    assert delta[key("icu_consumer_batch_write_seconds_count")] == 1
    assert delta[key("icu_consumer_reading_delay_seconds_count")] == 4


@pytest.mark.django_db
def test_readings_with_another_name_are_counted_and_logged_also_when_stored_one_by_one(
    monkeypatch, caplog
):
    """The name mismatches of a batch that the database refused whole and that was stored
    reading by reading add up the same."""
    start = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(minutes=10)
    fay = message("fay", start)
    impostors = [
        reading_to_message(
            replace(
                reading_of(fay),
                patient_name="Mallory Impostor",
                measured_at=start + timedelta(seconds=s),
            )
        )
        for s in (1, 2)
    ]
    worker, consumer, _ = worker_create()
    consumer.add([fay, *impostors])
    real_store = consumer_module.reading_bulk_store
    refusals = [IntegrityError("refused whole")]

    def refusing_store(**kwargs):
        if refusals and len(kwargs["readings"]) > 1:
            raise refusals.pop()
        return real_store(**kwargs)

    monkeypatch.setattr(consumer_module, "reading_bulk_store", refusing_store)
    before = registry_samples("icu_consumer_")

    assert worker.process_batch() == 3

    delta = changes(before, registry_samples("icu_consumer_"))
    assert delta[key("icu_consumer_readings_stored_total")] == 3
    assert delta[key("icu_consumer_name_mismatch_total")] == 2
    logged = [r for r in caplog.records if r.getMessage().startswith("patient name differs")]
    assert [(r.levelname, r.patient_name, r.name_seen, r.readings) for r in logged] == [
        ("WARNING", "fay", "Mallory Impostor", 1),
        ("WARNING", "fay", "Mallory Impostor", 1),
    ]


@pytest.mark.django_db
def test_the_dlq_counter_counts_every_copy_the_broker_took_even_of_a_retried_batch():
    """The DLQ refuses one of two messages: the batch is retried and the one it took is
    written again. Rejections count once (per completed batch); DLQ messages as written.
    The valid reading, committed by the failed attempt, is a duplicate on the retry:
    consumed = stored + duplicates + rejected holds whatever happened."""
    start = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(minutes=10)
    worker, consumer, producer = worker_create()
    valid = message("eve", start)
    consumer.add([(valid[0], b"[]"), valid, (valid[0], b"{")])
    producer.fail = 1
    before = registry_samples("icu_consumer_")

    worker.process_batch()
    worker.process_batch()

    delta = changes(before, registry_samples("icu_consumer_"))
    assert {k: v for k, v in delta.items() if k[0].endswith("_total")} == {
        key("icu_consumer_batches_retried_total"): 1,
        key("icu_consumer_dlq_failures_total", error="_MSG_TIMED_OUT"): 1,
        key("icu_consumer_dlq_messages_total"): 1 + 2,
        key("icu_consumer_readings_consumed_total"): 3,
        key("icu_consumer_readings_duplicate_total"): 1,
        key("icu_consumer_readings_rejected_total", reason="not_an_object"): 1,
        key("icu_consumer_readings_rejected_total", reason="invalid_json"): 1,
    }
    assert PatientMetric.objects.count() == 1


@pytest.mark.django_db
def test_alarm_events_published_counts_what_the_alarms_topic_took():
    start = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(minutes=10)
    worker, consumer, producer = worker_create(alarms_topic="alarms")
    # SpO2 82 twice (the default delay): a high-priority spo2_low alarm, and NEWS2's.
    consumer.add([message("fay", start + timedelta(seconds=s), spo2=82) for s in (0, 5)])
    before = registry_samples("icu_consumer_alarm_events")

    worker.process_batch()

    published = [k for t, k, *_ in producer.produced if t == "alarms"]
    assert len(published) >= 2
    assert AlarmEvent.objects.filter(published_at__isnull=False).count() == len(published)
    assert changes(before, registry_samples("icu_consumer_alarm_events")) == {
        key("icu_consumer_alarm_events_published_total"): len(published)
    }


def lag(topic: str, partition: int) -> float | None:
    return REGISTRY.get_sample_value(
        "icu_consumer_lag", {"topic": topic, "partition": str(partition)}
    )


@pytest.mark.django_db
def test_the_lag_is_high_watermark_minus_position_refreshed_every_lag_interval():
    topic = f"lag-{uuid.uuid4().hex[:8]}"
    worker, consumer, _ = worker_create(lag_interval=3600)
    worker.on_assign(consumer, [TopicPartition(topic, p) for p in range(5)])
    consumer.watermarks = {
        (topic, 0): (0, 10),  # 7 consumed: 3 behind
        (topic, 1): (0, 0),  # empty: nothing to lag behind, no position needed
        (topic, 2): (2, 9),  # nothing consumed yet by this consumer: from the commit, 4
        (topic, 3): (-1001, -1001),  # not fetched yet: unknown, left out
        (topic, 4): (0, 5),  # neither a position nor a commit: unknown, left out
    }
    consumer.positions = {(topic, 0): 7}
    consumer.commits = {(topic, 2): 4}

    worker.process_batch()  # idle, but the first refresh is due at once

    assert [lag(topic, p) for p in range(5)] == [3, 0, 5, None, None]

    consumer.positions[(topic, 0)] = 10
    worker.process_batch()
    assert lag(topic, 0) == 3  # not due yet: a refresh every lag_interval, not every batch
    worker.update_lag()
    assert lag(topic, 0) == 0

    # A partition taken away is the new owner's to report.
    worker.on_revoke(consumer, [TopicPartition(topic, 0)])
    assert lag(topic, 0) is None
    assert lag(topic, 2) == 5


# --- the web -----------------------------------------------------------------------------------
# What Prometheus presents (METRICS_TOKEN); who else may read /metrics: test_access_control.py.
SCRAPE_TOKEN = "prometheus-scrape-token-for-tests"
SCRAPER = {"HTTP_AUTHORIZATION": f"Bearer {SCRAPE_TOKEN}"}


def counted(route: str, status: int, method: str = "GET") -> float:
    labels = {"method": method, "route": route, "status": str(status)}
    return REGISTRY.get_sample_value("icu_http_requests_total", labels) or 0.0


@pytest.mark.django_db
def test_the_middleware_counts_requests_by_route_and_metrics_serves_them(
    api_client, anon_client, settings
):
    settings.METRICS_TOKEN = SCRAPE_TOKEN
    patient = PatientFactory(name="gus")
    missing = uuid.uuid4()
    routes = [
        ("api:patient-list", 200),
        ("api:patient-list", 401),
        ("api:patient-detail", 200),
        ("api:patient-detail", 404),
        ("<unmatched>", 404),
    ]
    before = {r: counted(*r) for r in routes}
    scrapes_before = counted("metrics", 200)

    assert api_client.get("/api/patients/").status_code == 200
    assert api_client.get(f"/api/patients/{patient.uuid}/").status_code == 200
    assert api_client.get(f"/api/patients/{missing}/").status_code == 404
    assert anon_client.get("/api/patients/").status_code == 401
    assert anon_client.get(f"/no-such-page/{missing}").status_code == 404
    response = anon_client.get("/metrics", **SCRAPER)  # no login: a Prometheus scraper

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    lines = response.content.decode().splitlines()
    for (route, status), count in before.items():
        labels = f'{{method="GET",route="{route}",status="{status}"}}'
        assert f"icu_http_requests_total{labels} {count + 1}" in lines, (route, status)
        assert f"icu_http_request_duration_seconds_count{labels} {count + 1}" in lines
    # Never the raw path: a label value per patient would be unbounded.
    body = "\n".join(lines)
    assert str(patient.uuid) not in body
    assert str(missing) not in body
    assert "gus" not in body

    # A scrape is counted once answered: in the next one.
    lines = anon_client.get("/metrics", **SCRAPER).content.decode().splitlines()
    labels = '{method="GET",route="metrics",status="200"}'
    assert f"icu_http_requests_total{labels} {scrapes_before + 1}" in lines
    assert counted("metrics", 200) == scrapes_before + 2


def test_unknown_methods_are_one_label_value_and_metrics_takes_only_get(client):
    before = counted("<unmatched>", 404, method="other"), counted("metrics", 405, method="POST")

    assert client.generic("BREW", "/coffee").status_code == 404
    assert client.generic("PROPFIND", "/coffee").status_code == 404
    assert client.post("/metrics").status_code == 405

    assert counted("<unmatched>", 404, method="other") == before[0] + 2
    assert counted("metrics", 405, method="POST") == before[1] + 1


def test_static_files_are_one_route_label_whatever_the_file(client):
    before = counted("<static>", 404)

    for name in ("a.css", "b/c.js", f"{uuid.uuid4()}.png"):
        assert client.get(f"/static/{name}").status_code == 404

    assert counted("<static>", 404) == before + 3


def get(url: str, timeout: float = 5, **headers: str) -> str:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (http://127.0.0.1)
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return response.read().decode()


def parse(text: str) -> dict[Key, float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_several_gunicorn_workers_add_up_in_one_scrape(tmp_path: Path):
    """Two workers in multiprocess mode, with the project's gunicorn.conf.py (its child_exit
    calls core.metrics.child_exit). After a reload (SIGHUP: every worker replaced, the old ones'
    child_exit run), the scrape is answered by a worker that served none of the requests it
    counts: the counts come from the other processes' files."""
    port = free_port()
    multiproc_dir = tmp_path / "prometheus"
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "gunicorn.conf.py",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "icu.wsgi",
            ],
            cwd=BASE_DIR,
            env=subprocess_env(
                PROMETHEUS_MULTIPROC_DIR=str(multiproc_dir), METRICS_TOKEN=SCRAPE_TOKEN
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    label = frozenset({"method": "GET", "route": "<unmatched>", "status": "404"}.items())
    try:
        wait_for_log(log, "Booting worker", process, timeout=30)
        deadline = time.monotonic() + 30
        scrapes = 0
        while True:
            try:
                get(f"{base}/metrics", Authorization=f"Bearer {SCRAPE_TOKEN}")
                scrapes += 1
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        for _ in range(12):
            with pytest.raises(urllib.error.HTTPError) as exc:
                get(f"{base}/no-such-page")
            assert exc.value.code == 404
        first = parse(get(f"{base}/metrics", Authorization=f"Bearer {SCRAPE_TOKEN}"))
        scrapes += 1
        assert first[("icu_http_requests_total", label)] == 12

        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while log.read_text().count("Booting worker") < 4:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        time.sleep(1)  # the old workers finish and exit

        later = parse(get(f"{base}/metrics", Authorization=f"Bearer {SCRAPE_TOKEN}"))
        assert later[("icu_http_requests_total", label)] == 12
        assert later[("icu_http_request_duration_seconds_count", label)] == 12
        metrics_label = frozenset({"method": "GET", "route": "metrics", "status": "200"}.items())
        assert later[("icu_http_requests_total", metrics_label)] == scrapes
        # One file per process: the counts are spread over several workers' files.
        pids = {path.stem.rsplit("_", 1)[-1] for path in multiproc_dir.glob("counter_*.db")}
        assert len(pids) >= 2
    finally:
        process_stop(process)
    assert "Traceback" not in log.read_text()


# --- end to end --------------------------------------------------------------------------------
def scrape(port: int) -> dict[Key, float]:
    return parse(get(f"http://127.0.0.1:{port}/metrics"))


def value(samples: dict[Key, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def by_label(samples: dict[Key, float], name: str, label: str) -> dict[str, float]:
    found: dict[str, float] = defaultdict(float)
    for (sample, labels), v in samples.items():
        if sample == name:
            found[dict(labels)[label]] += v
    return dict(found)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_consumer_and_emulator_metrics_scraped_over_http_match_what_went_through(
    kafka: KafkaTopics, tmp_path: Path
):
    patients, count = 3, 8
    total = patients * count
    consumer_port, emulator_port = free_port(), free_port()
    consumer_log, emulator_log = tmp_path / "consumer.log", tmp_path / "emulator.log"
    kafka_env = kafka.env()
    consumer = start_manage(
        "consume_vitals",
        "--batch-timeout",
        "0.1",
        "--metrics-port",
        str(consumer_port),
        log=consumer_log,
        DATABASE_URL=database_url(),
        **kafka_env,
    )
    emulator = None
    try:
        wait_for_log(consumer_log, "serving metrics", consumer, timeout=30)
        emulator = start_manage(
            "run_patient",
            *("--name", "ivy", "--name", "jon", "--name", "kim"),
            *("--count", str(count), "--interval", "0", "--seed", "5"),
            *("--metrics-port", str(emulator_port), "--metrics-linger", "60"),
            log=emulator_log,
            **kafka_env,
        )
        # Every reading delivered (the summary is logged after the final flush); the metrics
        # stay served for --metrics-linger.
        wait_for_log(emulator_log, '"emulator stopped"', emulator, timeout=30)
        emulated = scrape(emulator_port)
        assert value(emulated, "icu_emulator_readings_produced_total") == total
        assert value(emulated, "icu_emulator_readings_delivered_total") == total
        assert by_label(emulated, "icu_emulator_delivery_failures_total", "error") == {}
        assert value(emulated, "icu_emulator_patients") == patients
        emulator.send_signal(signal.SIGTERM)  # cuts the linger short
        assert emulator.wait(timeout=20) == 0

        deadline = time.monotonic() + 30
        consumed = scrape(consumer_port)
        while value(consumed, "icu_consumer_readings_stored_total") != total:
            assert time.monotonic() < deadline, f"stored: {consumed}"
            time.sleep(0.2)
            consumed = scrape(consumer_port)
        assert value(consumed, "icu_consumer_readings_consumed_total") == total
        assert value(consumed, "icu_consumer_readings_duplicate_total") == 0
        rejected = by_label(consumed, "icu_consumer_readings_rejected_total", "reason")
        assert rejected == dict.fromkeys(REASONS, 0.0)
        assert value(consumed, "icu_consumer_dlq_messages_total") == 0
        assert value(consumed, "icu_consumer_batches_retried_total") == 0
        assert value(consumed, "icu_consumer_batch_size_sum") == total
        batches = value(consumed, "icu_consumer_batch_size_count")
        assert 1 <= batches <= total
        assert value(consumed, "icu_consumer_batch_write_seconds_count") == batches
        assert value(consumed, "icu_consumer_reading_delay_seconds_count") == total
        assert 0 <= value(consumed, "icu_consumer_reading_delay_seconds_sum") < total * 30
        assert PatientMetric.objects.count() == total

        # The lag is refreshed every few seconds, not per batch: wait for a refresh that saw
        # the topic drained. No tolerance for the Tansu broker: its ListOffsets answer is off by
        # a batch (README), but the lag uses the high watermark of fetch responses, which
        # Tansu gets right; against Apache Kafka the same holds.
        deadline = time.monotonic() + 20
        while True:
            lags = by_label(scrape(consumer_port), "icu_consumer_lag", "partition")
            if len(lags) == 3 and not any(lags.values()):
                break
            assert time.monotonic() < deadline, f"lag per partition: {lags}"
            time.sleep(0.5)
        assert lags == {"0": 0, "1": 0, "2": 0}

        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(timeout=20) == 0
    finally:
        for process in (emulator, consumer):
            if process is not None:
                process_stop(process)
    # Both servers are gone with their processes.
    for port in (consumer_port, emulator_port):
        with pytest.raises(urllib.error.URLError, match="Connection refused"):
            get(f"http://127.0.0.1:{port}/metrics", timeout=2)
