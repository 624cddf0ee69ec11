from django.core.management.base import BaseCommand

from units.services import DEMO_BEDS, DEMO_UNIT_CODE, DEMO_UNIT_NAME, unit_demo_ensure


class Command(BaseCommand):
    help = (
        f'Create the demo unit "{DEMO_UNIT_CODE}" ({DEMO_UNIT_NAME}) with beds 1 to {DEMO_BEDS} '
        "if missing (make run does); AUTO_ADMIT admits the demo patients on their first reading."
    )

    def handle(self, *args: object, **options: object) -> None:
        unit = unit_demo_ensure()
        self.stdout.write(f"Unit {unit.code}: {unit.beds.count()} beds")
