import re
from datetime import datetime, timedelta, tzinfo

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from vitals.alarms import ALARM_KINDS, PRIORITY_RANK
from vitals.models import (
    Alarm,
    AlarmEvent,
    AlarmLimits,
    AlarmPriority,
    AuditEvent,
    PatientMetric,
)
from vitals.news2 import RISKS, SUBSCORE_KEYS, News2
from vitals.selectors import TREND_MAX_POINTS, TREND_SIGNS
from vitals.signs import LIMIT_BY_KIND, SIGN_BY_KEY, SIGNS


class News2SubscoresSerializer(serializers.Serializer):
    """Each NEWS2 parameter's score, 0-3; null for a parameter with no valid value."""

    def get_fields(self) -> dict:
        return {key: serializers.IntegerField(allow_null=True) for key in SUBSCORE_KEYS}


class News2Serializer(serializers.Serializer):
    score = serializers.IntegerField(help_text="Aggregate NEWS2 score, 0-20.")
    risk = serializers.ChoiceField(choices=RISKS)
    subscores = News2SubscoresSerializer()
    complete = serializers.BooleanField(
        help_text="False when a parameter had no valid value (SIGN_VALIDITY): the score then "
        "sums the others and is shown as incomplete; the NEWS2 alarm judges complete scores only."
    )
    missing = serializers.ListField(
        child=serializers.ChoiceField(choices=SUBSCORE_KEYS),
        help_text="The parameters with no valid value.",
    )


def news2_data(news2: News2 | None) -> dict | None:
    if news2 is None:
        return None
    return {
        "score": news2.score,
        "risk": news2.risk,
        "subscores": news2.subscores,
        "complete": news2.complete,
        "missing": list(news2.missing),
    }


def _reading_sign_fields() -> list[str]:
    """A reading's signs as the API names them, in the registry's order: each sign by its key,
    and before blood pressure's halves their contract field, `bp` ("systolic/diastolic")."""
    names: list[str] = []
    for sign in SIGNS:
        if sign.wire and sign.wire not in names:
            names.append(sign.wire)
        names.append(sign.key)
    return names


READING_SIGN_FIELDS = _reading_sign_fields()


def reading_bp(metric: PatientMetric) -> str | None:
    """Blood pressure as clinicians write it, "120/80"; None unless both halves were measured."""
    if metric.systolic is None or metric.diastolic is None:
        return None
    return f"{metric.systolic}/{metric.diastolic}"


class ReadingSerializer(serializers.ModelSerializer):
    bp = serializers.SerializerMethodField(
        help_text='Blood pressure, "systolic/diastolic"; null unless both were measured.'
    )
    news2 = serializers.SerializerMethodField(
        help_text="NEWS2 of this reading; null for a reading flagged as a sensor artefact."
    )

    class Meta:
        model = PatientMetric
        # Every sign of vitals/signs.py, null when the reading did not measure it.
        fields = [
            "measured_at",
            *READING_SIGN_FIELDS,
            "on_oxygen",
            "consciousness",
            "artefact",
            "news2",
            "received_at",
            "sent_at",
            "clock_offset_s",
        ]
        read_only_fields = fields

    clock_offset_s = serializers.SerializerMethodField(
        help_text="How far the monitor's clock was ahead (negative: behind) when it sent this "
        "reading: measured_at minus sent_at, in seconds; null when sent_at is unknown."
    )

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_bp(self, metric: PatientMetric) -> str | None:
        return reading_bp(metric)

    @extend_schema_field(News2Serializer(allow_null=True))
    def get_news2(self, metric: PatientMetric) -> dict | None:
        return news2_data(metric.news2)

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_clock_offset_s(self, metric: PatientMetric) -> float | None:
        if metric.sent_at is None:
            return None
        return round((metric.measured_at - metric.sent_at).total_seconds(), 3)

    def to_representation(self, metric: PatientMetric) -> dict:
        """The API's most repeated work (a chart asks for hundreds of readings at a time), so
        built directly rather than by DRF's walk over the fields, which costs ten times more
        (bench/api_scale.py). The fields above still document it, and a test holds this equal
        to what DRF's walk makes of every field."""
        tz = timezone.get_current_timezone()
        data = {"measured_at": api_datetime(metric.measured_at, tz)}
        for name in READING_SIGN_FIELDS:
            data[name] = reading_bp(metric) if name == "bp" else getattr(metric, name)
        data |= {
            "on_oxygen": metric.on_oxygen,
            "consciousness": metric.consciousness,
            "artefact": metric.artefact,
            "news2": self.get_news2(metric),
            "received_at": api_datetime(metric.received_at, tz),
            "sent_at": None if metric.sent_at is None else api_datetime(metric.sent_at, tz),
            "clock_offset_s": self.get_clock_offset_s(metric),
        }
        return data


def reading_data(row: dict, *, tz: tzinfo) -> dict:
    """ReadingSerializer's representation of a reading read as a plain row (a dict of
    vitals.selectors.READING_VALUE_FIELDS, `reading_values`): no model instance, no field walk;
    a page of readings is the API's biggest answer. Tested equal to ReadingSerializer's."""
    data = {"measured_at": api_datetime(row["measured_at"], tz)}
    systolic, diastolic = row["systolic"], row["diastolic"]
    bp = None if systolic is None or diastolic is None else f"{systolic}/{diastolic}"
    for name in READING_SIGN_FIELDS:
        data[name] = bp if name == "bp" else row[name]
    sent_at = row["sent_at"]
    data |= {
        "on_oxygen": row["on_oxygen"],
        "consciousness": row["consciousness"],
        "artefact": row["artefact"],
        "news2": _row_news2_data(row),
        "received_at": api_datetime(row["received_at"], tz),
        "sent_at": None if sent_at is None else api_datetime(sent_at, tz),
        "clock_offset_s": None
        if sent_at is None
        else round((row["measured_at"] - sent_at).total_seconds(), 3),
    }
    return data


def _row_news2_data(row: dict) -> dict | None:
    """news2_data(PatientMetric.news2) of a plain row: the stored score as it is; a row stored
    before partial readings (no sub-scores) through the model's own rule."""
    subscores = row["news2_subscores"]
    if subscores is None:
        return news2_data(PatientMetric(**row).news2)
    missing = list(row["news2_missing"])
    return {
        "score": row["news2_score"],
        "risk": row["news2_risk"],
        # in SUBSCORE_KEYS order: PostgreSQL's jsonb keeps its own
        "subscores": {key: subscores.get(key) for key in SUBSCORE_KEYS},
        "complete": not missing,
        "missing": missing,
    }


def api_datetime(value: datetime, tz: tzinfo) -> str:
    """A time as DRF's DateTimeField writes it: ISO 8601 in the current zone, UTC as `Z`."""
    text = value.astimezone(tz).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class _QueryDateTimeField(serializers.DateTimeField):
    """An ISO 8601 time from a query string, forgiving one classic slip: an unencoded `+` in
    the offset (`?since=2026-11-23T10:00:00+01:00`) arrives as a space."""

    def to_internal_value(self, value: str) -> datetime:
        if isinstance(value, str):
            value = re.sub(r" (\d{2}:?\d{2})$", r"+\1", value.strip())
        return super().to_internal_value(value)


class ReadingFilterSerializer(serializers.Serializer):
    since = _QueryDateTimeField(
        required=False, help_text="Only readings measured at or after this time (ISO 8601)."
    )
    until = _QueryDateTimeField(
        required=False, help_text="Only readings measured at or before this time (ISO 8601)."
    )

    def validate(self, attrs: dict) -> dict:
        since, until = attrs.get("since"), attrs.get("until")
        if since and until and since > until:
            raise serializers.ValidationError({"until": ["'until' must not be before 'since'."]})
        return attrs


class TrendFilterSerializer(ReadingFilterSerializer):
    """A trend's window (by default the hour up to now) and its resolution."""

    points = serializers.IntegerField(
        required=False,
        default=300,
        min_value=2,
        max_value=TREND_MAX_POINTS,
        help_text=f"At most this many buckets (2-{TREND_MAX_POINTS}, default 300).",
    )

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        attrs.setdefault("until", timezone.now())
        attrs.setdefault("since", attrs["until"] - timedelta(hours=1))
        if attrs["since"] > attrs["until"]:
            raise serializers.ValidationError({"since": ["'since' must not be after 'until'."]})
        return attrs


class TrendStatsSerializer(serializers.Serializer):
    min = serializers.FloatField()
    max = serializers.FloatField()
    mean = serializers.FloatField(help_text="Rounded to two decimals.")


TrendBucketSerializer = type(
    "TrendBucketSerializer",
    (serializers.Serializer,),
    {
        "__doc__": "One bucket of a trend: its start, its readings and each charted sign's "
        "min, max and mean, null where no reading of the bucket measured it (a gap).",
        "start": serializers.DateTimeField(help_text="Start of the bucket (bucket_seconds long)."),
        "count": serializers.IntegerField(help_text="Readings in the bucket."),
        **{
            name: TrendStatsSerializer(
                allow_null=True,
                help_text="NEWS2 score; null if none scored."
                if name == "news2"
                else f"{SIGN_BY_KEY[name].label}, {SIGN_BY_KEY[name].unit}; null if none measured.",
            )
            for name in TREND_SIGNS
        },
    },
)


class ReadingTrendSerializer(serializers.Serializer):
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    bucket_seconds = serializers.IntegerField(
        help_text="Width of every bucket; buckets are aligned on whole multiples of it since "
        "the Unix epoch, so they do not move as time goes on."
    )
    buckets = TrendBucketSerializer(
        many=True, help_text="Oldest first; a bucket without a reading is left out."
    )


class AlarmEventSerializer(serializers.ModelSerializer):
    """One change of an alarm, with the alarm as it was then."""

    priority = serializers.CharField(source="payload.alarm.priority", read_only=True)
    state = serializers.CharField(source="payload.alarm.state", read_only=True)
    message = serializers.CharField(source="payload.alarm.message", read_only=True)
    by = serializers.SerializerMethodField(
        help_text="Who acknowledged (for an acknowledgement); null otherwise."
    )

    class Meta:
        model = AlarmEvent
        fields = ["type", "created_at", "priority", "state", "message", "by"]
        read_only_fields = fields

    def get_by(self, event: AlarmEvent) -> str | None:
        if event.type != AlarmEvent.Type.ACKNOWLEDGED:
            return None
        return event.payload["alarm"].get("acknowledged_by")


class AlarmSerializer(serializers.ModelSerializer):
    patient = serializers.UUIDField(source="patient.uuid", read_only=True)
    patient_name = serializers.CharField(source="patient.name", read_only=True)
    acknowledged_by = serializers.CharField(
        source="acknowledged_by.username", read_only=True, allow_null=True, default=None
    )
    acknowledge_url = serializers.HyperlinkedIdentityField(view_name="api:alarm-acknowledge")
    acknowledged_priority = serializers.SerializerMethodField(
        help_text="The priority the acknowledgement covered (null before one): a rise above "
        "it makes the alarm active again."
    )
    history = AlarmEventSerializer(
        source="events",
        many=True,
        read_only=True,
        help_text="Every change, oldest first: raised, priority_changed (the payload's "
        "priority and message then), acknowledged (by whom), escalated, resolved.",
    )

    class Meta:
        model = Alarm
        fields = [
            "id",
            "patient",
            "patient_name",
            "kind",
            "priority",
            "state",
            "message",
            "value",
            "threshold",
            "raised_at",
            "activated_at",
            "escalated_at",
            "acknowledged_at",
            "acknowledged_by",
            "acknowledged_priority",
            "acknowledged_message",
            "resolved_at",
            "acknowledge_url",
            "history",
        ]
        read_only_fields = fields

    @extend_schema_field(
        serializers.ChoiceField(choices=AlarmPriority.choices, allow_null=True)  # type: ignore[arg-type]
    )
    def get_acknowledged_priority(self, alarm: Alarm) -> str | None:
        return alarm.acknowledged_priority or None


class OpenAlarmSerializer(serializers.ModelSerializer):
    """An alarm as listed on its patient: what a central station tile shows."""

    class Meta:
        model = Alarm
        fields = [
            "id",
            "kind",
            "priority",
            "state",
            "message",
            "raised_at",
            "activated_at",
            "escalated_at",
        ]
        read_only_fields = fields

    def to_representation(self, alarm: Alarm) -> dict:
        """Built directly: a ward list has an open alarm on many of its tiles. Tested equal to
        DRF's walk over the fields (patients/tests/test_api.py)."""
        return open_alarm_data(alarm, tz=timezone.get_current_timezone())


def open_alarm_data(alarm: Alarm, *, tz: tzinfo) -> dict:
    """OpenAlarmSerializer's representation of an alarm."""
    activated, escalated = alarm.activated_at, alarm.escalated_at
    return {
        "id": alarm.id,
        "kind": alarm.kind,
        "priority": alarm.priority,
        "state": alarm.state,
        "message": alarm.message,
        "raised_at": api_datetime(alarm.raised_at, tz),
        "activated_at": None if activated is None else api_datetime(activated, tz),
        "escalated_at": None if escalated is None else api_datetime(escalated, tz),
    }


class AlarmFilterSerializer(serializers.Serializer):
    patient = serializers.UUIDField(required=False, help_text="Only this patient's alarms.")
    unit = serializers.SlugField(
        required=False,
        help_text="Only the alarms of the patients now in a bed of the unit with this code.",
    )
    kind = serializers.MultipleChoiceField(
        choices=ALARM_KINDS,
        required=False,
        help_text="Only alarms of these kinds, e.g. news2 or spo2_low (repeat or comma-separate).",
    )
    state = serializers.MultipleChoiceField(
        choices=Alarm._meta.get_field("state").choices,
        required=False,
        help_text="Only alarms in these states (repeat or comma-separate).",
    )
    priority = serializers.MultipleChoiceField(
        choices=Alarm._meta.get_field("priority").choices,
        required=False,
        help_text="Only alarms of these priorities (repeat or comma-separate).",
    )

    def to_internal_value(self, data):
        # Accept both ?state=active&state=acknowledged and ?state=active,acknowledged.
        if hasattr(data, "getlist"):
            data = {
                key: [v for value in data.getlist(key) for v in value.split(",") if v]
                if key in ("kind", "state", "priority")
                else data.get(key)
                for key in data
            }
        return super().to_internal_value(data)


class AuditEventSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="username", read_only=True, help_text="Who (username).")
    patient = serializers.UUIDField(source="patient_uuid", read_only=True, allow_null=True)
    before = serializers.JSONField(read_only=True, allow_null=True)
    after = serializers.JSONField(read_only=True, allow_null=True)

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "at",
            "user",
            "action",
            "object_type",
            "object_id",
            "patient",
            "before",
            "after",
        ]
        read_only_fields = fields


class AuditFilterSerializer(serializers.Serializer):
    patient = serializers.UUIDField(required=False, help_text="Only this patient's events.")
    action = serializers.MultipleChoiceField(
        choices=AuditEvent.Action.choices,
        required=False,
        help_text="Only these actions, e.g. alarm.acknowledge (repeat or comma-separate).",
    )

    def to_internal_value(self, data):
        if hasattr(data, "getlist"):
            data = {
                key: [v for value in data.getlist(key) for v in value.split(",") if v]
                if key == "action"
                else data.get(key)
                for key in data
            }
        return super().to_internal_value(data)


class AlarmAcknowledgeSerializer(serializers.Serializer):
    """What the nurse acknowledges: the alarm as shown."""

    priority = serializers.ChoiceField(
        choices=list(PRIORITY_RANK),
        required=False,
        help_text="The priority the alarm had on the screen. If it now ranks above it (worse "
        "meanwhile), 409 alarm_changed and nothing acknowledged. Absent: whatever it is now.",
    )


class AlarmOffSerializer(serializers.Serializer):
    """An alarm switched off: POST kind and reason; read who and when too."""

    kind = serializers.CharField(
        help_text=f"A limit alarm: {', '.join(LIMIT_BY_KIND)} "
        "(not news2, asystole or a technical alarm)."
    )
    reason = serializers.CharField(max_length=200, help_text="Why it is off (required).")
    by = serializers.CharField(source="by_username", read_only=True, help_text="Who (username).")
    at = serializers.DateTimeField(read_only=True, help_text="When it was switched off.")


def alarm_off_data(item: dict, *, tz: tzinfo) -> dict:
    """AlarmOffSerializer's representation of an item of vitals.selectors.alarm_off_items."""
    return {"kind": item["kind"], "reason": item["reason"], "by": item["by_username"],
            "at": api_datetime(item["at"], tz)}  # fmt: skip


# The limits of a sign that has both, low and high: the low one must stay below the high one.
LIMIT_PAIRS = [
    (sign.limits[0].kind, sign.limits[1].kind)
    for sign in SIGNS
    if [limit.low for limit in sign.limits] == [True, False]
]


class AlarmLimitsSerializer(serializers.ModelSerializer):
    updated_by = serializers.CharField(
        source="updated_by.username", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = AlarmLimits
        # Every limit of vitals/signs.py.
        fields = [*LIMIT_BY_KIND, "delay_readings", "updated_at", "updated_by"]
        read_only_fields = ["updated_at", "updated_by"]

    def get_extra_kwargs(self) -> dict:
        # PUT replaces the whole set of limits, so every limit is required; PATCH changes some.
        extra = super().get_extra_kwargs()
        if not self.partial:
            for name in self.Meta.fields:
                if name not in self.Meta.read_only_fields:
                    extra.setdefault(name, {})["required"] = True
        return extra

    def validate(self, attrs: dict) -> dict:
        errors = {}
        for low, high in LIMIT_PAIRS:
            low_value = attrs.get(low, getattr(self.instance, low, None))
            high_value = attrs.get(high, getattr(self.instance, high, None))
            if low_value is not None and high_value is not None and low_value >= high_value:
                errors[high] = [f"'{high}' must be above '{low}' ({low_value:g})."]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs
