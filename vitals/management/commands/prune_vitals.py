import logging
import time
from datetime import timedelta

from django.core.management.base import CommandError, CommandParser
from django.utils import timezone

from core.cli import ExamplesCommand
from core.durations import duration_parse
from core.process import stop_on_signals
from vitals.models import PatientMetric
from vitals.services import alarm_events_prune, reading_prune_batch

logger = logging.getLogger("vitals.prune")

# SQLite takes up to 32766 parameters in one statement (3.32+); a batch is one of them per id.
MAX_BATCH = 30_000


def age_parse(text: str) -> timedelta:
    """`30d`, `12h`, `90m`, `3600s`, `2w` -> a timedelta of at least a minute."""
    age = duration_parse(text, kind="an age")
    if age < timedelta(minutes=1):
        raise ValueError(f"{text!r} is less than a minute: that would delete live readings")
    return age


class Command(ExamplesCommand):
    help = """Delete vital-sign readings older than a retention period, in batches.

Each batch is its own short transaction, so the consumer and the API keep working while it
runs; it can be stopped (Ctrl-C, SIGTERM) and started again at any time. Readings are health
records: check your retention duty before choosing the age. Alarm outbox events already
published to the alarms topic and older than the same age go too; alarms themselves are kept.
Run it daily, e.g. from cron or a Kubernetes CronJob.

examples:
  python manage.py prune_vitals --older-than 30d
  python manage.py prune_vitals --older-than 12h --batch-size 20000
  python manage.py prune_vitals --older-than 90d --dry-run      # count only
"""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            required=True,
            metavar="AGE",
            help="Delete readings measured longer ago than AGE: a number and a unit, "
            "s, m, h, d or w (30d, 12h, 2w).",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=5000,
            help=f"Readings per batch and transaction (default 5000, at most {MAX_BATCH}).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be deleted; delete nothing."
        )

    def handle(self, *args: object, **options: object) -> None:
        try:
            age = age_parse(options["older_than"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        batch_size = options["batch_size"]
        if not 1 <= batch_size <= MAX_BATCH:
            raise CommandError(f"--batch-size must be between 1 and {MAX_BATCH}.")
        cutoff = timezone.now() - age

        if options["dry_run"]:
            count = PatientMetric.objects.filter(measured_at__lt=cutoff).count()
            self.stdout.write(f"{count} reading(s) measured before {cutoff.isoformat()} (dry run).")
            return

        total, started = 0, time.monotonic()
        with stop_on_signals() as stop:
            while not stop.is_set():
                deleted = reading_prune_batch(older_than=cutoff, batch_size=batch_size)
                if not deleted:
                    break
                total += deleted
                rate = total / max(time.monotonic() - started, 1e-9)
                self.stdout.write(f"deleted {total} reading(s) so far ({rate:,.0f}/s)")
        events = alarm_events_prune(older_than=cutoff) if not stop.is_set() else 0
        logger.info(
            "readings pruned",
            extra={
                "deleted": total,
                "alarm_events_deleted": events,
                "older_than": cutoff.isoformat(),
                "interrupted": stop.is_set(),
                "seconds": round(time.monotonic() - started, 2),
            },
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"Deleted {total} reading(s) and {events} published alarm event(s) measured "
                f"before {cutoff.isoformat()}"
                + (" (interrupted: run again to finish)." if stop.is_set() else ".")
            )
        )
