import uuid

from django.conf import settings
from django.db import models


class ExportFormat(models.TextChoices):
    FHIR = "fhir", "FHIR R4 Bundle (JSON)"
    CSV = "csv", "CSV"


class ExportStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"


class Export(models.Model):
    """One export of a patient's readings, run in the background (exports/services.py).

    pending -> running -> success (the file is in `result`) or failure (`error` says why). The
    patient is kept by uuid too: an export whose patient is deleted before it runs ends in
    failure and still says whose it was. The row and its file are deleted after `expires_at`.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # SET_NULL: a deleted user's exports stay until they expire, so that the sweep, which goes
    # by the rows, deletes their files too.
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        related_name="exports",
    )
    patient = models.ForeignKey(
        "patients.Patient",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="exports",
    )
    patient_uuid = models.UUIDField(help_text="The patient's uuid, kept if the patient goes.")
    format = models.CharField(max_length=4, choices=ExportFormat.choices)
    since = models.DateTimeField(null=True, blank=True)
    until = models.DateTimeField(null=True, blank=True)
    status = models.CharField(
        max_length=7, choices=ExportStatus.choices, default=ExportStatus.PENDING
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    row_count = models.PositiveIntegerField(
        null=True, blank=True, help_text="Readings exported (success only)."
    )
    error = models.TextField(blank=True, help_text="Why the export failed.")
    # Under MEDIA_ROOT; handed out only by the API's result endpoint.
    result = models.FileField(upload_to="exports/", max_length=200, blank=True)
    expires_at = models.DateTimeField(help_text="When the export and its file are deleted.")
    task_id = models.CharField(
        max_length=64, blank=True, help_text="The background job's id (django-tasks)."
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["requested_by", "-created_at"], name="export_user_created_idx"),
            models.Index(fields=["expires_at"], name="export_expires_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.format} export of {self.patient_uuid} ({self.status})"

    @property
    def extension(self) -> str:
        """Of the file's name (MEDIA_ROOT/exports/<id>.<extension>) and the download's."""
        return "fhir.json" if self.format == ExportFormat.FHIR else "csv"
