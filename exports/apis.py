"""Export endpoints and the FHIR Observation search. Thin: parsing and rendering here, the
logic in selectors and services."""

import io
import uuid

from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_safe
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.pagination import PageNumberPagination
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access.models import PatientAccess
from access.services import patient_access_record
from core.exceptions import InvalidParameter, slash_redirect, unknown_path
from exports.fhir import (
    FHIR_JSON,
    BundleWriter,
    bundle_header,
    capability_statement,
    operation_outcome,
)
from exports.fhir_search import (
    MAX_COUNT,
    PREFIXES,
    code_kinds,
    count_parse,
    cursor_decode,
    cursor_encode,
    date_range,
)
from exports.models import Export
from exports.selectors import export_get, export_list, export_result_get, observation_search
from exports.serializers import ExportRequestSerializer, ExportSerializer
from exports.services import export_request
from vitals.patient_selectors import patient_get

_ERROR = {"$ref": "#/components/schemas/Error"}


class ExportPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class IgnoreAcceptNegotiation(BaseContentNegotiation):
    """For views whose success is not a rendered body (a file, a FHIR Bundle): the client's
    Accept (say `application/fhir+json`) must not turn the request into a 406; their errors
    are JSON, in the API's one shape."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


_PATIENT_UUID = OpenApiParameter(
    "patient_uuid", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The patient's uuid."
)
_EXPORT_ID = OpenApiParameter(
    "export_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The export's id."
)


@extend_schema(parameters=[_PATIENT_UUID])
class PatientExportsView(generics.ListCreateAPIView):
    """A patient's exports: POST asks for one (it runs in the background), GET lists yours."""

    serializer_class = ExportSerializer
    pagination_class = ExportPagination
    queryset = Export.objects.none()  # for schema generation; get_queryset is what runs

    def get_serializer_class(self):
        # The browsable API's form shows the request's fields.
        return ExportRequestSerializer if self.request.method == "POST" else ExportSerializer

    def get_queryset(self):
        patient = patient_get(patient_uuid=self.kwargs["patient_uuid"])
        patient_access_record(
            user=self.request.user, patient=patient, kind=PatientAccess.Kind.EXPORTS
        )
        return export_list(user=self.request.user, patient=patient)

    @extend_schema(summary="Your exports of this patient (every one for staff), newest first.")
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=ExportRequestSerializer,
        responses={202: ExportSerializer},
        summary="Export the patient's readings (FHIR or CSV) in the background: 202 with the "
        "export's id, its status URL (also in Location) and its result URL.",
    )
    def post(self, request: Request, patient_uuid: str) -> Response:
        patient = patient_get(patient_uuid=patient_uuid)
        body = ExportRequestSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        export = export_request(user=request.user, patient=patient, **body.validated_data)
        patient_access_record(user=request.user, patient=patient, kind=PatientAccess.Kind.EXPORTS)
        data = ExportSerializer(export, context=self.get_serializer_context()).data
        return Response(
            data, status=status.HTTP_202_ACCEPTED, headers={"Location": data["status_url"]}
        )


@extend_schema(parameters=[_EXPORT_ID])
class ExportViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Your exports (every one for staff), newest first; one's status; its file."""

    serializer_class = ExportSerializer
    pagination_class = ExportPagination
    lookup_url_kwarg = "export_id"
    # Anything up to the next slash reaches get_object, which answers 404 in the API's shape.
    lookup_value_regex = "[^/]+"
    queryset = Export.objects.none()  # for schema generation; get_queryset is what runs

    def get_queryset(self):
        return export_list(user=self.request.user)

    def get_object(self) -> Export:
        export = export_get(export_id=self.kwargs["export_id"], user=self.request.user)
        self.check_object_permissions(self.request, export)
        return export

    @extend_schema(
        responses={
            (200, FHIR_JSON): OpenApiTypes.BINARY,
            (200, "text/csv"): OpenApiTypes.BINARY,
            (409, "application/json"): _ERROR,
            (410, "application/json"): _ERROR,
        },
        summary="The export's file, once its status is success: a FHIR R4 Bundle "
        "(application/fhir+json) or CSV, as an attachment. 409 while pending or running or "
        "after a failure, 410 once expired.",
    )
    @action(
        detail=True,
        methods=["get"],
        renderer_classes=[JSONRenderer],
        content_negotiation_class=IgnoreAcceptNegotiation,
    )
    def result(self, request: Request, export_id: str) -> FileResponse:
        export = self.get_object()
        result = export_result_get(export=export)
        # The file is the patient's readings leaving the system: recorded as it is handed out.
        patient_access_record(
            user=request.user, patient=export.patient, kind=PatientAccess.Kind.EXPORTS
        )
        return FileResponse(
            result.path.open("rb"),
            as_attachment=True,
            filename=result.filename,
            content_type=result.content_type,
        )


BUNDLE_SCHEMA = {
    "type": "object",
    "description": "A FHIR R4 Bundle of type searchset: the matching Observations (entry[]."
    "resource), `total`, and `link`s `self` and, unless this is the last page, `next`.",
    "required": ["resourceType", "id", "type", "total", "link"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["Bundle"]},
        "id": {"type": "string"},
        "meta": {"type": "object"},
        "type": {"type": "string", "enum": ["searchset"]},
        "timestamp": {"type": "string"},
        "total": {"type": "integer", "minimum": 0},
        "link": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["relation", "url"],
                "properties": {"relation": {"type": "string"}, "url": {"type": "string"}},
            },
        },
        "entry": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["fullUrl", "resource", "search"],
                "properties": {
                    "fullUrl": {"type": "string"},
                    "resource": {"type": "object"},
                    "search": {"type": "object"},
                },
            },
        },
    },
}


class FhirObservationSearchView(APIView):
    """FHIR R4 search of the readings as vital-signs Observations, for FHIR clients that pull
    without an export job."""

    renderer_classes = [JSONRenderer]
    content_negotiation_class = IgnoreAcceptNegotiation

    @extend_schema(
        operation_id="fhir_observation_search",
        summary="FHIR R4 search: a patient's readings as vital-signs Observations (and NEWS2), "
        "oldest first, in a searchset Bundle of `_count` entries with a `next` link.",
        parameters=[
            OpenApiParameter(
                "patient",
                OpenApiTypes.UUID,
                required=True,
                description="The patient's uuid (`Patient/<uuid>` is taken too).",
            ),
            OpenApiParameter(
                "date",
                str,
                many=True,
                description=f"Repeatable: a prefix ({', '.join(PREFIXES)}; none is eq) and a "
                "date or a time with its offset: `ge2026-11-23T10:00:00Z`, `le2026-11-23`.",
            ),
            OpenApiParameter(
                "code",
                str,
                many=True,
                description="`[system|]code`, comma-separated for either, repeated for all: "
                "`http://loinc.org|8867-4`, `8310-5`, `http://snomed.info/sct|1104051000000101`.",
            ),
            OpenApiParameter(
                "_count",
                {"type": "integer", "minimum": 1},
                description=f"Entries per page (default 100; more than {MAX_COUNT} is served "
                f"as {MAX_COUNT}).",
            ),
            OpenApiParameter(
                "_cursor", str, description="Where the page starts: from the `next` link."
            ),
        ],
        responses={(200, FHIR_JSON): BUNDLE_SCHEMA},
    )
    def get(self, request: Request) -> HttpResponse:
        params = request.query_params
        reference = params.get("patient")
        if not reference:
            raise InvalidParameter("'patient' is required: the patient's uuid.")
        patient = patient_get(
            patient_uuid=reference.removeprefix("Patient/").removeprefix("urn:uuid:")
        )
        patient_access_record(user=request.user, patient=patient, kind=PatientAccess.Kind.FHIR)
        count = count_parse(params.get("_count"))
        cursor = cursor_decode(params["_cursor"]) if params.get("_cursor") else None
        page = observation_search(
            patient=patient,
            kinds=code_kinds(params.getlist("code")),
            during=date_range(params.getlist("date")),
            count=count,
            cursor=cursor,
        )
        links = [{"relation": "self", "url": request.build_absolute_uri()}]
        if page.next_cursor is not None:
            query = params.copy()
            query["_cursor"] = cursor_encode(*page.next_cursor)
            links.append(
                {
                    "relation": "next",
                    "url": f"{request.build_absolute_uri(request.path)}?{query.urlencode()}",
                }
            )
        out = io.StringIO()
        bundle = BundleWriter(
            out,
            bundle_header(
                type="searchset",
                bundle_id=str(uuid.uuid4()),
                timestamp=timezone.now(),
                total=page.total,
                link=links,
            ),
        )
        for entry in page.entries:
            bundle.write(entry)
        bundle.close()
        return HttpResponse(out.getvalue(), content_type=FHIR_JSON)


@require_safe
def fhir_metadata(request: HttpRequest) -> HttpResponse:
    """GET [base]/metadata: the CapabilityStatement, open to anyone as FHIR expects (it says
    what the server does, nothing about patients)."""
    base_url = request.build_absolute_uri(reverse("fhir:metadata")).removesuffix("/metadata")
    return JsonResponse(capability_statement(base_url=base_url), content_type=FHIR_JSON)


@unknown_path
def fhir_unknown_path(request: HttpRequest, url: str = "") -> HttpResponse:
    """Every other path under /fhir/: an OperationOutcome `not-found` (with DEBUG too, where
    Django's handler404 would give its HTML page)."""
    if redirect := slash_redirect(request):
        return redirect
    outcome = operation_outcome(
        code="not-found",
        diagnostics=f"No such resource: {request.path}. This FHIR server serves "
        f"{reverse('fhir:metadata')} and {reverse('fhir:observation-search')}.",
    )
    return JsonResponse(outcome, status=404, content_type=FHIR_JSON)
