from django.core.validators import RegexValidator
from django.db import models

EUI64_PATTERN = r"^[0-9A-F]{16}$"


class Device(models.Model):
    """A bedside monitor (or its gateway's channel) known by its IEEE EUI-64, and the bed it
    stands at: learned from a PCD-01 message that names both the device (MSH-3 or OBX-18) and
    a bed (PV1-3), or registered in the admin. A later message from the device without a
    patient (no PID-3) nor a bed goes to that bed's current admission, unless the device was
    seen at two beds within minutes (`several_beds`)."""

    eui64 = models.CharField(
        "EUI-64",
        max_length=16,
        unique=True,
        validators=[RegexValidator(EUI64_PATTERN, "16 hexadecimal digits, upper case.")],
        help_text="16 hexadecimal digits, upper case, e.g. 0012340000000001.",
    )
    bed = models.ForeignKey(
        "units.Bed", on_delete=models.SET_NULL, null=True, blank=True, related_name="devices"
    )
    last_seen_at = models.DateTimeField(null=True, blank=True, editable=False)
    several_beds = models.BooleanField(
        default=False,
        help_text="Seen at two beds within minutes: a gateway serving several beds (the EUI-64 "
        "in MSH-3 may be the gateway's), never used to find a patient. Clear it once the "
        "device is at one bed.",
    )

    class Meta:
        ordering = ["eui64"]

    def __str__(self) -> str:
        return self.eui64
