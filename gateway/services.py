"""Writes of the gateway (the ADT's are in units/services.py)."""

from datetime import datetime, timedelta

from django.db import transaction

from gateway.models import Device

# A device named at another bed within this time serves several beds (a gateway).
SEVERAL_BEDS_WITHIN = timedelta(minutes=10)


def device_learn(*, eui64: str, bed_id: int, seen_at: datetime) -> Device:
    """Record that the device is at this bed (a PCD-01 message named both). Named at another
    bed within SEVERAL_BEDS_WITHIN of the last time: it serves several beds, and its bed is
    forgotten (`several_beds`) rather than guessed."""
    with transaction.atomic():
        device, created = Device.objects.select_for_update().get_or_create(
            eui64=eui64, defaults={"bed_id": bed_id, "last_seen_at": seen_at}
        )
        if created:
            return device
        moved = device.bed_id is not None and device.bed_id != bed_id
        if device.several_beds or (
            moved
            and device.last_seen_at is not None
            and seen_at - device.last_seen_at < SEVERAL_BEDS_WITHIN
        ):
            device.several_beds, device.bed_id = True, None
        else:
            device.bed_id = bed_id
        device.last_seen_at = seen_at
        device.save(update_fields=["bed", "several_beds", "last_seen_at"])
    return device
