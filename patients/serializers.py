from rest_framework import serializers

from patients.models import Patient
from vitals.serializers import MetricSerializer


class PatientSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(
        view_name="api:patient-detail", lookup_field="uuid", lookup_url_kwarg="patient_uuid"
    )
    metrics_url = serializers.HyperlinkedIdentityField(
        view_name="api:patient-metrics", lookup_field="uuid", lookup_url_kwarg="patient_uuid"
    )
    latest_metric = MetricSerializer(
        read_only=True, allow_null=True, help_text="The newest reading, null before the first."
    )

    class Meta:
        model = Patient
        fields = ["uuid", "name", "url", "metrics_url", "created_at", "updated_at", "latest_metric"]
        read_only_fields = fields
