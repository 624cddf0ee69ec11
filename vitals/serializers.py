import re
from datetime import datetime

from rest_framework import serializers

from vitals.models import PatientMetric


class MetricSerializer(serializers.ModelSerializer):
    bp = serializers.CharField(
        read_only=True, help_text='Blood pressure, "systolic/diastolic" mmHg.'
    )

    class Meta:
        model = PatientMetric
        fields = [
            "measured_at",
            "pulse",
            "resp_rate",
            "bp",
            "systolic",
            "diastolic",
            "spo2",
            "temperature",
            "received_at",
        ]
        read_only_fields = fields


class _QueryDateTimeField(serializers.DateTimeField):
    """An ISO 8601 time from a query string, forgiving one classic slip: an unencoded `+` in
    the offset (`?since=2026-11-23T10:00:00+01:00`) arrives as a space."""

    def to_internal_value(self, value: str) -> datetime:
        if isinstance(value, str):
            value = re.sub(r" (\d{2}:?\d{2})$", r"+\1", value.strip())
        return super().to_internal_value(value)


class MetricFilterSerializer(serializers.Serializer):
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
