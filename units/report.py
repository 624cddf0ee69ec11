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
  time that was measured, as PERCENTILE_DISC gives), truncated to the tenth of a second.
- The nuisance share of a kind: the share of its alarms that resolved by themselves (never
  acknowledged) within NUISANCE_SECONDS of being raised.
"""

from datetime import datetime, timedelta

from django.db.models import (
    Count,
    F,
    FloatField,
    Func,
    IntegerField,
    Q,
    QuerySet,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, Greatest, Least
from django.utils import timezone

from units.models import Admission, Bed, Unit
from vitals.alarms import REFUSED_KINDS
from vitals.models import Alarm

TECHNICAL_KINDS = ("spo2_probe_off", "clock_skew", "no_data", "sign_missing", *REFUSED_KINDS)
NUISANCE_SECONDS = 30
PRIORITIES = ("high", "medium", "low")
# The acknowledge-time distribution's bins, in seconds: [lower, upper) each, the last open.
ACK_BINS = (0, 10, 30, 60, 120, 300, 600)
DEFAULT_DAYS = 7


class Seconds(Func):
    """`end - start` in seconds (a float), in the database; to the millisecond on SQLite."""

    arity = 2
    output_field = FloatField()
    # A julianday is a double of about 2.5 million days: exact to some 40 µs, so rounded to the
    # millisecond (30 s must not come out as 29.99996 s).
    sqlite_template = "ROUND((julianday({end}) - julianday({start})) * 86400.0, 3)"
    postgresql_template = "EXTRACT(EPOCH FROM ({end} - {start}))::double precision"

    def _sql(self, compiler, template: str):
        (end, end_params), (start, start_params) = (
            compiler.compile(e) for e in self.get_source_expressions()
        )
        return template.format(end=end, start=start), [*end_params, *start_params]

    def as_sqlite(self, compiler, connection, **extra):
        return self._sql(compiler, self.sqlite_template)

    def as_postgresql(self, compiler, connection, **extra):
        return self._sql(compiler, self.postgresql_template)


class Tenths(Seconds):
    """`end - start` in whole tenths of a second, truncated (an integer): 29.96 s is 299."""

    output_field = IntegerField()
    sqlite_template = (
        "CAST(ROUND((julianday({end}) - julianday({start})) * 864000.0, 2) AS INTEGER)"
    )
    postgresql_template = "TRUNC(EXTRACT(EPOCH FROM ({end} - {start})) * 10)::integer"


def _at(value: datetime) -> Value:
    return Value(value, output_field=Alarm._meta.get_field("raised_at"))


def report_window(*, since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    """The window a report covers: `until` defaults to now and is clipped to it, `since` to
    DEFAULT_DAYS before `until`."""
    now = timezone.now()
    until = min(until or now, now)
    since = since or until - timedelta(days=DEFAULT_DAYS)
    return since, until


def _raised_in(*, unit: Unit, since: datetime, until: datetime) -> QuerySet[Alarm]:
    """The alarms raised in [since, until) while their patient was in a bed of `unit`, each
    once, joined to that admission (admissions of one patient never overlap: a transfer ends
    one as the next begins). One filter() call: a second would join the admissions again. The
    admission's overlap with the window follows from the alarm's; said, it spares the database
    a look into the alarms of every stay the unit ever had."""
    return Alarm.objects.filter(
        Q(patient__admissions__discharged_at__isnull=True)
        | Q(patient__admissions__discharged_at__gt=F("raised_at")),
        Q(patient__admissions__discharged_at__isnull=True)
        | Q(patient__admissions__discharged_at__gt=since),
        patient__admissions__bed__unit=unit,
        patient__admissions__admitted_at__lte=F("raised_at"),
        patient__admissions__admitted_at__lt=until,
        raised_at__gte=since,
        raised_at__lt=until,
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


def report_by_bed_kind_and_priority(*, unit: Unit, since: datetime, until: datetime) -> list[dict]:
    """Per bed, kind and priority: the alarms raised in the window (in that bed), how many of
    them were acknowledged, how many resolved by themselves within NUISANCE_SECONDS; and the
    seconds in alarm: the sum of the open intervals of the bed's patients' alarms, each clipped
    to the window and to the patient's stay in the bed (an alarm open across a transfer counts
    for both beds, each for its part). One query for the figures by kind, by priority and by
    bed: a pass over the window's alarms each would double the report's time."""
    stay_start = F("patient__admissions__admitted_at")
    stay_end = Coalesce("patient__admissions__discharged_at", _at(until))
    raised_here = Q(raised_at__gte=Greatest(stay_start, _at(since)))
    nuisance = Q(
        acknowledged_at__isnull=True,
        resolved_at__isnull=False,
        open_seconds__lte=NUISANCE_SECONDS,
    )
    return list(
        Alarm.objects.filter(
            Q(resolved_at__isnull=True) | Q(resolved_at__gt=since),
            Q(resolved_at__isnull=True) | Q(resolved_at__gt=stay_start),
            Q(patient__admissions__discharged_at__isnull=True)
            | Q(patient__admissions__discharged_at__gt=since),
            patient__admissions__bed__unit=unit,
            patient__admissions__admitted_at__lt=until,
            raised_at__lt=Least(stay_end, _at(until)),
        )
        .alias(open_seconds=Seconds(F("resolved_at"), F("raised_at")))
        .annotate(bed=F("patient__admissions__bed_id"))
        .values("bed", "kind", "priority")
        .annotate(
            alarms=Count("id", filter=raised_here),
            acknowledged=Count("id", filter=raised_here & Q(acknowledged_at__isnull=False)),
            self_resolved=Count("id", filter=raised_here & nuisance),
            seconds_in_alarm=Sum(
                Seconds(
                    Least(Coalesce("resolved_at", _at(until)), stay_end, _at(until)),
                    Greatest("raised_at", stay_start, _at(since)),
                )
            ),
        )
        .order_by("bed", "kind", "priority")
    )


def report_acknowledge_times(
    *, unit: Unit, since: datetime, until: datetime
) -> tuple[dict[str, dict], dict[tuple[str, int], int]]:
    """Time to acknowledge, per acknowledged priority: how many, the median and the 90th
    percentile in seconds (nearest rank, truncated to the tenth of a second), and the count in
    each ACK_BINS bin (by its lower bound). One query: the acknowledged alarms counted by
    priority and time in tenths of a second; the ranks are read off the cumulative counts (the
    k-th smallest of the times truncated is the k-th smallest time truncated), the bins too
    (their bounds are whole seconds)."""
    rows = (
        _raised_in(unit=unit, since=since, until=until)
        .filter(acknowledged_at__isnull=False)
        .annotate(tenths=Tenths(F("acknowledged_at"), F("raised_at")))
        .values("acknowledged_priority", "tenths")
        .annotate(alarms=Count("id"))
        .order_by("acknowledged_priority", "tenths")
    )
    distribution: dict[str, list[tuple[int, int]]] = {}
    histogram: dict[tuple[str, int], int] = {}
    for row in rows:
        priority, tenths = row["acknowledged_priority"], row["tenths"]
        distribution.setdefault(priority, []).append((tenths, row["alarms"]))
        lower = next(lower for lower in reversed(ACK_BINS) if tenths >= lower * 10 or not lower)
        histogram[priority, lower] = histogram.get((priority, lower), 0) + row["alarms"]
    times: dict[str, dict] = {}
    for priority, counts in distribution.items():
        n = sum(count for _, count in counts)
        times[priority] = {
            "count": n,
            "median_seconds": _nearest_rank(counts, (n + 1) // 2) / 10,
            "p90_seconds": _nearest_rank(counts, (9 * n + 9) // 10) / 10,
        }
    return times, histogram


def _nearest_rank(counts: list[tuple[int, int]], rank: int) -> int:
    """The `rank`-th smallest value (from 1) of a sorted distribution of (value, count)."""
    seen = 0
    for value, count in counts:
        seen += count
        if seen >= rank:
            return value
    raise ValueError(f"rank {rank} beyond {seen} values")


def _category(kind: str) -> str:
    return "technical" if kind in TECHNICAL_KINDS else "physiological"


def _per(count: int, days: float) -> float | None:
    return round(count / days, 2) if days else None


def unit_alarm_report(*, unit: Unit, since: datetime, until: datetime) -> dict:
    """Every figure of the report over [since, until) (see the module): four queries, none
    of them growing with the number of beds or alarms."""
    beds = list(Bed.objects.filter(unit=unit).order_by("position"))
    bed_days = report_bed_days(unit=unit, since=since, until=until)
    rows = report_by_bed_kind_and_priority(unit=unit, since=since, until=until)
    acknowledge, histogram = report_acknowledge_times(unit=unit, since=since, until=until)

    days = sum(bed_days.values())
    by_kind: dict[str, dict] = {}
    by_priority: dict[tuple[str, str], int] = {}
    by_bed: dict[int, dict] = {}
    for row in rows:
        kind = by_kind.setdefault(
            row["kind"], {"kind": row["kind"], "alarms": 0, "acknowledged": 0, "self_resolved": 0}
        )
        for measure in ("alarms", "acknowledged", "self_resolved"):
            kind[measure] += row[measure]
        key = (_category(row["kind"]), row["priority"])
        by_priority[key] = by_priority.get(key, 0) + row["alarms"]
        bed = by_bed.setdefault(row["bed"], {"alarms": 0, "seconds_in_alarm": 0.0})
        bed["alarms"] += row["alarms"]
        bed["seconds_in_alarm"] += row["seconds_in_alarm"] or 0.0
    # Kinds and priorities seen only in time in alarm (raised before the window) are not listed.
    by_kind = {name: row for name, row in by_kind.items() if row["alarms"]}
    by_priority = {key: alarms for key, alarms in by_priority.items() if alarms}
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
