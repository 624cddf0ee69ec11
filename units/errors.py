"""Admissions refused: the bed is taken, the patient is in a bed already, or in none."""

from rest_framework import status

from core.exceptions import IcuError


class UnitNotFound(IcuError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "unit_not_found"
    default_message = "No such unit."


class BedNotFound(IcuError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "bed_not_found"
    default_message = "No such bed."


class BedOccupied(IcuError):
    """Another patient has an open admission to the bed (two clicks at once: the database's
    one-open-admission-per-bed constraint decides)."""

    status_code = status.HTTP_409_CONFLICT
    code = "bed_occupied"
    default_message = "The bed is occupied."


class AlreadyAdmitted(IcuError):
    """Admitting a patient who has an open admission: transfer them instead."""

    status_code = status.HTTP_409_CONFLICT
    code = "already_admitted"
    default_message = "The patient is already admitted: transfer them."


class NotAdmitted(IcuError):
    """Transferring or discharging a patient who has no open admission."""

    status_code = status.HTTP_409_CONFLICT
    code = "not_admitted"
    default_message = "The patient is not admitted."
