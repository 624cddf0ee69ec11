"""Alarm endpoints. Thin: parsing and rendering here, the logic in selectors and services."""

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response

from access.models import PatientAccess
from access.services import patient_access_record
from vitals.models import Alarm, AuditEvent
from vitals.patient_selectors import patient_get
from vitals.selectors import alarm_get, alarm_list, audit_event_list
from vitals.serializers import (
    AlarmAcknowledgeSerializer,
    AlarmFilterSerializer,
    AlarmSerializer,
    AuditEventSerializer,
    AuditFilterSerializer,
)
from vitals.services import alarm_acknowledge


class AlarmPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class AlarmViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Alarms raised by the consumer, newest first."""

    serializer_class = AlarmSerializer
    pagination_class = AlarmPagination
    queryset = Alarm.objects.none()  # for schema generation; get_queryset is what runs

    def get_queryset(self):
        filters = AlarmFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        patient = patient_get(patient_uuid=data["patient"]) if "patient" in data else None
        # A patient's alarms are their record; the list of every patient's is the ward's.
        patient_access_record(
            user=self.request.user, patient=patient, kind=PatientAccess.Kind.ALARMS
        )
        return alarm_list(
            patient=patient,
            kinds=sorted(data.get("kind", ())),
            states=sorted(data.get("state", ())),
            priorities=sorted(data.get("priority", ())),
            unit=data.get("unit"),
        )

    def get_object(self) -> Alarm:
        alarm = alarm_get(alarm_id=self.kwargs["pk"])
        self.check_object_permissions(self.request, alarm)
        return alarm

    def retrieve(self, request: Request, *args, **kwargs) -> Response:
        alarm = self.get_object()
        patient_access_record(
            user=request.user, patient=alarm.patient, kind=PatientAccess.Kind.ALARMS
        )
        return Response(self.get_serializer(alarm).data)

    @extend_schema(parameters=[AlarmFilterSerializer])
    def list(self, request: Request, *args, **kwargs) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(
        request=AlarmAcknowledgeSerializer,
        responses=AlarmSerializer,
        summary="Acknowledge an active alarm (records who and when); 409 alarm_not_open if it "
        "is resolved, alarm_changed if it ranks above the priority posted (worse meanwhile).",
    )
    @action(detail=True, methods=["post"])
    def acknowledge(self, request: Request, pk: str) -> Response:
        alarm = self.get_object()
        body = AlarmAcknowledgeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        alarm = alarm_acknowledge(
            alarm=alarm,
            user=request.user,
            seen_priority=body.validated_data.get("priority"),
        )
        return Response(self.get_serializer(alarm).data)


class AuditEventViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """The audit trail (staff only): who acknowledged which alarm, who changed which alarm
    limits from what to what; newest first."""

    serializer_class = AuditEventSerializer
    pagination_class = AlarmPagination
    queryset = AuditEvent.objects.none()  # for schema generation; get_queryset is what runs

    def get_queryset(self):
        filters = AuditFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        return audit_event_list(
            patient_uuid=data.get("patient"), actions=sorted(data.get("action", ()))
        )

    @extend_schema(parameters=[AuditFilterSerializer])
    def list(self, request: Request, *args, **kwargs) -> Response:
        return super().list(request, *args, **kwargs)
