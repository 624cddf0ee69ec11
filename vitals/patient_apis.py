"""Patient endpoints. Thin: parsing and rendering here, the queries in the selectors."""

from collections.abc import Callable

import msgspec
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse

from access.models import PatientAccess
from access.services import patient_access_record
from core.exceptions import IcuError
from core.pagination import SignedCursorPagination
from core.renderers import BrowsableAPIRenderer, FastJSONRenderer, json_encode
from patients.models import Patient
from vitals.patient_selectors import (
    PATIENT_ORDERINGS,
    ReadingPage,
    TilePage,
    patient_get,
    patient_list,
    uuid_parse,
)
from vitals.patient_serializers import (
    PATIENT_LINKS,
    PatientLinkField,
    PatientRenameSerializer,
    PatientSerializer,
)
from vitals.selectors import alarm_limits_get, reading_trend
from vitals.serializers import (
    AlarmLimitsSerializer,
    AlarmOffSerializer,
    ReadingFilterSerializer,
    ReadingSerializer,
    ReadingTrendSerializer,
    TrendFilterSerializer,
    reading_data,
)
from vitals.services import (
    alarm_limits_update,
    alarm_switch_off,
    alarm_switch_on,
    patient_monitoring_end,
    patient_name_confirm,
    patient_rename,
)
from vitals.tile_services import tile_key


class PatientPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class ReadingPagination(SignedCursorPagination):
    """Newest first. A cursor, not page numbers: new readings arriving while a client pages
    through history do not shift the pages."""

    ordering = "-measured_at"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


_PATIENT_UUID = OpenApiParameter(
    "patient_uuid", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The patient's uuid."
)
_ORDERING = OpenApiParameter(
    "ordering",
    OpenApiTypes.STR,
    enum=list(PATIENT_ORDERINGS),
    description="`name` (default) or `-news2`: the most acute first (by the NEWS2 of the "
    "latest reading; patients without one last).",
)

_UNIT = OpenApiParameter(
    "unit",
    OpenApiTypes.STR,
    description="Only the patients in a bed of the unit with this code (an unknown code: none).",
)

_MRN = OpenApiParameter(
    "mrn",
    OpenApiTypes.STR,
    description="Only the patient(s) with this hospital identifier (MRN, HL7 PID-3.1), exact.",
)

_MRN_AUTHORITY = OpenApiParameter(
    "mrn_authority",
    OpenApiTypes.STR,
    description="Only the patients whose MRN this authority assigned (PID-3.4), exact: with "
    "`mrn`, one patient at most.",
)


@extend_schema(parameters=[_PATIENT_UUID])
class PatientViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Patients, each with their latest reading."""

    serializer_class = PatientSerializer
    pagination_class = PatientPagination
    lookup_field = "uuid"
    lookup_url_kwarg = "patient_uuid"
    # Anything up to the next slash reaches get_object, which answers 400 for a malformed uuid
    # instead of the router's HTML 404.
    lookup_value_regex = "[^/]+"
    queryset = Patient.objects.none()  # for schema generation; get_queryset is what runs

    def get_queryset(self):
        params = self.request.query_params
        return patient_list(
            ordering=params.get("ordering", "name"),
            unit=params.get("unit"),
            mrn=params.get("mrn"),
            mrn_authority=params.get("mrn_authority"),
        )

    # The ward list from the snapshot (patients.models.PatientTile); False: built as before,
    # for each patient (what the snapshot is tested equal to).
    snapshot = True

    @extend_schema(parameters=[_ORDERING, _UNIT, _MRN, _MRN_AUTHORITY])
    def list(self, request: Request, *args, **kwargs) -> Response:
        renderer = request.accepted_renderer
        if not (
            self.snapshot
            and isinstance(renderer, FastJSONRenderer)
            and renderer.get_indent(request.accepted_media_type, {}) is None
        ):
            return super().list(request, *args, **kwargs)
        params = request.query_params
        rows = TilePage(
            ordering=params.get("ordering", "name"),
            unit=params.get("unit"),
            mrn=params.get("mrn"),
            mrn_authority=params.get("mrn_authority"),
        )
        page = self.paginate_queryset(rows)
        # Each link's URL for this request, reversed once (as PatientLinkField does), as a JSON
        # string split where a patient's uuid goes.
        links = []
        for name in PATIENT_LINKS:
            url = reverse(
                PatientSerializer._declared_fields[name].view_name,
                kwargs={"patient_uuid": PatientLinkField.PLACEHOLDER},
                request=request,
                format=self.format_kwarg,
            )
            links.append(json_encode(url).decode().split(PatientLinkField.PLACEHOLDER))
        return self.get_paginated_response(_ward_entries(page, links, self.get_serializer))

    def get_renderers(self) -> list:
        # The ward list (the central station's poll) in msgspec's C encoder: the same bytes.
        if getattr(self, "action", None) == "list":
            return [FastJSONRenderer(), BrowsableAPIRenderer()]
        return super().get_renderers()

    def get_object(self, *, plain: bool = False) -> Patient:
        patient = patient_get(patient_uuid=self.kwargs[self.lookup_url_kwarg], plain=plain)
        self.check_object_permissions(self.request, patient)
        return patient

    def retrieve(self, request: Request, *args, **kwargs) -> Response:
        patient = self.get_object()
        patient_access_record(user=request.user, patient=patient, kind=PatientAccess.Kind.PATIENT)
        return Response(self.get_serializer(patient).data)

    @extend_schema(
        parameters=[ReadingFilterSerializer],
        responses=ReadingSerializer(many=True),
        summary="A patient's readings, newest first, optionally between two times.",
    )
    @action(
        detail=True,
        methods=["get"],
        serializer_class=ReadingSerializer,
        pagination_class=ReadingPagination,
        renderer_classes=[FastJSONRenderer, BrowsableAPIRenderer],
    )
    def metrics(self, request: Request, patient_uuid: str) -> Response:
        # The patient is found in the page's own query (by uuid): two queries, the token's and
        # the page's, as a client's raw SQL would. Read on its own only for an empty page (an
        # unknown patient: 404) and for a request that fails (the answers as before: 404 for
        # an unknown patient before 400 for its parameters).
        parsed = uuid_parse(patient_uuid, name="patient uuid")
        filters = ReadingFilterSerializer(data=request.query_params)
        try:
            filters.is_valid(raise_exception=True)
            # Plain rows (reading_values' rows, read by ReadingPage) and reading_data, not
            # models and the serializer (the same answer, tested): a page is up to 1,000
            # readings.
            page = self.paginate_queryset(
                ReadingPage(patient_uuid=parsed, **filters.validated_data)
            )
        except (APIException, IcuError):  # a 400: a 404 first for an unknown patient
            self._metrics_read(request, self.get_object(plain=True))
            raise
        if page:
            patient = Patient(pk=page[0]["patient_id"], uuid=parsed)
            self.check_object_permissions(request, patient)
        else:
            patient = self.get_object(plain=True)
        self._metrics_read(request, patient)
        tz = timezone.get_current_timezone()
        return self.get_paginated_response([reading_data(row, tz=tz) for row in page])

    @staticmethod
    def _metrics_read(request: Request, patient: Patient) -> None:
        patient_access_record(user=request.user, patient=patient, kind=PatientAccess.Kind.METRICS)

    @extend_schema(
        parameters=[TrendFilterSerializer],
        responses=ReadingTrendSerializer,
        summary="A patient's readings summarised over time, for charts: at most `points` "
        "buckets, each with every sign's min, max and mean (sensor artefacts left out).",
    )
    @action(
        detail=True,
        methods=["get"],
        serializer_class=ReadingTrendSerializer,
        pagination_class=None,
    )
    def trend(self, request: Request, patient_uuid: str) -> Response:
        patient = self.get_object(plain=True)
        patient_access_record(user=request.user, patient=patient, kind=PatientAccess.Kind.TREND)
        filters = TrendFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return Response(
            ReadingTrendSerializer(reading_trend(patient=patient, **filters.validated_data)).data
        )

    @extend_schema(
        request=AlarmLimitsSerializer,
        responses=AlarmLimitsSerializer,
        summary="A patient's alarm limits: GET them, PUT all of them, PATCH some.",
    )
    @action(
        detail=True,
        methods=["get", "put", "patch"],
        url_path="alarm-limits",
        url_name="alarm-limits",
        serializer_class=AlarmLimitsSerializer,
        pagination_class=None,
    )
    def alarm_limits(self, request: Request, patient_uuid: str) -> Response:
        patient = self.get_object()
        limits = alarm_limits_get(patient=patient)
        if request.method == "GET":
            return Response(AlarmLimitsSerializer(limits).data)
        serializer = AlarmLimitsSerializer(
            limits, data=request.data, partial=request.method == "PATCH"
        )
        serializer.is_valid(raise_exception=True)
        limits = alarm_limits_update(
            patient=patient, user=request.user, **serializer.validated_data
        )
        return Response(AlarmLimitsSerializer(limits).data)

    @extend_schema(
        request=None,
        responses=PatientSerializer,
        summary="End a patient's monitoring (the monitor is taken off): no `no_data` alarm is "
        "raised for them any more and the open one is resolved; audited. The next reading "
        "from a monitor starts it again. Ending it twice changes nothing.",
    )
    @action(
        detail=True,
        methods=["post"],
        url_path="monitoring/end",
        url_name="monitoring-end",
        pagination_class=None,
    )
    def monitoring_end(self, request: Request, patient_uuid: str) -> Response:
        patient = patient_monitoring_end(patient=self.get_object(), user=request.user)
        patient = patient_get(patient_uuid=patient.uuid)
        return Response(PatientSerializer(patient, context=self.get_serializer_context()).data)

    @extend_schema(
        request=None,
        responses=PatientSerializer,
        summary="Keep the patient's name: dismiss the other names monitors sent (audited).",
    )
    @action(detail=True, methods=["post"], url_path="confirm-name", url_name="confirm-name")
    def confirm_name(self, request: Request, patient_uuid: str) -> Response:
        patient = patient_name_confirm(patient=self.get_object(), user=request.user)
        return Response(self.get_serializer(patient_get(patient_uuid=patient.uuid)).data)

    @extend_schema(
        request=PatientRenameSerializer,
        responses=PatientSerializer,
        summary="Rename the patient (e.g. to the name a monitor sends), closing the other "
        "names seen (audited).",
    )
    @action(detail=True, methods=["post"])
    def rename(self, request: Request, patient_uuid: str) -> Response:
        patient = self.get_object()
        serializer = PatientRenameSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        patient = patient_rename(
            patient=patient, user=request.user, name=serializer.validated_data["name"]
        )
        return Response(self.get_serializer(patient_get(patient_uuid=patient.uuid)).data)

    @extend_schema(
        request=AlarmOffSerializer,
        responses={201: AlarmOffSerializer},
        summary="Switch a limit alarm off (ALARM OFF), with the reason; an open alarm of that "
        "kind resolves. 400 for news2, asystole and technical alarms.",
    )
    @action(
        detail=True,
        methods=["post"],
        url_path="alarms-off",
        url_name="alarms-off",
        serializer_class=AlarmOffSerializer,
        pagination_class=None,
    )
    def alarms_off(self, request: Request, patient_uuid: str) -> Response:
        patient = self.get_object()
        serializer = AlarmOffSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        off = alarm_switch_off(patient=patient, user=request.user, **serializer.validated_data)
        return Response(AlarmOffSerializer(off).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "kind", OpenApiTypes.STR, OpenApiParameter.PATH, description="The alarm's kind."
            )
        ],
        request=None,
        responses={204: None},
        summary="Switch a limit alarm back on (nothing to do if it is on).",
    )
    @action(
        detail=True,
        methods=["delete"],
        url_path=r"alarms-off/(?P<kind>[^/.]+)",
        url_name="alarm-off",
        pagination_class=None,
    )
    def alarm_on(self, request: Request, patient_uuid: str, kind: str) -> Response:
        alarm_switch_on(patient=self.get_object(), kind=kind, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _ward_entries(rows: list[tuple], links: list[list[str]], serializer: Callable) -> list:
    """The entries of the ward list's page `rows` (patient_tile_rows): each patient's tile
    with the request's `links`, as msgspec.Raw (encoded already); a patient without a tile of
    the current key (no tile yet, another time zone or layout) built as before, by
    `serializer()`. The same bytes either way (tested)."""
    (url, url_end), (metrics, metrics_end), (limits, limits_end), (end, end_end) = links
    key = tile_key()
    entries: list = []
    missing: dict[int, int] = {}  # patient id -> index in entries
    for pk, patient_uuid, tile_key_, head, middle, tail, ended_by in rows:
        if tile_key_ != key:
            missing[pk] = len(entries)
            entries.append(None)
            continue
        u = str(patient_uuid)
        entries.append(
            msgspec.Raw(
                "".join(
                    (
                        head, url, u, url_end,
                        ',"metrics_url":', metrics, u, metrics_end,
                        ',"alarm_limits_url":', limits, u, limits_end,
                        middle, "null" if ended_by is None else json_encode(ended_by).decode(),
                        ',"monitoring_end_url":', end, u, end_end,
                        tail,
                    )
                ).encode()
            )
        )  # fmt: skip
    if missing:
        build = serializer()
        for patient in patient_list().filter(pk__in=missing):
            entries[missing[patient.pk]] = build.to_representation(patient)
    return entries


class BriefPatientViewSet(PatientViewSet):
    """The original brief's paths (`patients`, `patient/{uuid}/metrics`): same data, same code.
    Left out of the OpenAPI schema so that each operation is described once."""

    schema = None
