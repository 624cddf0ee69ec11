"""The alarm-burden report of a unit: how much alarm noise its beds live with over a window.

Pure selectors, computed in the database: one grouped query per figure, the same SQL shape on
SQLite and PostgreSQL (no percentile_cont: the percentiles are nearest-rank, picked by window
functions), so both engines give the same numbers.

- An alarm belongs to the bed whose admission covered its `raised_at` (the admission of its
  patient with admitted_at <= raised_at < discharged_at, open admissions unbounded): an alarm of
  a patient who was in no bed of the unit then is not the unit's.
- The window is [since, until); `until` is clipped to now (the future has no bed-days). The
  counts take the alarms raised in the window; the time in alarm takes every alarm open during
  it, each clipped to the window (an open alarm runs to the end of the window).
- Bed-days: the sum over the unit's admissions of their overlap with the window, in days.
- Technical alarms (TECHNICAL_KINDS) are counted apart from the physiological ones.
- Time to acknowledge: acknowledged_at - raised_at, by the priority that was acknowledged; the
  median and the 90th percentile by the nearest-rank method (the value at rank ceil(p * n): a
  time that was measured, as PERCENTILE_DISC gives).
- The nuisance share of a kind: the share of its alarms that resolved by themselves (never
  acknowledged) within NUISANCE_SECONDS of being raised.
"""

from datetime import datetime, timedelta
from itertools import pairwise

from django.db.models import (
    Case,
    Count,
    F,
    FloatField,
    Func,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
    Window,
)
from django.db.models.functions import Coalesce, Greatest, Least, RowNumber
from django.utils import timezone

from units.models import Admission, Bed, Unit
from vitals.models import Alarm

TECHNICAL_KINDS = ("spo2_probe_off", "clock_skew", "no_data", "sign_missing")
NUISANCE_SECONDS = 30
PRIORITIES = ("high", "medium", "low")
# The acknowledge-time distribution's bins, in seconds: [lower, upper) each, the last open.
ACK_BINS = (0, 10, 30, 60, 120, 300, 600)
DEFAULT_DAYS = 7


class Seconds(Func):
    """`end - start` in seconds (a float), in the database; to the millisecond on SQLite."""

    arity = 2
    output_field = FloatField()

    def as_sqlite(self, compiler, connection, **extra):
        (end, end_params), (start, start_params) = (
            compiler.compile(e) for e in self.get_source_expressions()
        )
        # A julianday is a double of about 2.5 million days: exact to some 40 µs, so rounded
        # to the millisecond (30 s must not come out as 29.99996 s).
        return f"ROUND((julianday({end}) - julianday({start})) * 86400.0, 3)", [
            *end_params,
            *start_params,
        ]

    def as_postgresql(self, compiler, connection, **extra):
        (end, end_params), (start, start_params) = (
            compiler.compile(e) for e in self.get_source_expressions()
        )
        return f"EXTRACT(EPOCH FROM ({end} - {start}))::double precision", [
            *end_params,
            *start_params,
        ]


def _at(value: datetime) -> Value:
    return Value(value, output_field=Alarm._meta.get_field("raised_at"))


def report_window(*, since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    """The window a report covers: `until` defaults to now and is clipped to it, `since` to
    DEFAULT_DAYS before `until`."""
    now = timezone.now()
    until = min(until or now, now)
    since = since or until - timedelta(days=DEFAULT_DAYS)
    return since, until


def _unit_alarms(*, unit: Unit, stays: Q | None = None) -> QuerySet[Alarm]:
    """The alarms raised while their patient was in a bed of `unit`, each once, joined to that
    admission (admissions of one patient never overlap: a transfer ends one as the next
    begins); `stays`, more conditions on that admission. One filter() call: a second would
    join the admissions again."""
    return Alarm.objects.filter(
        Q(patient__admissions__discharged_at__isnull=True)
        | Q(patient__admissions__discharged_at__gt=F("raised_at")),
        stays or Q(),
        patient__admissions__bed__unit=unit,
        patient__admissions__admitted_at__lte=F("raised_at"),
    )


def _raised_in(*, unit: Unit, since: datetime, until: datetime) -> QuerySet[Alarm]:
    # The admission's overlap with the window follows from the alarm's; said, it spares the
    # database a look into the alarms of every stay the unit ever had.
    overlapping = Q(patient__admissions__admitted_at__lt=until) & (
        Q(patient__admissions__discharged_at__isnull=True)
        | Q(patient__admissions__discharged_at__gt=since)
    )
    return _unit_alarms(unit=unit, stays=overlapping).filter(
        raised_at__gte=since, raised_at__lt=until
    )


def report_bed_days(*, unit: Unit, since: datetime, until: datetime) -> dict[int, float]:
    """Days each bed of the unit was occupied during the window, by bed id (one query)."""
    rows = (
        Admission.objects.filter(bed__unit=unit, admitted_at__lt=until)
        .filter(Q(discharged_at__isnull=True) | Q(discharged_at__gt=since))
        .values("bed_id")
        .annotate(
            seconds=Sum(
                Seconds(
                    Least(Coalesce("discharged_at", _at(until)), _at(until)),
                    Greatest("admitted_at", _at(since)),
                )
            )
        )
    )
    return {row["bed_id"]: row["seconds"] / 86400 for row in rows}


def report_by_kind_and_priority(*, unit: Unit, since: datetime, until: datetime) -> list[dict]:
    """Per kind and priority: alarms raised, how many were acknowledged, how many resolved by
    themselves within NUISANCE_SECONDS. One query for both figures, by kind and by priority (a
    pass over the window's alarms each would double the report's time)."""
    nuisance = Q(
        acknowledged_at__isnull=True,
        resolved_at__isnull=False,
        open_seconds__lte=NUISANCE_SECONDS,
    )
    return list(
        _raised_in(unit=unit, since=since, until=until)
        .alias(open_seconds=Seconds(F("resolved_at"), F("raised_at")))
        .values("kind", "priority")
        .annotate(
            alarms=Count("id"),
            acknowledged=Count("id", filter=Q(acknowledged_at__isnull=False)),
            self_resolved=Count("id", filter=nuisance),
        )
        .order_by("kind", "priority")
    )


def report_by_bed(*, unit: Unit, since: datetime, until: datetime) -> dict[int, dict]:
    """Per bed id: alarms raised in the window, and seconds in alarm (the sum of the open
    intervals of its alarms, each clipped to the window) (one query)."""
    rows = (
        _unit_alarms(unit=unit)
        .filter(raised_at__lt=until)
        .filter(Q(resolved_at__isnull=True) | Q(resolved_at__gt=since))
        .annotate(stay_bed=F("patient__admissions__bed_id"))
        .values("stay_bed")
        .annotate(
            alarms=Count("id", filter=Q(raised_at__gte=since)),
            seconds_in_alarm=Sum(
                Seconds(
                    Least(Coalesce("resolved_at", _at(until)), _at(until)),
                    Greatest("raised_at", _at(since)),
                )
            ),
        )
    )
    return {
        row["stay_bed"]: {"alarms": row["alarms"], "seconds_in_alarm": row["seconds_in_alarm"]}
        for row in rows
    }


def _acknowledged(*, unit: Unit, since: datetime, until: datetime) -> QuerySet[Alarm]:
    return (
        _raised_in(unit=unit, since=since, until=until)
        .filter(acknowledged_at__isnull=False)
        .annotate(ack_seconds=Seconds(F("acknowledged_at"), F("raised_at")))
    )


def report_acknowledge_times(*, unit: Unit, since: datetime, until: datetime) -> dict[str, dict]:
    """Per acknowledged priority: how many, median and 90th percentile of the time to
    acknowledge in seconds, nearest rank (one query: each alarm ranked within its priority,
    only the two ranks wanted returned)."""
    ranked = _acknowledged(unit=unit, since=since, until=until).annotate(
        rank=Window(
            RowNumber(),
            partition_by=[F("acknowledged_priority")],
            order_by=[F("ack_seconds").asc(), F("id").asc()],
        ),
        n=Window(Count("id"), partition_by=[F("acknowledged_priority")]),
    )
    # ceil(n / 2) and ceil(9n / 10) in integer arithmetic, alike on both engines.
    ranked = ranked.annotate(
        rank_50=(F("n") + 1) / 2,
        rank_90=(F("n") * 9 + 9) / 10,
    ).filter(Q(rank=F("rank_50")) | Q(rank=F("rank_90")))
    out: dict[str, dict] = {}
    for row in ranked.values(
        "acknowledged_priority", "rank", "n", "rank_50", "rank_90", "ack_seconds"
    ):
        figure = out.setdefault(row["acknowledged_priority"], {"count": row["n"]})
        if row["rank"] == row["rank_50"]:
            figure["median_seconds"] = row["ack_seconds"]
        if row["rank"] == row["rank_90"]:
            figure["p90_seconds"] = row["ack_seconds"]
    return out


def report_acknowledge_histogram(
    *, unit: Unit, since: datetime, until: datetime
) -> dict[tuple[str, int], int]:
    """Acknowledged alarms by priority and ACK_BINS bin (its lower bound), (one query)."""
    bins = Case(
        *(When(ack_seconds__lt=upper, then=Value(lower)) for lower, upper in pairwise(ACK_BINS)),
        default=Value(ACK_BINS[-1]),
    )
    rows = (
        _acknowledged(unit=unit, since=since, until=until)
        .annotate(bin=bins)
        .values("acknowledged_priority", "bin")
        .annotate(alarms=Count("id"))
    )
    return {(row["acknowledged_priority"], row["bin"]): row["alarms"] for row in rows}


def _category(kind: str) -> str:
    return "technical" if kind in TECHNICAL_KINDS else "physiological"


def _per(count: int, days: float) -> float | None:
    return round(count / days, 2) if days else None


def unit_alarm_report(*, unit: Unit, since: datetime, until: datetime) -> dict:
    """Every figure of the report over [since, until) (see the module): six queries, none
    of them growing with the number of beds or alarms."""
    beds = list(Bed.objects.filter(unit=unit).order_by("position"))
    bed_days = report_bed_days(unit=unit, since=since, until=until)
    by_bed = report_by_bed(unit=unit, since=since, until=until)
    by_kind_and_priority = report_by_kind_and_priority(unit=unit, since=since, until=until)
    acknowledge = report_acknowledge_times(unit=unit, since=since, until=until)
    histogram = report_acknowledge_histogram(unit=unit, since=since, until=until)

    days = sum(bed_days.values())
    by_kind: dict[str, dict] = {}
    by_priority: dict[tuple[str, str], int] = {}
    for row in by_kind_and_priority:
        kind = by_kind.setdefault(
            row["kind"], {"kind": row["kind"], "alarms": 0, "acknowledged": 0, "self_resolved": 0}
        )
        for measure in ("alarms", "acknowledged", "self_resolved"):
            kind[measure] += row[measure]
        key = (_category(row["kind"]), row["priority"])
        by_priority[key] = by_priority.get(key, 0) + row["alarms"]
    total = sum(row["alarms"] for row in by_kind.values())
    technical = sum(row["alarms"] for row in by_kind.values() if row["kind"] in TECHNICAL_KINDS)
    bed_rows = []
    for bed in beds:
        figures = by_bed.get(bed.pk, {"alarms": 0, "seconds_in_alarm": 0.0})
        occupied = bed_days.get(bed.pk, 0.0)
        bed_rows.append(
            {
                "id": bed.pk,
                "label": bed.label,
                "position": bed.position,
                "bed_days": round(occupied, 3),
                "alarms": figures["alarms"],
                "alarms_per_bed_day": _per(figures["alarms"], occupied),
                "seconds_in_alarm": round(figures["seconds_in_alarm"] or 0.0, 1),
            }
        )
    bed_rows.sort(key=lambda row: (-row["alarms"], -row["seconds_in_alarm"], row["position"]))
    return {
        "unit": {"code": unit.code, "name": unit.name},
        "since": since,
        "until": until,
        "bed_days": round(days, 3),
        "alarms": {
            "total": total,
            "technical": technical,
            "physiological": total - technical,
            "per_bed_day": _per(total, days),
        },
        "by_kind": [
            {
                "kind": row["kind"],
                "category": _category(row["kind"]),
                "alarms": row["alarms"],
                "per_bed_day": _per(row["alarms"], days),
                "acknowledged": row["acknowledged"],
                "self_resolved": row["self_resolved"],
                "nuisance_share": round(row["self_resolved"] / row["alarms"], 3),
            }
            for row in sorted(by_kind.values(), key=lambda r: (-r["alarms"], r["kind"]))
        ],
        "by_priority": [
            {
                "category": category,
                "priority": priority,
                "alarms": alarms,
                "per_bed_day": _per(alarms, days),
            }
            for (category, priority), alarms in sorted(
                by_priority.items(),
                key=lambda item: (item[0][0] != "physiological", PRIORITIES.index(item[0][1])),
            )
        ],
        "acknowledge": [
            {
                "priority": priority,
                "count": acknowledge[priority]["count"],
                "median_seconds": round(acknowledge[priority]["median_seconds"], 1),
                "p90_seconds": round(acknowledge[priority]["p90_seconds"], 1),
            }
            for priority in PRIORITIES
            if priority in acknowledge
        ],
        "acknowledge_histogram": {
            "bins": list(ACK_BINS),
            "counts": {
                priority: [histogram.get((priority, lower), 0) for lower in ACK_BINS]
                for priority in PRIORITIES
            },
        },
        "beds": bed_rows,
    }
