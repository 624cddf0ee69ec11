from datetime import datetime

from django.utils.dateparse import parse_datetime
from rest_framework import serializers
from rest_framework.reverse import reverse

from exports.models import Export, ExportFormat
from vitals.serializers import ReadingFilterSerializer

FORM_MEDIA_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


class AwareDateTimeField(serializers.DateTimeField):
    """An ISO 8601 time that says its offset (`Z`, `+01:00`): an export covers exactly the
    period meant, whatever the server's or the client's time zone.

    Except from a form (the browsable API's): its date pickers send `2026-12-02T17:50`, a time
    a person read on the ward's clock, taken in TIME_ZONE. A program sending JSON without an
    offset may mean UTC or its own zone: guessing would export the wrong hours without a word,
    so it is asked for the offset."""

    def to_internal_value(self, value: str) -> datetime:
        try:
            parsed = parse_datetime(value.strip()) if isinstance(value, str) else None
        except ValueError:
            parsed = None  # well-formed but impossible: DRF's own message says so
        request = self.context.get("request")
        from_a_form = request is not None and request.content_type.startswith(FORM_MEDIA_TYPES)
        if parsed is not None and parsed.tzinfo is None and not from_a_form:
            raise serializers.ValidationError(
                "Give the offset of the time, e.g. 2026-11-23T10:00:00Z or "
                "2026-11-23T11:00:00+01:00."
            )
        return super().to_internal_value(value)


class ExportRequestSerializer(ReadingFilterSerializer):
    """The body of `POST patients/{uuid}/exports/` (since <= until, checked as for readings)."""

    format = serializers.ChoiceField(
        choices=ExportFormat.choices,
        help_text="`fhir`: a FHIR R4 Bundle of Observations (application/fhir+json); `csv`: "
        "one row per reading.",
    )
    since = AwareDateTimeField(
        required=False,
        allow_null=True,
        help_text="Only readings measured at or after this time (ISO 8601 with its offset; from "
        "a form, a time without one is in TIME_ZONE).",
    )
    until = AwareDateTimeField(
        required=False,
        allow_null=True,
        help_text="Only readings measured at or before this time (ISO 8601 with its offset; from "
        "a form, a time without one is in TIME_ZONE).",
    )


class ExportSerializer(serializers.ModelSerializer):
    patient = serializers.UUIDField(source="patient_uuid", read_only=True)
    requested_by = serializers.CharField(
        source="requested_by.username", read_only=True, allow_null=True, default=None
    )
    status_url = serializers.SerializerMethodField(help_text="This export's status.")
    result_url = serializers.SerializerMethodField(
        help_text="The file, once `status` is `success` (409 before, 410 once expired)."
    )

    class Meta:
        model = Export
        fields = [
            "id",
            "status",
            "format",
            "patient",
            "since",
            "until",
            "requested_by",
            "created_at",
            "started_at",
            "finished_at",
            "row_count",
            "error",
            "expires_at",
            "status_url",
            "result_url",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "row_count": {"help_text": "Readings in the file; null until it succeeded."},
            "error": {"help_text": "Why it failed; empty otherwise."},
            "expires_at": {"help_text": "When the export and its file are deleted."},
        }

    def _url(self, name: str, export: Export) -> str:
        return reverse(name, kwargs={"export_id": export.id}, request=self.context.get("request"))

    def get_status_url(self, export: Export) -> str:
        return self._url("api:export-detail", export)

    def get_result_url(self, export: Export) -> str:
        return self._url("api:export-result", export)
