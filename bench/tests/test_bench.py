"""The benchmarks' own arithmetic, and one benchmark run end to end at a small size, so that
`make bench` does not rot between the times someone runs it."""

import json
import subprocess
import sys

import pytest

from bench.__main__ import table
from bench.common import BASE_DIR, CLOCK_TICKS, Figure, percentile
from bench.ingest import readings_stored
from bench.scale_out import _bounds, tree_cpu_seconds


def test_percentile_is_a_measured_value_by_nearest_rank():
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert [percentile(values, q) for q in (1, 20, 50, 80, 99, 100)] == [
        1.0,
        1.0,
        3.0,
        4.0,
        5.0,
        5.0,
    ]
    assert percentile(list(range(1, 1001)), 99) == 990
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_a_target_is_judged_on_the_ratio_when_there_is_a_reference_else_on_the_value():
    consumer = Figure("ingest", "consume_vitals", 15_000, "rows/s", reference="bulk_create",
                      reference_value=20_000, target=">= 0.75")  # fmt: skip
    assert (consumer.ratio, consumer.met) == (0.75, True)
    consumer.value = 14_999
    assert consumer.met is False
    latency = Figure("freshness", "p99", 1001, "ms", target="<= 1000")
    assert (latency.ratio, latency.met) == (None, False)
    assert Figure("emulator", "p50", 3, "ms").met is None


def test_the_table_shows_value_reference_ratio_target_and_verdict():
    rows = table([
        Figure("api_scale", "ward p99", 12.5, "ms", reference="raw SQL p99", reference_value=2.5,
               target="<= 3", engine="sqlite"),
        Figure("emulator", "CPU used", 0.84, "cores", target="<= 1.0"),
    ]).splitlines()  # fmt: skip
    assert [c.strip() for c in rows[0].split("|")[1:-1]] == [
        "benchmark", "engine", "figure", "value", "reference", "ref value", "ratio", "target", "met"
    ]  # fmt: skip
    assert [c.strip() for c in rows[2].split("|")[1:-1]] == [
        "api_scale", "sqlite", "ward p99", "12.5 ms", "raw SQL p99", "2.5", "5.00x", "<= 3", "NO"
    ]  # fmt: skip
    assert [c.strip() for c in rows[3].split("|")[1:-1]] == [
        "emulator", "-", "CPU used", "0.84 cores", "-", "-", "-", "<= 1.0", "yes"
    ]  # fmt: skip


def test_a_process_trees_cpu_counts_it_and_its_descendants_once_and_nothing_else():
    # pid -> (parent, ticks of its own and of its reaped children): 2 and its child 3 (and
    # 3's child 6) are one tree; 4 is 2's sibling; 5 is someone else's.
    table = {1: (0, 100), 2: (1, 50), 3: (2, 25), 4: (1, 10), 5: (99, 1000), 6: (3, 5)}
    assert tree_cpu_seconds(2, table) == 80 / CLOCK_TICKS
    assert tree_cpu_seconds(1, table) == 190 / CLOCK_TICKS
    assert tree_cpu_seconds(7, table) == 0  # gone


def test_scale_out_bounds_are_amdahls_over_sqlites_one_writer_and_the_cores(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    one = Figure("scale_out", "one", 5000, "rows/s", details={
        "seconds": 8.0, "batch_write_seconds": [6.0],
        "cpu_us_per_reading": {"consumers": 150.0, "pipeline": 160.0}})  # fmt: skip
    two = Figure("scale_out", "two", 5500, "rows/s", details={
        "cpu_us_per_reading": {"consumers": 160.0, "pipeline": 240.0}})  # fmt: skip
    # 3/4 of the work serial: 1 / (3/4 + 1/8); 2 cores for 240 us a reading against one
    # core for 150.
    assert _bounds(one=one, two=two, engine="sqlite") == {
        "one_consumer_share_in_transactions": 0.75,
        "cores_bound_x": 1.25,
        "one_writer_bound_x": 1.14,
    }
    assert _bounds(one=one, two=two, engine="postgresql") == {
        "one_consumer_share_in_transactions": 0.75,
        "cores_bound_x": 1.25,
    }


@pytest.mark.e2e
def test_the_memory_benchmark_runs_end_to_end_and_writes_its_figures(tmp_path):
    """`python -m bench memory --quick`: the real broker, consume_vitals and a database of its
    own; 20,000 readings; the JSON holds the figure with its reference and verdict."""
    output = tmp_path / "latest.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "memory", "--quick", "--engine", "sqlite",
         "--output", str(output)],
        cwd=BASE_DIR, capture_output=True, text=True, timeout=170, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(output.read_text())
    assert results["quick"] is True
    assert list(results["benchmark_seconds"]) == ["memory"]  # what the run's time went on
    assert 0 < results["benchmark_seconds"]["memory"] <= results["seconds"]
    assert f"== memory: {results['benchmark_seconds']['memory']} s" in result.stderr
    figure, second_half = results["figures"]
    assert second_half["reference"] == "RSS after 10,000"
    assert second_half["value"] == figure["value"]
    assert figure["benchmark"] == "memory"
    assert figure["figure"] == "consumer RSS after 20,000"
    assert figure["reference"] == "RSS after 5,000"
    assert 20 < figure["reference_value"] < 2000
    assert figure["ratio"] == pytest.approx(figure["value"] / figure["reference_value"])
    assert figure["met"] is (figure["ratio"] <= 1.1)
    assert figure["details"]["readings"] == 20_000
    assert "consumer RSS after 20,000" in result.stdout
    # Drawn beside the results file (not into docs/bench/, which the committed run's are).
    assert [p.name for p in (tmp_path / "latest-plots").iterdir()] == ["memory.png"]


def test_a_failing_benchmark_is_named_and_the_others_figures_are_kept(tmp_path, monkeypatch):
    """One benchmark raising (as export did for weeks: its generator missed a column) does not
    lose the run: the others' figures are written, the failure is named, the exit status is 1."""
    import contextlib

    import bench.__main__ as runner

    def good(world, *, engines, size):
        return [Figure("good", f"{size} things", float(size), "things/s", target=">= 1",
                       reference="none", reference_value=1.0)]  # fmt: skip

    def broken(world, *, engines, size):
        raise RuntimeError("NOT NULL constraint failed: vitals_patientmetric.news2_missing")

    monkeypatch.setattr(runner, "world", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(runner, "BENCHMARKS", {
        "broken": (broken, {"size": 5}, {"size": 1}, ("sqlite",)),
        "good": (good, {"size": 5}, {"size": 1}, ("sqlite",)),
    })  # fmt: skip
    output = tmp_path / "r.json"
    monkeypatch.setattr(sys, "argv", ["bench", "--quick", "--output", str(output)])

    assert runner.main() == 1

    results = json.loads(output.read_text())
    assert [f["figure"] for f in results["figures"]] == ["1 things"]
    assert results["failed"] == {
        "broken": "RuntimeError: NOT NULL constraint failed: vitals_patientmetric.news2_missing"
    }
    assert set(results["benchmark_seconds"]) == {"broken", "good"}
    assert [p.name for p in (tmp_path / "r-plots").iterdir()] == ["good.png"]


@pytest.mark.e2e
def test_the_export_benchmark_runs_end_to_end(tmp_path):
    """`python -m bench export --quick`: its generator writes the readings table as the
    migrations define it today (it broke silently when a NOT NULL column was added)."""
    output = tmp_path / "latest.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "export", "--quick", "--output", str(output)],
        cwd=BASE_DIR, capture_output=True, text=True, timeout=170, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(output.read_text())["figures"]
    assert [f["figure"] for f in figures] == [
        "csv export of 20,000: worker RSS peak",
        "csv export of 20,000: speed",
        "fhir export of 20,000: worker RSS peak",
        "fhir export of 20,000: speed",
    ]
    rss = [f for f in figures if f["figure"].endswith("RSS peak")]
    assert [f["reference"] for f in rss] == ["RSS at its start", "RSS at its start"]
    assert [f["met"] for f in rss] == [f["ratio"] <= 1.1 for f in rss]


@pytest.mark.django_db
def test_the_ingest_poller_reads_the_highest_id_until_the_table_may_be_full_then_counts():
    from vitals.tests.factories import PatientMetricFactory

    metrics = PatientMetricFactory.create_batch(3)
    top = max(m.pk for m in metrics)
    # Below `total`: the highest id, an upper bound of the rows (ids start where the
    # database's sequence is, 1 in the benchmark's new table).
    assert readings_stored(top + 1) == top
    # At `total` or above: the exact count, which ends the wait only when it is exact.
    assert readings_stored(top) == readings_stored(3) == 3


@pytest.mark.django_db(transaction=True)  # its requests end as a server's: connections closed
def test_the_api_benchmarks_client_answers_as_the_test_client_and_leaves_nothing_behind(viewer):
    """bench/api_scale.py's Wsgi calls the WSGI application as gunicorn does: the same answer
    as Django's test client, and no weakref.finalize left behind a request (the test client
    leaves some behind every request, which the API's p99 paid in full collections)."""
    import weakref

    from bench.api_scale import Wsgi
    from patients.tests.factories import PatientFactory
    from testing.clients import token_client

    PatientFactory.create_batch(2)
    client = token_client(viewer)
    wsgi = Wsgi(token=client._credentials["HTTP_AUTHORIZATION"].split()[1])
    expected = client.get("/api/patients/", {"ordering": "-news2"}, HTTP_HOST="localhost")
    status, body = wsgi.get("/api/patients/", {"ordering": "-news2"})
    assert (status, body) == (200, expected.content)
    assert len(json.loads(body)["results"]) == 2
    assert wsgi.get("/api/patients/not-a-uuid/")[0] == 400
    left = len(weakref.finalize._registry)
    for _ in range(5):
        wsgi.get("/api/patients/")
    assert len(weakref.finalize._registry) == left
    for _ in range(5):
        client.get("/api/patients/")
    assert len(weakref.finalize._registry) > left  # the test client's, for contrast
