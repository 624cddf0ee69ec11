"""TEMPORARY (issue 18, engineer B): a minimal stand-in for engineer A's units API, so that the
ward's unit view can be built and browser-tested before the branches merge. THE LEAD DROPS THIS
FILE AT MERGE, with its include in ward/urls.py, and points ward/views.py's UNIT_ROUTES at A's
routes. It follows the shapes of common18.md and nothing more: no audit, no discharge effects.

Routes (namespace "ward"): stub-unit-list, stub-unit-detail, stub-patient-admit,
stub-patient-transfer, stub-patient-discharge.
"""

from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef
from django.urls import path
from django.utils import timezone
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.exceptions import IcuError
from core.permissions import ROUTES, Rule
from patients.models import Patient
from units.models import Admission, Bed, Unit
from vitals.patient_selectors import patient_get, patient_list
from vitals.patient_serializers import PatientSerializer

_PATIENT = ("patients.view_patient", "vitals.view_patientmetric", "vitals.view_alarm")
_ADMIT = {"POST": (*_PATIENT, "vitals.acknowledge_alarm")}
ROUTES.update(
    {
        "ward:stub-unit-list": Rule(read=_PATIENT),
        "ward:stub-unit-detail": Rule(read=_PATIENT),
        "ward:stub-patient-admit": Rule(read=_PATIENT, write=_ADMIT),
        "ward:stub-patient-transfer": Rule(read=_PATIENT, write=_ADMIT),
        "ward:stub-patient-discharge": Rule(read=_PATIENT, write=_ADMIT),
    }
)


class Conflict(IcuError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"
    default_message = "Conflict."


def _admission(admission: Admission) -> dict:
    bed = admission.bed
    return {
        "id": admission.pk,
        "patient": str(admission.patient.uuid),
        "bed": {"id": bed.pk, "label": bed.label, "unit": bed.unit.code},
        "admitted_at": admission.admitted_at,
        "discharged_at": admission.discharged_at,
    }


def _open(patient: Patient) -> Admission | None:
    return (
        Admission.objects.select_related("bed__unit", "patient")
        .filter(patient=patient, discharged_at__isnull=True)
        .first()
    )


class UnitList(APIView):
    def get(self, request: Request) -> Response:
        return Response(
            [
                {
                    "code": unit.code,
                    "name": unit.name,
                    "beds": unit.beds.count(),
                    "occupied": Admission.objects.filter(
                        bed__unit=unit, discharged_at__isnull=True
                    ).count(),
                }
                for unit in Unit.objects.all()
            ]
        )


class UnitDetail(APIView):
    def get(self, request: Request, code: str) -> Response:
        unit = Unit.objects.get(code=code)
        beds = list(Bed.objects.filter(unit=unit).order_by("position"))
        occupants = dict(
            Admission.objects.filter(bed__unit=unit, discharged_at__isnull=True).values_list(
                "bed_id", "patient_id"
            )
        )
        context = {"request": request}
        patients = {
            p["id"]: p["data"]
            for p in (
                {"id": patient.pk, "data": PatientSerializer(patient, context=context).data}
                for patient in patient_list().filter(pk__in=occupants.values())
            )
        }
        open_admission = Admission.objects.filter(
            patient=OuterRef("pk"), discharged_at__isnull=True
        )
        discharged_since = Admission.objects.filter(
            patient=OuterRef("pk"), discharged_at__gte=OuterRef("latest_metric__measured_at")
        )
        unassigned = (
            patient_list()
            .filter(latest_metric__isnull=False, monitoring_ended_at__isnull=True)
            .exclude(Exists(open_admission))
            .exclude(Exists(discharged_since))
        )
        return Response(
            {
                "code": unit.code,
                "name": unit.name,
                "beds": [
                    {
                        "id": bed.pk,
                        "label": bed.label,
                        "position": bed.position,
                        "patient": patients.get(occupants.get(bed.pk)),
                    }
                    for bed in beds
                ],
                "unassigned": PatientSerializer(unassigned, many=True, context=context).data,
            }
        )


def _admit(patient: Patient, bed_id: int, user) -> Admission:
    try:
        with transaction.atomic():
            return Admission.objects.create(
                patient=patient,
                bed=Bed.objects.get(pk=bed_id),
                admitted_at=timezone.now(),
                admitted_by=user,
            )
    except IntegrityError:
        raise Conflict("The bed is occupied or the patient already admitted.") from None


class Admit(APIView):
    def post(self, request: Request, patient_uuid: str) -> Response:
        admission = _admit(
            patient_get(patient_uuid=patient_uuid), request.data["bed"], request.user
        )
        return Response(_admission(admission), status=status.HTTP_201_CREATED)


class Transfer(APIView):
    def post(self, request: Request, patient_uuid: str) -> Response:
        patient = patient_get(patient_uuid=patient_uuid)
        with transaction.atomic():
            current = _open(patient)
            if current is None:
                raise Conflict("Not admitted.")
            current.discharged_at, current.end_reason = timezone.now(), "transfer"
            current.save()
            admission = _admit(patient, request.data["bed"], request.user)
        return Response(_admission(admission), status=status.HTTP_201_CREATED)


class Discharge(APIView):
    def post(self, request: Request, patient_uuid: str) -> Response:
        current = _open(patient_get(patient_uuid=patient_uuid))
        if current is None:
            raise Conflict("Not admitted.")
        current.discharged_at, current.end_reason = timezone.now(), "discharge"
        current.discharged_by = request.user
        current.save()
        return Response(_admission(current))


urlpatterns = [
    path("stub-api/units/", UnitList.as_view(), name="stub-unit-list"),
    path("stub-api/units/<slug:code>/", UnitDetail.as_view(), name="stub-unit-detail"),
    path(
        "stub-api/patients/<uuid:patient_uuid>/admit/", Admit.as_view(), name="stub-patient-admit"
    ),
    path(
        "stub-api/patients/<uuid:patient_uuid>/transfer/",
        Transfer.as_view(),
        name="stub-patient-transfer",
    ),
    path(
        "stub-api/patients/<uuid:patient_uuid>/discharge/",
        Discharge.as_view(),
        name="stub-patient-discharge",
    ),
]
