"""The alarm-burden report of a unit (units/report.py): JSON, or CSV with `?format=csv`."""

import csv
import io

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.renderers import BrowsableAPIRenderer
from units.report import report_window, unit_alarm_report
from units.report_serializers import AlarmReportFilterSerializer, AlarmReportSerializer
from units.selectors import unit_get


def alarm_report_csv_rows(report: dict) -> list[list]:
    """The report as one long table: figure, group, key, measure, value."""
    rows: list[list] = [["figure", "group", "key", "measure", "value"]]
    rows += [
        ["window", "", "", "since", report["since"]],
        ["window", "", "", "until", report["until"]],
        ["window", "", "", "bed_days", report["bed_days"]],
    ]
    rows += [["alarms", "", "", measure, v] for measure, v in report["alarms"].items()]
    for row in report["by_kind"]:
        for measure in ("alarms", "per_bed_day", "acknowledged", "self_resolved", "nuisance_share"):
            rows.append(["by_kind", row["category"], row["kind"], measure, row[measure]])
    for row in report["by_priority"]:
        for measure in ("alarms", "per_bed_day"):
            rows.append(["by_priority", row["category"], row["priority"], measure, row[measure]])
    for row in report["acknowledge"]:
        for measure in ("count", "median_seconds", "p90_seconds"):
            rows.append(["acknowledge", "", row["priority"], measure, row[measure]])
    bins = report["acknowledge_histogram"]["bins"]
    for priority, counts in report["acknowledge_histogram"]["counts"].items():
        for lower, count in zip(bins, counts, strict=True):
            rows.append(["acknowledge_histogram", priority, f">={lower}s", "alarms", count])
    for row in report["beds"]:
        for measure in ("bed_days", "alarms", "alarms_per_bed_day", "seconds_in_alarm"):
            rows.append(["beds", "", row["label"], measure, row[measure]])
    return rows


class AlarmReportCsvRenderer(BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        if isinstance(data, dict) and "beds" in data:
            writer.writerows(
                ["" if value is None else value for value in row]
                for row in alarm_report_csv_rows(data)
            )
            response = (renderer_context or {}).get("response")
            if response is not None:
                unit = data["unit"]["code"]
                response["Content-Disposition"] = f'attachment; filename="alarm-report-{unit}.csv"'
        return out.getvalue().encode(self.charset)


class UnitAlarmReportView(APIView):
    """The alarm burden of a unit over [since, until): alarms per bed-day by kind and priority
    (technical apart), time to acknowledge (median, 90th percentile), the nuisance share, the
    noisiest beds and kinds, the time in alarm per bed. `?format=csv`: the same as a CSV file."""

    renderer_classes = [JSONRenderer, BrowsableAPIRenderer, AlarmReportCsvRenderer]

    def handle_exception(self, exc: Exception) -> Response:
        # An error is the API's one JSON shape, whatever format the report was asked in.
        response = super().handle_exception(exc)
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return response

    @extend_schema(
        parameters=[AlarmReportFilterSerializer],
        responses={
            200: OpenApiResponse(
                AlarmReportSerializer,
                description="The report; as text/csv with ?format=csv (figure, group, key, "
                "measure, value).",
            ),
            (200, "text/csv"): OpenApiTypes.STR,
        },
        summary="A unit's alarm burden over a window (default: the last 7 days).",
    )
    def get(self, request: Request, code: str, format: str | None = None) -> Response:
        unit = unit_get(code=code)
        filters = AlarmReportFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        since, until = report_window(
            since=filters.validated_data.get("since"), until=filters.validated_data.get("until")
        )
        report = unit_alarm_report(unit=unit, since=since, until=until)
        return Response(AlarmReportSerializer(report).data)
