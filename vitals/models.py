from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django.utils.functional import cached_property

from vitals.alarms import ALARM_OFF_KINDS, LIMIT_RANGES
from vitals.news2 import SUBSCORE_KEYS, News2, news2_of


def reading_time(moment) -> str:
    """A reading's time as the admin shows it: local (TIME_ZONE), to the second (readings come
    every few seconds; Django's default format stops at the minute)."""
    return f"{timezone.localtime(moment):%Y-%m-%d %H:%M:%S}"


class Consciousness(models.TextChoices):
    """ACVPU."""

    ALERT = "A", "Alert"
    CONFUSION = "C", "New confusion"
    VOICE = "V", "Responds to voice"
    PAIN = "P", "Responds to pain"
    UNRESPONSIVE = "U", "Unresponsive"


class News2Risk(models.TextChoices):
    LOW = "low"
    LOW_MEDIUM = "low-medium"
    MEDIUM = "medium"
    HIGH = "high"


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
    # The signs (vitals/signs.py): null = not measured in this reading (contract version 2
    # readings carry any subset of them; version 1 readings carry pulse to temperature, and
    # map computed from the blood pressure).
    pulse = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Heart rate, /min.")
    resp_rate = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Respiratory rate, /min."
    )
    systolic = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Systolic blood pressure, mmHg."
    )
    diastolic = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Diastolic blood pressure, mmHg."
    )
    map = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Mean arterial pressure, mmHg."
    )
    spo2 = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Peripheral oxygen saturation, %."
    )
    temperature = models.FloatField(
        null=True, blank=True, help_text="Body temperature, °C (one decimal)."
    )
    etco2 = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="End-tidal CO2, mmHg (ventilated patients)."
    )
    on_oxygen = models.BooleanField(default=False, help_text="On supplemental oxygen.")
    consciousness = models.CharField(
        max_length=1, choices=Consciousness.choices, default=Consciousness.ALERT
    )
    artefact = models.CharField(
        max_length=20,
        blank=True,
        default="",
        help_text="Set when the monitor flagged the reading as a sensor artefact.",
    )
    # NEWS2 as computed when the reading was stored (null for artefact readings, which are not
    # physiological values). The SpO2 scale used is kept so that the sub-scores can be shown
    # exactly as they were, even if the patient's scale changes later.
    news2_score = models.PositiveSmallIntegerField(null=True, blank=True)
    # NULL, like news2_score: "not scored" is not a risk band.
    news2_risk = models.CharField(  # noqa: DJ001
        max_length=12, choices=News2Risk.choices, null=True, blank=True
    )
    spo2_scale = models.PositiveSmallIntegerField(default=1)
    # A reading's NEWS2 uses each parameter's newest value within its validity window
    # (SIGN_VALIDITY), from this reading or earlier ones: the sub-scores as scored, and the
    # parameters that had no valid value (the score is then incomplete). Null sub-scores: a row
    # stored before partial readings, scored from its own values.
    news2_subscores = models.JSONField(null=True, blank=True)
    news2_missing = models.JSONField(default=list, blank=True)
    received_at = models.DateTimeField(help_text="When the consumer stored the reading.")
    # The monitor's clock may be wrong: measured_at is kept as sent (charts and exports use
    # it), and sent_at, the Kafka message's timestamp (the sending gateway's clock, or the
    # broker's), tells how far off it is (vitals/alarm_engine.py). Null when unknown.
    sent_at = models.DateTimeField(
        null=True, blank=True, help_text="When the reading was sent (the Kafka timestamp)."
    )

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
        # The patient's name, not their internal id: the admin's row titles (select_related
        # where many are shown).
        return f"{self.patient.name} at {reading_time(self.measured_at)}"

    @property
    def bp(self) -> str:
        """Blood pressure as clinicians write it: "120/80"."""
        return f"{self.systolic}/{self.diastolic}"

    @cached_property
    def news2(self) -> News2 | None:
        """The whole NEWS2 (sub-scores too) as stored: scored when the reading was stored,
        from each parameter's newest value within its validity window (vitals/news2.py); None
        for a reading whose values are not the patient's (an artefact). A row stored before
        partial readings (no sub-scores stored) is scored from its own values, on its stored
        SpO2 scale. The storage service sets it as it scores a new reading."""
        subscores = self.news2_subscores
        if subscores is None:
            return news2_of(self, spo2_scale=self.spo2_scale)
        missing = tuple(self.news2_missing)
        return News2(
            score=self.news2_score,
            risk=self.news2_risk,
            # in SUBSCORE_KEYS order: PostgreSQL's jsonb keeps its own
            subscores={key: subscores.get(key) for key in SUBSCORE_KEYS},
            complete=not missing,
            missing=missing,
        )


def _limit_range(name: str) -> list:
    low, high = LIMIT_RANGES[name]
    return [MinValueValidator(low), MaxValueValidator(high)]


class AlarmLimits(models.Model):
    """A patient's alarm limits; a patient without a row uses the bedside defaults below.

    Each limit stays inside its range (LIMIT_RANGES), checked by the validators (forms, the
    API, the services' full_clean) and by the database; an alarm is switched off explicitly
    (AlarmOff), never by a limit out of reach."""

    patient = models.OneToOneField(
        "patients.Patient",
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="alarm_limits",
    )
    spo2_low = models.PositiveSmallIntegerField(default=90, validators=_limit_range("spo2_low"))
    pulse_low = models.PositiveSmallIntegerField(default=50, validators=_limit_range("pulse_low"))
    pulse_high = models.PositiveSmallIntegerField(
        default=120, validators=_limit_range("pulse_high")
    )
    systolic_low = models.PositiveSmallIntegerField(
        default=90, validators=_limit_range("systolic_low")
    )
    systolic_high = models.PositiveSmallIntegerField(
        default=160, validators=_limit_range("systolic_high")
    )
    diastolic_low = models.PositiveSmallIntegerField(
        default=50, validators=_limit_range("diastolic_low")
    )
    diastolic_high = models.PositiveSmallIntegerField(
        default=90, validators=_limit_range("diastolic_high")
    )
    resp_rate_low = models.PositiveSmallIntegerField(
        default=8, validators=_limit_range("resp_rate_low")
    )
    resp_rate_high = models.PositiveSmallIntegerField(
        default=30, validators=_limit_range("resp_rate_high")
    )
    temperature_low = models.FloatField(default=35.0, validators=_limit_range("temperature_low"))
    temperature_high = models.FloatField(default=39.0, validators=_limit_range("temperature_high"))
    map_low = models.PositiveSmallIntegerField(default=65, validators=_limit_range("map_low"))
    map_high = models.PositiveSmallIntegerField(default=110, validators=_limit_range("map_high"))
    etco2_low = models.PositiveSmallIntegerField(default=25, validators=_limit_range("etco2_low"))
    etco2_high = models.PositiveSmallIntegerField(default=50, validators=_limit_range("etco2_high"))
    delay_readings = models.PositiveSmallIntegerField(
        default=2,
        validators=_limit_range("delay_readings"),
        help_text="Consecutive readings a condition must hold before it alarms (and be gone "
        "before the alarm resolves), so that one outlier does not alarm.",
    )
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        verbose_name_plural = "alarm limits"
        constraints = [
            models.CheckConstraint(
                condition=Q(pulse_low__lt=F("pulse_high")), name="limits_pulse_low_lt_high"
            ),
            models.CheckConstraint(
                condition=Q(systolic_low__lt=F("systolic_high")), name="limits_systolic_low_lt_high"
            ),
            models.CheckConstraint(
                condition=Q(diastolic_low__lt=F("diastolic_high")),
                name="limits_diastolic_low_lt_high",
            ),
            models.CheckConstraint(
                condition=Q(resp_rate_low__lt=F("resp_rate_high")),
                name="limits_resp_rate_low_lt_high",
            ),
            models.CheckConstraint(
                condition=Q(temperature_low__lt=F("temperature_high")),
                name="limits_temperature_low_lt_high",
            ),
            models.CheckConstraint(
                condition=Q(map_low__lt=F("map_high")), name="limits_map_low_lt_high"
            ),
            models.CheckConstraint(
                condition=Q(etco2_low__lt=F("etco2_high")), name="limits_etco2_low_lt_high"
            ),
            *(
                models.CheckConstraint(
                    condition=Q(**{f"{name}__gte": low, f"{name}__lte": high}),
                    name=f"limits_{name}_in_range",
                    violation_error_message=f"{name} must be between {low:g} and {high:g}.",
                )
                for name, (low, high) in LIMIT_RANGES.items()
            ),
        ]

    def __str__(self) -> str:
        return f"alarm limits of {self.patient_id}"


class AlarmOff(models.Model):
    """One kind of limit alarm switched off for one patient (IEC 60601-1-8 ALARM OFF): the
    detector does not judge it until it is switched on again (the row deleted). Who, when and
    why are shown wherever the patient is; every switch is in the audit trail."""

    patient = models.ForeignKey(
        "patients.Patient", on_delete=models.CASCADE, related_name="alarms_off"
    )
    kind = models.CharField(max_length=20, choices=[(k, k) for k in ALARM_OFF_KINDS])
    reason = models.CharField(max_length=200, help_text="Why the alarm is off (required).")
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    by_username = models.CharField(max_length=150, blank=True, help_text="The user's, then.")
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["kind"]
        verbose_name = "alarm off"
        verbose_name_plural = "alarms off"
        constraints = [
            models.UniqueConstraint(
                fields=["patient", "kind"], name="alarmoff_unique_patient_kind"
            ),
            models.CheckConstraint(
                condition=Q(kind__in=ALARM_OFF_KINDS), name="alarmoff_kind_limit_alarm"
            ),
            models.CheckConstraint(condition=~Q(reason=""), name="alarmoff_reason_required"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} off for {self.patient_id}"


class AlarmPriority(models.TextChoices):
    """IEC 60601-1-8: high = immediate response, medium = prompt, low = awareness."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class AlarmState(models.TextChoices):
    ACTIVE = "active"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


OPEN_ALARM_STATES = (AlarmState.ACTIVE, AlarmState.ACKNOWLEDGED)


class Alarm(models.Model):
    """One alarm condition of one patient, from raise to resolution.

    At most one alarm of a kind is open (active or acknowledged) per patient; a condition
    that comes back after resolution is a new alarm.
    """

    patient = models.ForeignKey("patients.Patient", on_delete=models.CASCADE, related_name="alarms")
    kind = models.CharField(max_length=20)
    priority = models.CharField(max_length=6, choices=AlarmPriority.choices)
    state = models.CharField(max_length=12, choices=AlarmState.choices, default=AlarmState.ACTIVE)
    message = models.CharField(max_length=200)
    value = models.FloatField(
        help_text="The value that raised the alarm, or last changed its priority."
    )
    threshold = models.FloatField(null=True, blank=True)
    raised_at = models.DateTimeField(
        help_text="When the reading that raised it was taken (the monitor's time, corrected "
        "when its clock is off; see sent_at on readings)."
    )
    activated_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When it last became active (raised, or active again because its priority "
        "rose above the one acknowledged), by the server's clock: unanswered since.",
    )
    escalated_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When it was escalated for having gone unanswered (ALARM_ESCALATE_AFTER).",
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # What the acknowledgement covered: the alarm as it was then. A later rise above this
    # priority makes the alarm active again.
    acknowledged_priority = models.CharField(
        max_length=6, choices=AlarmPriority.choices, blank=True, default=""
    )
    acknowledged_message = models.CharField(max_length=200, blank=True, default="")
    resolved_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-raised_at", "-id"]
        # Beyond view/add/change/delete: what the clinician role may do (core/permissions.py).
        permissions = [("acknowledge_alarm", "Can acknowledge alarms")]
        constraints = [
            models.UniqueConstraint(
                fields=["patient", "kind"],
                condition=Q(state__in=OPEN_ALARM_STATES),
                name="alarm_one_open_per_patient_kind",
            ),
        ]
        indexes = [
            models.Index(fields=["state", "-raised_at"], name="alarm_state_raised_idx"),
            models.Index(fields=["patient", "-raised_at"], name="alarm_patient_raised_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.priority} {self.kind} ({self.state})"


class AlarmEvent(models.Model):
    """Outbox of the alarms topic: written in the transaction that changes the alarm, published
    to Kafka after it commits, so that no change is lost if a process dies in between."""

    class Type(models.TextChoices):
        RAISED = "raised"
        # Its priority or message changed (the payload holds the new ones); an acknowledged
        # alarm whose priority rose is active again (payload "reactivated": true).
        PRIORITY_CHANGED = "priority_changed"
        ACKNOWLEDGED = "acknowledged"
        # Active, high and unanswered for ALARM_ESCALATE_AFTER: for paging systems.
        ESCALATED = "escalated"
        RESOLVED = "resolved"

    alarm = models.ForeignKey(Alarm, on_delete=models.CASCADE, related_name="events")
    type = models.CharField(max_length=20, choices=Type.choices)
    # The message as published: the alarm as it was when the event happened.
    payload = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(
                fields=["id"],
                condition=Q(published_at__isnull=True),
                name="alarmevent_unpublished_idx",
            )
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.alarm_id}"


class AuditEvent(models.Model):
    """Who changed what a clinician may change: one row per acknowledgement, change of alarm
    limits, alarm switched off or on, patient name confirmed or changed (identity conflicts),
    MRN given (by an HL7 message), or patient's monitoring ended, written by vitals/services.py
    in the transaction that makes the change. Never edited: the admin and the API only show it.

    The user and the patient are kept by name and uuid too, so that a row still says who and
    whom after either is deleted.
    """

    class Action(models.TextChoices):
        ALARM_ACKNOWLEDGE = "alarm.acknowledge"
        ALARM_LIMITS_UPDATE = "alarm_limits.update"
        ALARM_LIMITS_RESET = "alarm_limits.reset"
        MONITORING_END = "patient.monitoring_end"
        PATIENT_CONFIRM_NAME = "patient.confirm_name"
        PATIENT_RENAME = "patient.rename"
        # An MRN given by the hospital's system (HL7 ADT) or a monitor's message (PCD-01).
        PATIENT_IDENTIFY = "patient.identify"
        PATIENT_NEWS2_SCALE = "patient.news2_scale"
        ALARM_OFF = "alarm.off"
        ALARM_ON = "alarm.on"
        # units/: a patient admitted to a bed, moved to another, discharged.
        PATIENT_ADMIT = "patient.admit"
        PATIENT_TRANSFER = "patient.transfer"
        PATIENT_DISCHARGE = "patient.discharge"

    at = models.DateTimeField(default=timezone.now)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    username = models.CharField(max_length=150, blank=True, help_text="The user's, at the time.")
    action = models.CharField(max_length=40, choices=Action.choices)
    object_type = models.CharField(
        max_length=40, help_text='"alarm", "alarm_limits", "alarm_off", "patient" or "admission".'
    )
    object_id = models.CharField(max_length=64)
    patient = models.ForeignKey(
        "patients.Patient", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    patient_uuid = models.UUIDField(null=True, blank=True)
    # The changed values before and after (for alarm limits, every limit).
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["patient_uuid", "-at"], name="audit_patient_at_idx"),
            models.Index(fields=["action", "-at"], name="audit_action_at_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.object_type} {self.object_id} by {self.username or '?'}"


class ConsumerStall(models.Model):
    """A partition a consumer cannot get past: a rejected message the dead-letter topic does
    not take. The consumer commits nothing past it and retries with backoff; the row is its
    way of telling /readyz (another process), and goes when the partition moves again."""

    topic = models.CharField(max_length=249)
    partition = models.IntegerField()
    offset = models.BigIntegerField(help_text="The message the consumer is held at.")
    error = models.CharField(max_length=300, help_text="Why the DLQ did not take it.")
    since = models.DateTimeField(help_text="First failed attempt.")
    updated_at = models.DateTimeField(help_text="Latest failed attempt.")
    attempts = models.PositiveIntegerField(default=1)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["topic", "partition"], name="consumer_stall_unique_topic_partition"
            )
        ]

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}] @ {self.offset}"


class AlarmProcessingHeartbeat(models.Model):
    """That a consumer's alarm sweep ran: one row per consumer process (`host:pid`), its
    `beat_at` renewed by every sweep the database answered, stamped with the database's clock
    (a consumer host whose clock is wrong neither fakes life nor death). The web reads it to say
    whether alarms are processed at all (vitals/heartbeat_selectors.py): with no consumer
    running, nobody raises or sweeps alarms, and that is itself an alarm condition."""

    process = models.CharField(max_length=300, unique=True, help_text="host:pid")
    beat_at = models.DateTimeField(help_text="The latest sweep, by the database's clock.")

    def __str__(self) -> str:
        return f"{self.process} @ {self.beat_at}"
