from django.core.management.base import CommandError, CommandParser

from core.cli import ExamplesCommand
from vitals.tile_services import patient_tiles_rebuild


class Command(ExamplesCommand):
    help = """Write every patient's entry of the ward list's snapshot (patients.models.PatientTile).

The consumer and every change that alters a patient's entry keep the snapshot up to date; a
patient without an entry of the current layout and time zone is built by the list itself
(slower, the same answer). Run this once after an upgrade that changes the entry's layout
(TILE_VERSION) or after changing TIME_ZONE, so that the ward is served from the snapshot
again at once. Safe while the consumer runs: each batch of patients is its own transaction.

examples:
  python manage.py rebuild_patient_tiles
  python manage.py rebuild_patient_tiles --batch-size 2000
"""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--batch-size",
            type=int,
            default=500,
            help="Patients per transaction (default 500, 1 to 6000).",
        )

    def handle(self, *args: object, **options: object) -> None:
        batch_size = options["batch_size"]
        if not 1 <= batch_size <= 6000:
            raise CommandError("--batch-size must be between 1 and 6000.")
        done = patient_tiles_rebuild(batch_size=batch_size)
        self.stdout.write(f"{done} patient tile(s) written.")
