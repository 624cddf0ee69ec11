"""The access log for staff: who read which patient's data. Thin."""

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response

from access.models import PatientAccess
from access.selectors import patient_access_list
from access.serializers import PatientAccessFilterSerializer, PatientAccessSerializer


class AccessPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class PatientAccessViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Who read which patient's data (staff only), newest first: one row per user, patient,
    kind of read and ACCESS_LOG_WINDOW."""

    serializer_class = PatientAccessSerializer
    pagination_class = AccessPagination
    queryset = PatientAccess.objects.none()  # for schema generation; get_queryset is what runs

    def get_queryset(self):
        filters = PatientAccessFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        return patient_access_list(patient_uuid=data.get("patient"), username=data.get("user"))

    @extend_schema(parameters=[PatientAccessFilterSerializer])
    def list(self, request: Request, *args, **kwargs) -> Response:
        return super().list(request, *args, **kwargs)
