import pytest

from units.models import Bed, Unit


@pytest.fixture
def unit() -> Unit:
    """Unit "icu-a" with beds "A1" to "A4" at positions 1 to 4."""
    icu = Unit.objects.create(code="icu-a", name="ICU A")
    for position in range(1, 5):
        Bed.objects.create(unit=icu, label=f"A{position}", position=position)
    return icu


def bed(unit: Unit, label: str) -> Bed:
    return unit.beds.get(label=label)
