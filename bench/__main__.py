"""`make bench`: every benchmark, a table of figures with their references and ratios, and
bench/results/latest.json.

examples:
  python -m bench                         # everything (what `make bench` runs)
  python -m bench ingest emulator         # some of them
  python -m bench --quick                 # every benchmark at a small scale (a smoke run)
  python -m bench ingest --engine sqlite  # one engine only
  python -m bench api_scale --engine sqlite --engine postgresql   # both
  python -m bench --quick --output /tmp/me.json   # plots in /tmp/me-plots/, docs/bench untouched

Each benchmark runs on its own default engines unless --engine is given: ingest and freshness
on both; scale_out on PostgreSQL (on SQLite one writer holds the lock: `--engine sqlite`); the
10-million-reading api_scale on PostgreSQL (the production engine; filling a second database
would take 4 more minutes); memory on SQLite (the consumer's own memory); screen_latency on
SQLite (what it measures is the page's push, not the engine).

At the end each benchmark of the run is drawn beside its references (bench/plots.py): into
docs/bench/ when the results go to bench/results/latest.json (what the README shows), else
beside the results file (<output>-plots/), unless --plots says where.
"""

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench import (
    alarm_report,
    api_scale,
    emulator,
    export_memory,
    freshness,
    hl7_gateway,
    ingest,
    memory,
    plots,
    scale_out,
    screen_latency,
)
from bench.common import BASE_DIR, ENGINES, Figure, progress, world

RESULTS = BASE_DIR / "bench" / "results"
PLOTS = BASE_DIR / "docs" / "bench"

# name -> (function, full-size arguments, --quick arguments, engines it runs on unless --engine)
BENCHMARKS = {
    "ingest": (
        ingest.run,
        {
            "patients": 1000,
            "per_patient": 120,
            "sample": 2000,
            "churn_patients": 500,
            "churn_per_patient": 120,
        },
        {
            "patients": 50,
            "per_patient": 40,
            "sample": 200,
            "churn_patients": 50,
            "churn_per_patient": 40,
        },
        ENGINES,
    ),
    "scale_out": (
        scale_out.run,
        {"patients": 500, "per_patient": 80},
        {"patients": 100, "per_patient": 20},
        # PostgreSQL, the production engine, by default: on SQLite one writer holds the lock
        # through most of a batch (Amdahl: at most some 1.14x, docs/performance.md).
        ("postgresql",),
    ),
    "emulator": (
        emulator.run,
        {"patients": 10_000, "warm_up": 5, "window": 30},
        {"patients": 200, "warm_up": 2, "window": 5},
        ENGINES,
    ),
    "freshness": (
        freshness.run,
        {"patients": 1000, "sample": 20, "warm_up": 5, "window": 20},
        {"patients": 50, "sample": 5, "warm_up": 3, "window": 5},
        ENGINES,
    ),
    "api_scale": (
        api_scale.run,
        {"readings": 10_000_000, "patients": 1000, "repeat": 200},
        {"readings": 200_000, "patients": 100, "repeat": 40},
        ("postgresql",),
    ),
    "memory": (
        memory.run,
        {"patients": 1000, "rounds": 10, "first": 100_000},
        {"patients": 50, "rounds": 4, "first": 5_000},
        ("sqlite",),
    ),
    "alarm_report": (
        alarm_report.run,
        {"alarms": 1_000_000, "repeat": 5},
        {"alarms": 20_000, "repeat": 3},
        ENGINES,
    ),
    "hl7_gateway": (
        hl7_gateway.run,
        {"connections": 200, "messages": 60_000, "processes": 2, "paced_seconds": 20},
        {"connections": 50, "messages": 2_000, "processes": 2, "paced_seconds": 3},
        ("sqlite",),
    ),
    "screen_latency": (
        screen_latency.run,
        {"beds": 64, "warm_up": 5, "window": 20},
        {"beds": 64, "warm_up": 5, "window": 10},
        ("sqlite",),
    ),
    "export": (
        export_memory.run,
        {"readings": 1_000_000},
        {"readings": 20_000},
        ("sqlite",),
    ),
}


def table(figures: list[Figure]) -> str:
    header = (
        "benchmark",
        "engine",
        "figure",
        "value",
        "reference",
        "ref value",
        "ratio",
        "target",
        "met",
    )
    rows = [header]
    for f in figures:
        rows.append(
            (
                f.benchmark,
                f.engine or "-",
                f.figure,
                f"{f.value:,.3g} {f.unit}" if f.value < 100 else f"{f.value:,.0f} {f.unit}",
                f.reference or "-",
                "-"
                if f.reference_value is None
                else (
                    f"{f.reference_value:,.3g}"
                    if f.reference_value < 100
                    else f"{f.reference_value:,.0f}"
                ),
                "-" if f.ratio is None else f"{f.ratio:.2f}x",
                f.target or "-",
                {True: "yes", False: "NO", None: "-"}[f.met],
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines = [
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def plots_directory(*, output: Path) -> Path:
    """Where a run's plots go: the README's images come from the committed results file only;
    a run written elsewhere (a developer's --output) draws beside its own file."""
    if output.resolve() == (RESULTS / "latest.json").resolve():
        return PLOTS
    return output.with_name(f"{output.stem}-plots")


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "benchmarks",
        nargs="*",
        choices=[[], *BENCHMARKS],
        metavar="BENCHMARK",
        help=f"Which to run (default all): {', '.join(BENCHMARKS)}.",
    )
    parser.add_argument(
        "--engine",
        action="append",
        choices=ENGINES,
        help="Database engine(s) to run on (default: each benchmark's own, see above).",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="Small sizes: checks the benchmarks run, measures little.",
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    parser.add_argument(
        "--plots",
        type=Path,
        help="Where to draw the plots (default: docs/bench/ for the default --output, else "
        "<output>-plots/ beside it).",
    )
    args = parser.parse_args()
    names = args.benchmarks or list(BENCHMARKS)
    engines = args.engine or sorted({e for n in names for e in BENCHMARKS[n][3]})
    started = time.monotonic()
    figures: list[Figure] = []
    took: dict[str, int] = {}  # each benchmark's seconds: what the 15-minute budget goes on
    failed: dict[str, str] = {}  # benchmark -> the error that stopped it
    with (
        tempfile.TemporaryDirectory(prefix="icu-bench-") as tmp,
        world(Path(tmp), postgresql="postgresql" in engines) as w,
    ):
        for name in names:
            function, full, quick, default_engines = BENCHMARKS[name]
            progress(f"== {name}")
            run_on = args.engine or list(default_engines)
            began = time.monotonic()
            try:
                figures += function(w, engines=run_on, **(quick if args.quick else full))
            except Exception as error:  # one broken benchmark does not lose the others' figures
                traceback.print_exc()
                failed[name] = f"{type(error).__name__}: {error}"[:500]
            took[name] = round(time.monotonic() - began)
            progress(f"== {name}: {took[name]} s" + (" FAILED" if name in failed else ""))
    print(table(figures))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "at": datetime.now(tz=UTC).isoformat(timespec="seconds"),
                "quick": args.quick,
                "machine": {
                    "cpus": __import__("os").cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
                "seconds": round(time.monotonic() - started),
                "benchmark_seconds": took,
                "failed": failed,
                "figures": [f.to_json() for f in figures],
            },
            indent=2,
        )
        + "\n"
    )
    directory = args.plots or plots_directory(output=args.output)
    drawn = plots.plots_draw(results=json.loads(args.output.read_text()), directory=directory)
    progress(
        f"wrote {args.output} and {len(drawn)} plots in {directory} "
        f"({time.monotonic() - started:.0f} s in all)"
    )
    for name, error in failed.items():
        progress(f"{name} FAILED: {error}")
    return 0 if not failed and all(f.met is not False for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
