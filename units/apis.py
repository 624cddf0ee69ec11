"""Unit and admission endpoints. Thin: parsing and rendering here, the logic in services and
selectors. Writes are the clinician's (core/permissions.py ROUTES), audited by the services."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from units.selectors import bed_get, unit_board_get, unit_list
from units.serializers import (
    AdmissionSerializer,
    AdmitSerializer,
    DischargeSerializer,
    UnitBoardSerializer,
    UnitSerializer,
)
from units.services import admission_create, admission_discharge, admission_transfer
from vitals.patient_selectors import patient_get

_PATIENT_UUID = OpenApiParameter(
    "patient_uuid", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The patient's uuid."
)


class UnitListView(GenericAPIView):
    """Every unit, with its number of beds and of occupied beds."""

    serializer_class = UnitSerializer
    pagination_class = None

    @extend_schema(operation_id="api_units_list", responses=UnitSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(self.get_serializer(unit_list(), many=True).data)


class UnitDetailView(GenericAPIView):
    """A unit as its central station shows it: every bed in screen order with its patient
    (the patient list's item) or null, and the unassigned monitors."""

    serializer_class = UnitBoardSerializer
    pagination_class = None

    @extend_schema(
        operation_id="api_units_retrieve",
        parameters=[
            OpenApiParameter(
                "code", OpenApiTypes.STR, OpenApiParameter.PATH, description="The unit's code."
            )
        ],
    )
    def get(self, request: Request, code: str) -> Response:
        return Response(self.get_serializer(unit_board_get(code=code)).data)


@extend_schema(parameters=[_PATIENT_UUID])
class _AdmissionView(GenericAPIView):
    serializer_class = AdmitSerializer
    pagination_class = None

    def _answer(self, admission, code: int) -> Response:
        return Response(AdmissionSerializer(admission).data, status=code)


class PatientAdmitView(_AdmissionView):
    @extend_schema(
        request=AdmitSerializer,
        responses={201: AdmissionSerializer},
        summary="Admit the patient to a free bed (audited). 409 `bed_occupied`, "
        "`already_admitted` (transfer instead); 404 `bed_not_found`.",
    )
    def post(self, request: Request, patient_uuid: str) -> Response:
        patient = patient_get(patient_uuid=patient_uuid)
        serializer = AdmitSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        admission = admission_create(
            patient=patient,
            bed=bed_get(bed_id=serializer.validated_data["bed"]),
            by=request.user,
            reason=serializer.validated_data["reason"],
        )
        return self._answer(admission, status.HTTP_201_CREATED)


class PatientTransferView(_AdmissionView):
    @extend_schema(
        request=AdmitSerializer,
        responses={201: AdmissionSerializer},
        summary="Move the admitted patient to another free bed: the admission ends "
        "(`transfer`), the new one (the answer) begins (audited). 409 `not_admitted`, "
        "`bed_occupied`.",
    )
    def post(self, request: Request, patient_uuid: str) -> Response:
        patient = patient_get(patient_uuid=patient_uuid)
        serializer = AdmitSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        admission = admission_transfer(
            patient=patient,
            bed=bed_get(bed_id=serializer.validated_data["bed"]),
            by=request.user,
            reason=serializer.validated_data["reason"],
        )
        return self._answer(admission, status.HTTP_201_CREATED)


class PatientDischargeView(_AdmissionView):
    serializer_class = DischargeSerializer

    @extend_schema(
        request=DischargeSerializer,
        responses={200: AdmissionSerializer},
        summary="Discharge the patient: the admission ends, their open alarms resolve "
        '(reason "discharged"), their monitoring ends; they leave the ward, their history '
        "stays (audited). 409 `not_admitted`.",
    )
    def post(self, request: Request, patient_uuid: str) -> Response:
        patient = patient_get(patient_uuid=patient_uuid)
        serializer = DischargeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        admission = admission_discharge(
            patient=patient, by=request.user, reason=serializer.validated_data["reason"]
        )
        return self._answer(admission, status.HTTP_200_OK)
