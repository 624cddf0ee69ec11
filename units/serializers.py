from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from units.models import Admission, Unit
from vitals.patient_serializers import PatientSerializer


class UnitSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    beds = serializers.IntegerField(source="bed_count", read_only=True, help_text="Its beds.")
    occupied = serializers.IntegerField(read_only=True, help_text="Beds with a patient in them.")

    class Meta:
        model = Unit
        fields = ["code", "name", "url", "beds", "occupied"]
        read_only_fields = fields

    @extend_schema_field(serializers.URLField())
    def get_url(self, unit: Unit) -> str:
        return reverse(
            "api:unit-detail", kwargs={"code": unit.code}, request=self.context.get("request")
        )


class BedRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    label = serializers.CharField()
    unit = serializers.CharField(source="unit.code", help_text="The unit's code.")


class AdmissionSerializer(serializers.ModelSerializer):
    patient = serializers.UUIDField(source="patient.uuid", read_only=True)
    bed = BedRefSerializer(read_only=True)
    admitted_by = serializers.CharField(
        source="admitted_by.username",
        read_only=True,
        allow_null=True,
        default=None,
        help_text="Null: admitted automatically (AUTO_ADMIT).",
    )
    discharged_by = serializers.CharField(
        source="discharged_by.username", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = Admission
        fields = [
            "id",
            "patient",
            "bed",
            "admitted_at",
            "admitted_by",
            "reason",
            "discharged_at",
            "discharged_by",
            "end_reason",
            "discharge_reason",
        ]
        read_only_fields = fields


class UnitBedSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="bed.pk")
    label = serializers.CharField(source="bed.label")
    position = serializers.IntegerField(source="bed.position")
    admitted_at = serializers.DateTimeField(
        source="admission.admitted_at", allow_null=True, default=None
    )
    patient = PatientSerializer(
        allow_null=True, help_text="The patient in the bed (as in the patient list), or null."
    )


class UnitBoardSerializer(serializers.Serializer):
    code = serializers.CharField(source="unit.code")
    name = serializers.CharField(source="unit.name")
    beds = UnitBedSerializer(many=True, help_text="Every bed, in screen order (`position`).")
    unassigned = PatientSerializer(
        many=True,
        help_text="Unassigned monitors: patients in no bed whose monitoring has not ended and "
        "who sent a reading in the last hour (at most 64, newest first).",
    )


class AdmitSerializer(serializers.Serializer):
    bed = serializers.IntegerField(help_text="The bed's id (from the unit's beds).")
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class DischargeSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
