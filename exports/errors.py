"""The exports' errors: an export not found, not ready, failed, expired or lost."""

from rest_framework import status

from core.exceptions import IcuError


class ExportNotFound(IcuError):
    """No such export, or not one the user may see (someone else's is not found either)."""

    status_code = status.HTTP_404_NOT_FOUND
    code = "export_not_found"
    default_message = "No such export."


class ExportNotReady(IcuError):
    """The result of an export still pending or running."""

    status_code = status.HTTP_409_CONFLICT
    code = "export_not_ready"
    default_message = "The export has not finished yet."


class ExportFailed(IcuError):
    """An export that failed: raised by the job with the reason it records, and by the API for
    the result of such an export (which will never come)."""

    status_code = status.HTTP_409_CONFLICT
    code = "export_failed"
    default_message = "The export failed."


class ExportExpired(IcuError):
    """The result of an export older than EXPORT_RESULT_TTL: gone for good."""

    status_code = status.HTTP_410_GONE
    code = "export_expired"
    default_message = "The export has expired."


class ExportResultMissing(IcuError):
    """A successful export whose file is not there: the web server does not see the worker's
    MEDIA_ROOT, or someone deleted it. A fault of the deployment, not of the request."""

    code = "export_result_missing"
    default_message = "The export's file is missing on the server; request the export again."
