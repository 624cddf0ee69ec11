from rest_framework import serializers

from access.models import PatientAccess


class PatientAccessSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="username", read_only=True, help_text="Who (username).")
    patient = serializers.UUIDField(source="patient_uuid", read_only=True)

    class Meta:
        model = PatientAccess
        fields = ["id", "user", "patient", "kind", "window_start", "first_at", "last_at", "count"]
        read_only_fields = fields


class PatientAccessFilterSerializer(serializers.Serializer):
    patient = serializers.UUIDField(required=False, help_text="Only reads of this patient.")
    user = serializers.CharField(
        required=False, max_length=150, help_text="Only reads by this user (username)."
    )
