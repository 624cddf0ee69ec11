from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from patients.models import Patient
from vitals.news2 import news2_of
from vitals.serializers import MetricSerializer, News2Serializer, OpenAlarmSerializer, news2_data


class PatientSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(
        view_name="api:patient-detail", lookup_field="uuid", lookup_url_kwarg="patient_uuid"
    )
    metrics_url = serializers.HyperlinkedIdentityField(
        view_name="api:patient-metrics", lookup_field="uuid", lookup_url_kwarg="patient_uuid"
    )
    alarm_limits_url = serializers.HyperlinkedIdentityField(
        view_name="api:patient-alarm-limits", lookup_field="uuid", lookup_url_kwarg="patient_uuid"
    )
    latest_metric = MetricSerializer(
        read_only=True, allow_null=True, help_text="The newest reading, null before the first."
    )
    news2 = serializers.SerializerMethodField(help_text="NEWS2 of the latest reading.")
    active_alarms = OpenAlarmSerializer(
        source="open_alarms",
        many=True,
        read_only=True,
        help_text="Open (active or acknowledged) alarms, most urgent first.",
    )

    class Meta:
        model = Patient
        fields = [
            "uuid",
            "name",
            "url",
            "metrics_url",
            "alarm_limits_url",
            "hypercapnic_respiratory_failure",
            "created_at",
            "updated_at",
            "news2",
            "active_alarms",
            "latest_metric",
        ]
        read_only_fields = fields

    @extend_schema_field(News2Serializer(allow_null=True))
    def get_news2(self, patient: Patient) -> dict | None:
        latest = patient.latest_metric
        return news2_data(news2_of(latest, spo2_scale=latest.spo2_scale)) if latest else None
