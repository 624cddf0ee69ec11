"""The patients app's errors (identity: a patient that is not there)."""

from rest_framework import status

from core.exceptions import IcuError


class PatientNotFound(IcuError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "patient_not_found"
    default_message = "No patient with this uuid."
