"""Draw each benchmark beside its references: one PNG a benchmark (docs/bench/<benchmark>.png)
from a results file, so that a person reading the README sees the figures without the table.

examples:
  python -m bench.plots bench/results/latest.json docs/bench/   # redraw from the committed run
  python -m bench.plots /tmp/me.json /tmp/me-plots/              # from a run of your own

`python -m bench` calls this at the end of every run. Each figure is a bar (green: its target
met, red: missed, blue: no target), each of its references a grey bar beneath it with the ratio
and the target in words, and each target a black mark on the figure's bar: a ratio target at
the reference times the bound, an absolute one (a latency budget) at the bound itself. A panel
holds the figures of one unit; its axis is logarithmic when the values span orders of magnitude.

The images are deterministic (same results file, same bytes): fixed width and dots per inch, a
height from the number of bars, matplotlib's default style whatever the local matplotlibrc, the
Agg renderer, and no "Software" entry (the only metadata matplotlib writes in a PNG; none holds
a time).
"""

import argparse
import json
import math
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.style
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

# Fixed geometry, in inches (the PNG is these times DPI pixels).
DPI = 100
WIDTH = 10.0
LEFT = 3.4  # the bars' labels
RIGHT = 0.25
TITLE = 0.45  # the run's line and margins above the first panel, plus TITLE_LINE a line
TITLE_LINE = 0.22
TITLE_WIDTH = 95  # characters a line of the title
LEGEND = 0.4  # below the last panel
ROW = 0.34  # one bar
PANEL = 0.75  # a panel's axis, its label and the gap to the next one

MET, MISSED, NO_TARGET, REFERENCE = "#2e8b57", "#c0392b", "#4a78a8", "#b8b8b8"
# A log axis when the largest value is this many times the smallest (both above zero).
LOG_SPAN = 30
LABEL_WIDTH = 46  # characters a line of a bar's label
SPAN = 0.62  # of an axis's width, the longest bar or mark: the rest holds the texts after them

TITLES = {
    "ingest": "Ingest: readings stored per second by consume_vitals, beside the same rows "
    "written by the ORM's bulk_create, raw SQL and a naive consumer",
    "scale_out": "Scale-out: two consume_vitals processes in one group beside one, and where "
    "the cores go",
    "emulator": "Emulator: readings produced on schedule, interval jitter and CPU",
    "freshness": "Freshness: from a reading's timestamp to the API serving it",
    "screen_latency": "Reading to screen: from a reading's production to the ward page in "
    "Chromium showing it, polled and pushed",
    "api_scale": "API at scale: response time of the ward list and a patient's last hour, "
    "beside raw SQL of the same answer",
    "memory": "Memory: the consumer's resident memory as readings pass through it",
    "alarm_report": "Alarm report: response time over 7 and 30 days, beside its budget "
    "and one figure in raw SQL",
    "hl7_gateway": "HL7 gateway: messages acknowledged per second and receipt-to-ACK latency",
    "export": "Export: the worker's memory and speed exporting a patient's readings",
}
UNITS = {
    "of produced": "fraction of the readings produced",
    "rows/s": "readings stored per second",
    "readings/s": "readings per second",
    "messages/s": "messages per second",
    "ms": "milliseconds",
    "us": "microseconds",
    "cores": "CPU cores",
    "MiB": "resident memory, MiB",
    "MB": "resident memory, MB",
    "x": "the figure divided by its reference, in the same run",
}


@dataclass
class Bar:
    label: str
    value: float
    color: str
    text: str
    # Targets drawn on this bar, where the bar must reach (or stay below).
    marks: list[float] = field(default_factory=list)


@dataclass
class Panel:
    unit: str
    bars: list[Bar] = field(default_factory=list)

    @property
    def extent(self) -> list[float]:
        """Every value the axis must hold: the bars and the target marks."""
        return [b.value for b in self.bars] + [x for b in self.bars for x in b.marks]

    @property
    def log(self) -> bool:
        values = self.extent
        return min(values) > 0 and max(values) / min(values) >= LOG_SPAN


def number(value: float) -> str:
    """As the results table prints it: 3 significant digits below 100, else whole."""
    return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"


def _target_words(target: str) -> str:
    op, bound = target.split()
    return f"{'≥' if op == '>=' else '≤'} {bound}"


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "missed", None: ""}[met]


def panels_build(*, figures: Sequence[dict]) -> list[Panel]:
    """A benchmark's figures as panels of bars: one panel a unit, in the order of the results,
    then the ratios. The rows of the results table that repeat a figure against several
    references become one bar for the figure and one for each reference; each (figure,
    reference) pair becomes a bar of the ratios' panel, with its target marked on that bar."""
    panels: dict[str, Panel] = {}
    ratios = Panel(unit="x")
    groups: dict[tuple, list[dict]] = {}
    for row in figures:
        key = (row["unit"], row["engine"], row["figure"], row["value"])
        groups.setdefault(key, []).append(row)
    for (unit, engine, name, value), rows in groups.items():
        panel = panels.setdefault(unit, Panel(unit=unit))
        verdicts = [r["met"] for r in rows if r["met"] is not None]
        color = NO_TARGET if not verdicts else MET if all(verdicts) else MISSED
        label = f"{name}, {engine}" if engine else name
        bar = Bar(label=label, value=value, color=color, text=f"{number(value)} {unit}")
        panel.bars.append(bar)
        for r in rows:
            target = _target_words(r["target"]) if r["target"] else ""
            if r["reference_value"] is None:
                if target:  # an absolute target: a budget on the value itself
                    bar.marks.append(float(r["target"].split()[1]))
                    bar.text += f"  (target {target}: {_verdict(r['met'])})"
                continue
            panel.bars.append(
                Bar(label=f"vs {r['reference']}", value=r["reference_value"],
                    color=REFERENCE, text=f"{number(r['reference_value'])} {unit}")
            )  # fmt: skip
            if r["ratio"] is None:
                continue
            text = f"{r['ratio']:.2f}x" + (f"  (target {target}: {_verdict(r['met'])})"
                                           if target else "")  # fmt: skip
            ratios.bars.append(
                Bar(label=f"{name} ÷ {r['reference']}{f', {engine}' if engine else ''}",
                    value=r["ratio"],
                    color={True: MET, False: MISSED, None: NO_TARGET}[r["met"]], text=text,
                    marks=[float(r["target"].split()[1])] if target else [])
            )  # fmt: skip
    return [*panels.values(), *([ratios] if ratios.bars else [])]


def _limits(panel: Panel) -> tuple[float, float]:
    """The axis: from zero (or the power of ten below half the smallest value on a log axis) to
    where the
    largest bar ends at SPAN of the width, leaving room for the texts after the bars."""
    values = panel.extent
    if panel.log:
        # A bar must show even when its value is just above a power of ten.
        low = 10 ** math.floor(math.log10(min(values)) - 0.3)
        return low, low * (max(values) / low) ** (1 / SPAN)
    high = max(values) or 1.0
    return 0.0, high / SPAN


def figure_draw(*, benchmark: str, figures: Sequence[dict], run: str) -> MplFigure:
    """One benchmark's plot, drawn on a figure of its own (no pyplot, no global state)."""
    panels = panels_build(figures=figures)
    title = textwrap.wrap(TITLES.get(benchmark, benchmark), TITLE_WIDTH)
    head = TITLE + TITLE_LINE * len(title)
    height = head + LEGEND + sum(PANEL + ROW * len(p.bars) for p in panels)
    fig = MplFigure(figsize=(WIDTH, height), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.text(0.1 / WIDTH * 8, 1 - 0.12 / height, "\n".join(title), va="top", fontsize=11,
             fontweight="bold")  # fmt: skip
    fig.text(0.1 / WIDTH * 8, 1 - (head - 0.15) / height, run, va="bottom", fontsize=8.5,
             color="#555555")  # fmt: skip
    top = height - head
    for panel in panels:
        rows = len(panel.bars)
        bottom = top - ROW * rows
        ax = fig.add_axes((LEFT / WIDTH, bottom / height, 1 - (LEFT + RIGHT) / WIDTH,
                           ROW * rows / height))  # fmt: skip
        if panel.log:
            ax.set_xscale("log")
        # 0.1, 1, 10, 1,000 and 20,000, not powers of ten nor 20000: read by people.
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: number(x)))
        low, high = _limits(panel)
        ax.set_xlim(low, high)
        ax.set_ylim(rows - 0.5, -0.5)
        positions = list(range(rows))
        start = low if panel.log else 0.0  # a log axis has no zero: the bars start at its left
        ax.barh(positions, [b.value - start for b in panel.bars], height=0.7, left=start,
                color=[b.color for b in panel.bars])  # fmt: skip
        ax.set_yticks(positions, ["\n".join(textwrap.wrap(b.label, LABEL_WIDTH))
                                  for b in panel.bars], fontsize=8.5)  # fmt: skip
        for y, bar in zip(positions, panel.bars, strict=True):
            # The text after the bar or its target mark, whichever ends further.
            end = max([bar.value, low, *bar.marks])
            ax.annotate(bar.text, (end, y), xytext=(5, 0), textcoords="offset points",
                        va="center", fontsize=8)  # fmt: skip
            for x in bar.marks:
                ax.plot([x, x], [y - 0.45, y + 0.45], color="black", linewidth=1.8)
        words = UNITS.get(panel.unit, panel.unit)
        ax.set_xlabel(f"{words} ({panel.unit}){', log scale' if panel.log else ''}",
                      fontsize=8.5)  # fmt: skip
        if panel.unit == "x":  # where the figure equals its reference
            ax.axvline(1, color="#777777", linewidth=0.8, linestyle=":")
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", color="#e5e5e5", linewidth=0.6)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        top = bottom - PANEL
    used = {b.color for p in panels for b in p.bars}
    legend = [
        Patch(color=color, label=words)
        for color, words in (
            (MET, "figure, target met"),
            (MISSED, "figure, target missed"),
            (NO_TARGET, "figure, no target"),
            (REFERENCE, "reference, same run"),
        )
        if color in used
    ]
    if any(b.marks for p in panels for b in p.bars):
        legend.append(Line2D([], [], color="black", linewidth=1.6, label="target"))
    fig.legend(handles=legend, loc="lower center", ncol=len(legend), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.05 / height))  # fmt: skip
    return fig


def run_line(results: dict) -> str:
    """What the run was: when, where, how long, and whether a --quick one (its figures are a
    smoke test, not a measurement)."""
    machine = results.get("machine", {})
    parts = [
        f"python -m bench{' --quick' if results.get('quick') else ''}, {results['at'][:10]}",
        f"{machine.get('cpus', '?')} CPUs",
        f"{results.get('seconds', 0):,} s in all",
        "each reference measured in the same run",
    ]
    return "; ".join(parts)


def plots_draw(*, results: dict, directory: Path) -> list[Path]:
    """One PNG a benchmark of the results, `<benchmark>.png` in `directory` (created when
    missing); the files written, in the order of the results. A benchmark not in the results
    keeps whatever plot it had."""
    directory.mkdir(parents=True, exist_ok=True)
    by_benchmark: dict[str, list[dict]] = {}
    for row in results["figures"]:
        by_benchmark.setdefault(row["benchmark"], []).append(row)
    written = []
    with matplotlib.style.context("default"):
        for benchmark, figures in by_benchmark.items():
            fig = figure_draw(benchmark=benchmark, figures=figures, run=run_line(results))
            path = directory / f"{benchmark}.png"
            fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
            written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.plots",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("results", type=Path, help="A results file of `python -m bench`.")
    parser.add_argument("directory", type=Path, help="Where to write <benchmark>.png.")
    args = parser.parse_args(argv)
    written = plots_draw(results=json.loads(args.results.read_text()), directory=args.directory)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
