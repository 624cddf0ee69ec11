from django.db import models
from django.db.models import F, Q


class PatientMetric(models.Model):
    """One reading of a bedside monitor.

    (patient, measured_at) is unique: a reading delivered twice by Kafka (at-least-once) is
    stored once. The same constraint's index serves the API's "one patient, newest first,
    between two times" query.
    """

    patient = models.ForeignKey(
        "patients.Patient", on_delete=models.CASCADE, related_name="metrics"
    )
    measured_at = models.DateTimeField(help_text="When the monitor took the reading.")
    pulse = models.PositiveSmallIntegerField(help_text="Heart rate, beats/min.")
    resp_rate = models.PositiveSmallIntegerField(help_text="Respiratory rate, breaths/min.")
    systolic = models.PositiveSmallIntegerField(help_text="Systolic blood pressure, mmHg.")
    diastolic = models.PositiveSmallIntegerField(help_text="Diastolic blood pressure, mmHg.")
    spo2 = models.PositiveSmallIntegerField(help_text="Peripheral oxygen saturation, %.")
    temperature = models.FloatField(help_text="Body temperature, °C (one decimal).")
    received_at = models.DateTimeField(help_text="When the consumer stored the reading.")

    class Meta:
        ordering = ["-measured_at"]
        get_latest_by = "measured_at"
        constraints = [
            models.UniqueConstraint(
                fields=["patient", "measured_at"], name="metric_unique_patient_measured_at"
            ),
            # Last line of defence; the consumer validates these before writing.
            models.CheckConstraint(condition=Q(spo2__lte=100), name="metric_spo2_lte_100"),
            models.CheckConstraint(
                condition=Q(systolic__gt=F("diastolic")), name="metric_systolic_gt_diastolic"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.patient_id} @ {self.measured_at.isoformat()}"

    @property
    def bp(self) -> str:
        """Blood pressure as clinicians write it: "120/80"."""
        return f"{self.systolic}/{self.diastolic}"
