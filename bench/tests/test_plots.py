"""bench/plots.py: a results file drawn as one PNG a benchmark, deterministic. The files are
checked by name, pixel size and PNG chunks, not by their pixels; what is drawn is checked on
the bars it is drawn from."""

import json
import struct
import zlib
from pathlib import Path

from bench import plots
from bench.__main__ import PLOTS, RESULTS, plots_directory
from bench.common import Figure


def _results() -> dict:
    """A small run: a figure against two references (a ratio target missed, none), latencies
    with a budget (met) and without, a value of zero."""
    figures = [
        Figure("ingest", "consume_vitals", 9_000, "rows/s", reference="Django bulk_create",
               reference_value=12_000, target=">= 1.0", engine="sqlite"),
        Figure("ingest", "consume_vitals", 9_000, "rows/s", reference="raw sqlite3 executemany",
               reference_value=36_000, engine="sqlite"),
        Figure("freshness", "reading to screen p99", 640, "ms", target="<= 1000",
               engine="postgresql"),
        Figure("freshness", "reading to screen p50", 0.0, "ms", engine="postgresql"),
    ]  # fmt: skip
    return {
        "at": "2026-12-03T14:00:00+00:00",
        "quick": True,
        "machine": {"cpus": 2, "python": "3.11.7", "platform": "Linux"},
        "seconds": 61,
        "figures": [f.to_json() for f in figures],
    }


def _png(path: Path) -> tuple[int, int, list[str]]:
    """A PNG's width and height (its IHDR chunk) and the types of its chunks, in order."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        assert struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])[0] == (
            zlib.crc32(kind + body)
        )
        chunks.append(kind.decode())
        offset += 12 + length
    width, height = struct.unpack(">II", data[16:24])
    return width, height, chunks


def test_a_figure_and_its_references_become_bars_with_the_ratios_and_targets_marked():
    value_panel, ratio_panel = plots.panels_build(
        figures=[row for row in _results()["figures"] if row["benchmark"] == "ingest"]
    )
    assert value_panel.unit == "rows/s"
    assert value_panel.log is False  # 9,000 to 36,000: one order of magnitude
    assert [(b.label, b.value, b.color, b.text, b.marks) for b in value_panel.bars] == [
        ("consume_vitals, sqlite", 9_000, plots.MISSED, "9,000 rows/s", []),
        ("vs Django bulk_create", 12_000, plots.REFERENCE, "12,000 rows/s", []),
        ("vs raw sqlite3 executemany", 36_000, plots.REFERENCE, "36,000 rows/s", []),
    ]
    assert ratio_panel.unit == "x"
    assert [(b.label, b.value, b.color, b.text, b.marks) for b in ratio_panel.bars] == [
        ("consume_vitals ÷ Django bulk_create, sqlite", 0.75, plots.MISSED,
         "0.75x  (target ≥ 1.0: missed)", [1.0]),
        ("consume_vitals ÷ raw sqlite3 executemany, sqlite", 0.25, plots.NO_TARGET, "0.25x",
         []),
    ]  # fmt: skip
    (latencies,) = plots.panels_build(
        figures=[row for row in _results()["figures"] if row["benchmark"] == "freshness"]
    )
    assert [(b.label, b.color, b.text, b.marks) for b in latencies.bars] == [
        ("reading to screen p99, postgresql", plots.MET, "640 ms  (target ≤ 1000: met)", [1000]),
        ("reading to screen p50, postgresql", plots.NO_TARGET, "0 ms", []),
    ]  # fmt: skip
    assert latencies.log is False  # a zero has no place on a log axis
    assert plots.panels_build(
        figures=[{**row, "value": 4.0} for row in _results()["figures"][2:3]]
    )[0].log  # 4 ms under a 1,000 ms budget: a log axis


def test_each_benchmark_is_drawn_into_its_own_png_of_a_fixed_size_the_same_bytes_each_time(
    tmp_path, capsys
):
    results = tmp_path / "results.json"
    results.write_text(json.dumps(_results()))
    assert plots.main([str(results), str(tmp_path / "plots")]) == 0
    assert capsys.readouterr().out.splitlines() == [
        str(tmp_path / "plots" / "ingest.png"),
        str(tmp_path / "plots" / "freshness.png"),
    ]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "freshness.png",
        "ingest.png",
    ]
    # 10 inches at 100 dpi wide; high by their bars: the title, the run's line, a panel a unit
    # (and the ratios'), 0.34 inch a bar, the legend.
    ingest_png = tmp_path / "plots" / "ingest.png"
    width, height, chunks = _png(ingest_png)
    assert (width, height) == (1000, 449)
    assert _png(tmp_path / "plots" / "freshness.png")[:2] == (1000, 250)
    # No metadata (matplotlib's "Software" entry is dropped; nothing holds a time): the same
    # results give the same bytes, so a redraw changes no committed image that did not change.
    assert not {"tEXt", "iTXt", "zTXt", "tIME"} & set(chunks)
    again = plots.plots_draw(results=_results(), directory=tmp_path / "again")
    assert [p.read_bytes() for p in again] == [
        ingest_png.read_bytes(),
        (tmp_path / "plots" / "freshness.png").read_bytes(),
    ]
    assert ingest_png.stat().st_size > 20_000  # drawn, not blank


def test_the_readme_plots_come_from_the_committed_results_only(tmp_path):
    assert plots_directory(output=RESULTS / "latest.json") == PLOTS
    assert plots_directory(output=tmp_path / "me.json") == tmp_path / "me-plots"
