"""GET alarm-processing/: whether alarms are processed at all (a consumer's alarm sweep heard
lately, by the database's clock). The central station's pages poll it for their "ALARMS NOT
PROCESSED" banner; an SRE reads it too (and the web's /metrics gauges)."""

from django.db import DatabaseError
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.exceptions import IcuError
from vitals.heartbeat_selectors import AlarmProcessingStatus, alarm_processing_status


class AlarmProcessingUnknown(IcuError):
    """The status cannot be read: nobody may say that alarms are processed."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "alarm_processing_unknown"
    default_message = "Whether alarms are processed cannot be read: the database does not answer."


class AlarmProcessingSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "stopped", "never_started"])
    last_heartbeat_at = serializers.DateTimeField(
        allow_null=True, help_text="The latest alarm sweep of any consumer (database clock)."
    )
    checked_at = serializers.DateTimeField(
        allow_null=True, help_text="The database's clock now (null: no heartbeat ever)."
    )
    seconds_since_heartbeat = serializers.FloatField(allow_null=True)
    consumers = serializers.IntegerField(help_text="Consumer processes heard lately.")
    stopped_after_seconds = serializers.FloatField(
        help_text="Silence that counts as stopped (ALARM_PROCESSING_STOPPED_AFTER)."
    )


def alarm_processing_data(found: AlarmProcessingStatus) -> dict:
    return {
        "status": found.status,
        "last_heartbeat_at": found.last_heartbeat_at and found.last_heartbeat_at.isoformat(),
        "checked_at": found.checked_at and found.checked_at.isoformat(),
        "seconds_since_heartbeat": (
            None
            if found.seconds_since_heartbeat is None
            else round(found.seconds_since_heartbeat, 1)
        ),
        "consumers": found.consumers,
        "stopped_after_seconds": found.stopped_after,
    }


class AlarmProcessingView(APIView):
    """Whether alarms are processed: `ok` (a consumer's alarm sweep within
    ALARM_PROCESSING_STOPPED_AFTER seconds), `stopped` (none since `last_heartbeat_at`: no
    alarm is raised, escalated or published) or `never_started`. 503 when it cannot be read."""

    @extend_schema(responses=AlarmProcessingSerializer)
    def get(self, request: Request) -> Response:
        try:
            found = alarm_processing_status()
        except DatabaseError as exc:
            raise AlarmProcessingUnknown from exc
        return Response(alarm_processing_data(found))
