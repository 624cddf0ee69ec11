"""Writes of the gateway (the ADT's are in units/services.py)."""

from datetime import datetime

from gateway.models import Device


def device_learn(*, eui64: str, bed_id: int, seen_at: datetime) -> None:
    """Record that the device stands at this bed (a PCD-01 message named both)."""
    Device.objects.update_or_create(
        eui64=eui64, defaults={"bed_id": bed_id, "last_seen_at": seen_at}
    )
