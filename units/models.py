"""Units, their beds, and admissions: which patient lies in which bed, from when to when.

A central station shows a unit's beds. A patient is admitted to a bed, transferred to another
(the admission to the first ends, one to the second begins) and discharged; their readings,
alarms and exports stay theirs whatever bed they were in. The database holds the rules that
two clicks at once must not break: at most one open admission per patient and per bed.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q


class Unit(models.Model):
    """A care unit (an ICU, a step-down unit), shown by one central station."""

    code = models.SlugField(max_length=20, unique=True, help_text='Short code, e.g. "icu-a".')
    name = models.CharField(max_length=100)

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.name


class Bed(models.Model):
    """A bed of a unit; `position` orders the beds on the central station's screen."""

    unit = models.ForeignKey(Unit, on_delete=models.CASCADE, related_name="beds")
    label = models.CharField(max_length=20, help_text='As on the door, e.g. "3" or "B-12".')
    position = models.PositiveSmallIntegerField(help_text="Place on the screen, from 1.")

    class Meta:
        ordering = ["unit", "position"]
        constraints = [
            models.UniqueConstraint(fields=["unit", "label"], name="bed_unique_label_per_unit"),
            models.UniqueConstraint(
                fields=["unit", "position"], name="bed_unique_position_per_unit"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.unit.code} bed {self.label}"


class Admission(models.Model):
    """A patient in a bed from `admitted_at` until `discharged_at` (open while null). A transfer
    ends one admission (`end_reason` "transfer") and opens the next at the same moment."""

    class EndReason(models.TextChoices):
        DISCHARGE = "discharge"
        TRANSFER = "transfer"

    patient = models.ForeignKey(
        "patients.Patient", on_delete=models.CASCADE, related_name="admissions"
    )
    bed = models.ForeignKey(Bed, on_delete=models.PROTECT, related_name="admissions")
    admitted_at = models.DateTimeField()
    admitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Null: admitted automatically (AUTO_ADMIT) or by the hospital's ADT system.",
    )
    reason = models.CharField(max_length=200, blank=True, help_text="Why admitted here.")
    discharged_at = models.DateTimeField(null=True, blank=True)
    discharged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    end_reason = models.CharField(max_length=10, choices=EndReason.choices, blank=True)
    discharge_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-admitted_at"]
        constraints = [
            # The rules two simultaneous clicks must not break, held by the database.
            models.UniqueConstraint(
                fields=["patient"],
                condition=Q(discharged_at__isnull=True),
                name="admission_one_open_per_patient",
            ),
            models.UniqueConstraint(
                fields=["bed"],
                condition=Q(discharged_at__isnull=True),
                name="admission_one_open_per_bed",
            ),
            models.CheckConstraint(
                condition=Q(discharged_at__isnull=True)
                | Q(discharged_at__gte=models.F("admitted_at")),
                name="admission_ends_after_it_begins",
            ),
        ]
        indexes = [models.Index(fields=["bed", "admitted_at"], name="admission_bed_time")]

    def __str__(self) -> str:
        return f"{self.patient_id} in {self.bed}"
