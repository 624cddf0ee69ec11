from datetime import tzinfo

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from patients.models import Patient
from vitals.contract import patient_name_parse
from vitals.errors import InvalidReading
from vitals.selectors import alarm_off_items
from vitals.serializers import (
    AlarmOffSerializer,
    News2Serializer,
    OpenAlarmSerializer,
    ReadingSerializer,
    alarm_off_data,
    api_datetime,
    news2_data,
    open_alarm_data,
)
from vitals.signs import SIGNS


class PatientLinkField(serializers.HyperlinkedIdentityField):
    """A link of a patient's, reversed once per response and filled in with each patient's uuid:
    the ward list has three links a patient, and Django's reverse() for each was 40% of the
    list's time (bench/api_scale.py). The same URL as HyperlinkedIdentityField's (tested)."""

    PLACEHOLDER = "00000000-0000-4000-8000-000000000000"

    def __init__(self, view_name: str) -> None:
        super().__init__(view_name=view_name, lookup_field="uuid", lookup_url_kwarg="patient_uuid")
        self._template: tuple[object, str] | None = None

    def get_url(self, obj: Patient, view_name: str, request, format) -> str:
        if self._template is None or self._template[0] is not request:
            kwargs = {self.lookup_url_kwarg: self.PLACEHOLDER}
            url = self.reverse(view_name, kwargs=kwargs, request=request, format=format)
            self._template = (request, url)
        return self._template[1].replace(self.PLACEHOLDER, str(obj.uuid))

    def url_of(self, patient: Patient) -> str:
        """to_representation's URL as a plain str (not a Hyperlink, its str subclass), without
        its per-call checks: PatientSerializer.to_representation's."""
        return self.get_url(patient, self.view_name, self.context.get("request"),
                            self.context.get("format"))  # fmt: skip


class NameConflictSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The name a monitor sent (NFC).")
    first_seen_at = serializers.DateTimeField()
    last_seen_at = serializers.DateTimeField()
    count = serializers.IntegerField(help_text="Readings stored with this name.")


class PatientRenameSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The patient's new name (the contract's name rule).")

    def validate_name(self, value: str) -> str:
        try:
            return patient_name_parse(raw=value)
        except InvalidReading as exc:
            raise serializers.ValidationError(exc.message) from None


def _latest(name: str, value: serializers.Field) -> type[serializers.Serializer]:
    return type(
        name,
        (serializers.Serializer,),
        {
            "value": value,
            "measured_at": serializers.DateTimeField(help_text="When it was measured."),
        },
    )


_LATEST_KINDS = {
    "whole": _latest("LatestWholeNumberSign", serializers.IntegerField()),
    "decimal": _latest("LatestDecimalSign", serializers.FloatField()),
    "consciousness": _latest("LatestConsciousness", serializers.CharField(help_text="ACVPU.")),
    "on_oxygen": _latest("LatestOnOxygen", serializers.BooleanField()),
}


def _latest_field(kind: str, help_text: str) -> serializers.Serializer:
    return _LATEST_KINDS[kind](required=False, help_text=help_text)


# The schema of Patient.latest_signs (served as stored, not through this serializer): each
# sign of vitals/signs.py, and the NEWS2 observations, when the patient has had one.
LatestSignsSerializer = type(
    "LatestSignsSerializer",
    (serializers.Serializer,),
    {
        **{
            sign.key: _latest_field(
                "whole" if sign.is_integer else "decimal",
                f"{sign.label}, {sign.unit}: its newest value.",
            )
            for sign in SIGNS
        },
        "consciousness": _latest_field("consciousness", "Consciousness (ACVPU)."),
        "on_oxygen": _latest_field("on_oxygen", "On supplemental oxygen."),
    },
)


class PatientSerializer(serializers.ModelSerializer):
    url = PatientLinkField("api:patient-detail")
    metrics_url = PatientLinkField("api:patient-metrics")
    alarm_limits_url = PatientLinkField("api:patient-alarm-limits")
    latest_metric = ReadingSerializer(
        read_only=True, allow_null=True, help_text="The newest reading, null before the first."
    )
    news2 = serializers.SerializerMethodField(help_text="NEWS2 of the latest reading.")
    latest_signs = serializers.SerializerMethodField(
        help_text='Each sign\'s newest value and when it was measured: {"spo2": {"value": 97, '
        '"measured_at": "..."}, ...}; a reading may carry only some signs, and a sign never '
        "measured is absent."
    )
    name_conflicts = NameConflictSerializer(
        source="open_name_conflicts",
        many=True,
        read_only=True,
        help_text="Other names monitors sent for this patient (the uuid), oldest first: shown "
        "until a clinician confirms the name or renames the patient.",
    )
    active_alarms = OpenAlarmSerializer(
        source="open_alarms",
        many=True,
        read_only=True,
        help_text="Open (active or acknowledged) alarms, most urgent first.",
    )
    monitoring_ended_by = serializers.CharField(
        source="monitoring_ended_by.username", read_only=True, allow_null=True, default=None
    )
    monitoring_end_url = PatientLinkField("api:patient-monitoring-end")
    alarms_off = serializers.SerializerMethodField(
        help_text="The limit alarms switched off (ALARM OFF), by kind: they do not sound."
    )

    class Meta:
        model = Patient
        fields = [
            "uuid",
            "name",
            "mrn",
            "mrn_authority",
            "name_conflicts",
            "url",
            "metrics_url",
            "alarm_limits_url",
            "hypercapnic_respiratory_failure",
            "monitoring_ended_at",
            "monitoring_ended_by",
            "monitoring_end_url",
            "created_at",
            "updated_at",
            "news2",
            "active_alarms",
            "alarms_off",
            "latest_metric",
            "latest_signs",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "mrn": {
                "help_text": "The hospital's identifier of the patient (HL7 PID-3.1, from the "
                "device gateway); blank for a patient known only by a monitor's uuid."
            },
            "mrn_authority": {
                "help_text": "The authority that assigned the MRN (PID-3.4); may be blank."
            },
        }

    def to_representation(self, patient: Patient) -> dict:
        """Built directly, not by DRF's walk over the fields (which still document the schema):
        the ward list is 50 to 500 of these a poll, and the walk was a third of its time
        (bench/api_scale.py). Tested equal to the walk, field by field and in order
        (patients/tests/test_api.py)."""
        fields = self.fields
        urls = {name: fields[name].url_of(patient) for name in PATIENT_LINKS}
        ended_by = patient.monitoring_ended_by
        return patient_data(
            patient,
            tz=timezone.get_current_timezone(),
            urls=urls,
            ended_by=None if ended_by is None else ended_by.username,
        )

    @extend_schema_field(AlarmOffSerializer(many=True))
    def get_alarms_off(self, patient: Patient) -> list[dict]:
        items = patient.alarms_off_items  # patient_list's annotation: no query per patient
        return AlarmOffSerializer(alarm_off_items(items), many=True).data if items else []

    @extend_schema_field(LatestSignsSerializer)
    def get_latest_signs(self, patient: Patient) -> dict:
        return patient.latest_signs

    @extend_schema_field(News2Serializer(allow_null=True))
    def get_news2(self, patient: Patient) -> dict | None:
        latest = patient.latest_metric
        return news2_data(latest.news2) if latest else None


_READING = ReadingSerializer()

# The links of a patient's entry, in the order of its fields.
PATIENT_LINKS = ("url", "metrics_url", "alarm_limits_url", "monitoring_end_url")


def patient_data(
    patient: Patient, *, tz: tzinfo, urls: dict[str, object], ended_by: str | None
) -> dict:
    """PatientSerializer's representation of a patient as patient_list reads them, with the
    links (`urls`) and the username of whoever ended the monitoring given: what depends on the
    request, and on the user's row. Also what the ward's snapshot encodes
    (vitals.tile_services)."""
    latest = patient.latest_metric
    reading = None if latest is None else _READING.to_representation(latest)
    ended_at = patient.monitoring_ended_at
    return {
        "uuid": str(patient.uuid),
        "name": patient.name,
        "mrn": patient.mrn,
        "mrn_authority": patient.mrn_authority,
        "name_conflicts": [
            {
                "name": conflict["name"],
                "first_seen_at": api_datetime(conflict["first_seen_at"], tz),
                "last_seen_at": api_datetime(conflict["last_seen_at"], tz),
                "count": conflict["count"],
            }
            for conflict in patient.open_name_conflicts
        ],
        "url": urls["url"],
        "metrics_url": urls["metrics_url"],
        "alarm_limits_url": urls["alarm_limits_url"],
        "hypercapnic_respiratory_failure": patient.hypercapnic_respiratory_failure,
        "monitoring_ended_at": None if ended_at is None else api_datetime(ended_at, tz),
        "monitoring_ended_by": ended_by,
        "monitoring_end_url": urls["monitoring_end_url"],
        "created_at": api_datetime(patient.created_at, tz),
        "updated_at": api_datetime(patient.updated_at, tz),
        "news2": None if reading is None else reading["news2"],
        "active_alarms": [open_alarm_data(alarm, tz=tz) for alarm in patient.open_alarms],
        "alarms_off": [
            alarm_off_data(item, tz=tz) for item in alarm_off_items(patient.alarms_off_items)
        ],
        "latest_metric": reading,
        "latest_signs": patient.latest_signs,
    }
