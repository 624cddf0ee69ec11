import uuid

from django.conf import settings
from django.db import models


class Patient(models.Model):
    """A monitored patient, known to the pipeline by the uuid its bedside monitor sends.

    Patients are created by the consumer on their first reading. `latest_metric` is kept by the
    consumer in the same transaction as the readings, so that the ward list reads one row per
    patient instead of searching each patient's history.
    """

    uuid = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    hypercapnic_respiratory_failure = models.BooleanField(
        default=False,
        help_text="Known hypercapnic respiratory failure (e.g. COPD with CO2 retention): NEWS2 "
        "scores SpO2 on scale 2, target 88-92%.",
    )
    monitoring_ended_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When a clinician ended this patient's monitoring: no `no_data` alarm is "
        "raised while it is set. The next reading from a monitor starts monitoring again.",
    )
    monitoring_ended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The hospital's identifier of the patient (HL7 PID-3) and the authority that assigned it;
    # blank for a patient known only by a monitor's uuid. From the device gateway, the uuid is
    # derived from the two (gateway.identity.patient_uuid_for).
    mrn = models.CharField("MRN", max_length=64, blank=True, default="")
    mrn_authority = models.CharField("MRN authority", max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Each sign's newest value and when it was measured, {key: {"value", "measured_at"}}, for
    # the signs of vitals/signs.py and the observations consciousness and on_oxygen: a reading
    # may carry only some signs, and a tile shows each with its own age. Kept by the consumer
    # with latest_metric.
    latest_signs = models.JSONField(default=dict, blank=True)
    # Rewritten for every patient of every consumer batch, so kept with no index and no
    # foreign-key constraint in the database: the rewrite is then a HOT update on PostgreSQL
    # (no index entry; in-process loop, 20,000 readings: the UPDATE 12.5 -> 3.0 us a reading,
    # the server's CPU 57 -> 45 us, issue 20). A unique index (OneToOneField's) and the
    # constraint's index each made every rewrite a new entry in every index of the table.
    # Kept right by its writers: the consumer points it at readings it inserts in the same
    # transaction; pruning clears it under the patient's lock (reading_prune_batch); a
    # reading deleted through the ORM clears it (SET_NULL, done by Django). Nothing reads
    # patients by it but pruning, which scans the patients (hundreds to thousands of rows).
    latest_metric = models.ForeignKey(
        "vitals.PatientMetric",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
        db_index=False,
        db_constraint=False,
        help_text="The reading received last.",
    )

    class Meta:
        ordering = ["name", "uuid"]
        indexes = [
            models.Index(fields=["name", "uuid"], name="patient_name_uuid_idx"),
            models.Index(fields=["mrn", "mrn_authority"], name="patient_mrn_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["mrn_authority", "mrn"],
                condition=~models.Q(mrn=""),
                name="patient_one_per_mrn",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.uuid})"

    @property
    def spo2_scale(self) -> int:
        """The NEWS2 SpO2 scale that applies to this patient."""
        return 2 if self.hypercapnic_respiratory_failure else 1


class PatientNameConflict(models.Model):
    """A name a monitor sent for a patient that is not the patient's name: an identity event.

    The uuid is the patient's identity, so the reading is stored under it; but the other name
    is never dropped silently. One row per (patient, name seen), kept up to date by the
    consumer (one upsert per batch): when first and last seen, in how many readings. Open
    until a clinician confirms the patient's name (the name seen is dismissed: that name does
    not open a warning again) or renames the patient (services in vitals/services.py, audited).
    """

    class Resolution(models.TextChoices):
        CONFIRMED = "confirmed", "patient's name confirmed"
        RENAMED = "renamed", "patient renamed"

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="name_conflicts")
    name = models.CharField(max_length=200, help_text="The name the monitor sent (NFC).")
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    count = models.PositiveIntegerField(help_text="Readings stored with this name.")
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    resolution = models.CharField(max_length=20, choices=Resolution.choices, blank=True)

    class Meta:
        ordering = ["first_seen_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["patient", "name"], name="patient_name_conflict_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.name!r} for {self.patient_id}"


class PatientTile(models.Model):
    """A patient's entry of the ward list, kept already encoded (issue 20: the ward's poll is
    one indexed query and a concatenation, not three compiled queries and a walk over 50 to
    500 patients).

    Written by `vitals.tile_services.patient_tiles_refresh` in the transaction of every change
    that alters the entry (a batch of readings, an alarm acknowledged, escalated or switched
    off, a rename, the monitoring ended ...). The entry's JSON is stored in three pieces around
    what depends on the request or on another table: the four links (absolute URLs, from the
    request's host) and the username of whoever ended the monitoring (a user may be renamed).
    `key` says for which layout and time zone the pieces were encoded: a tile of another key
    is not served (the list builds that patient as before)."""

    patient = models.OneToOneField(
        Patient, on_delete=models.CASCADE, primary_key=True, related_name="tile"
    )
    key = models.CharField(max_length=80, help_text="The tile's layout version and time zone.")
    # {"uuid": ..., "name_conflicts": [...], "url":
    head = models.TextField()
    # ,"hypercapnic_respiratory_failure": ..., "monitoring_ended_at": ..., "monitoring_ended_by":
    middle = models.TextField()
    # ,"created_at": ..., "latest_signs": {...}}
    tail = models.TextField()

    def __str__(self) -> str:
        return f"tile of {self.patient_id}"
