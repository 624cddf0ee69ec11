from django.conf import settings
from django.db import models


class PatientAccess(models.Model):
    """Who read which patient's data, and how: at most one row per user, patient, kind of read
    and window of ACCESS_LOG_WINDOW (aligned on the epoch), enforced by the database, so that
    a page polling every 2 s adds one row a window, not one a poll. Written by
    access/services.py after the response; never edited by people.

    The user and the patient are kept by name and uuid too, so that a row still says who and
    whom after either is deleted.
    """

    class Kind(models.TextChoices):
        PATIENT = "patient", "patient detail"
        METRICS = "metrics", "readings"
        TREND = "trend", "trend (charts)"
        ALARMS = "alarms", "alarms"
        EXPORTS = "exports", "exports"
        FHIR = "fhir", "FHIR search"
        PAGE = "page", "central station patient page"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    username = models.CharField(max_length=150, help_text="The user's, at the time.")
    patient = models.ForeignKey(
        "patients.Patient", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    patient_uuid = models.UUIDField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    window_start = models.DateTimeField(help_text="The window of ACCESS_LOG_WINDOW it counts.")
    first_at = models.DateTimeField(help_text="The first read in the window.")
    last_at = models.DateTimeField(help_text="The last read counted so far.")
    count = models.PositiveIntegerField(default=1, help_text="Reads in the window counted so far.")

    class Meta:
        ordering = ["-first_at", "-id"]
        verbose_name = "patient access"
        verbose_name_plural = "patient accesses"
        constraints = [
            models.UniqueConstraint(
                fields=["username", "patient_uuid", "kind", "window_start"],
                name="access_one_row_per_user_patient_kind_window",
            )
        ]
        indexes = [
            models.Index(fields=["patient_uuid", "-first_at"], name="access_by_patient"),
            models.Index(fields=["username", "-first_at"], name="access_by_user"),
        ]

    def __str__(self) -> str:
        return f"{self.username} read {self.kind} of {self.patient_uuid} at {self.first_at}"
