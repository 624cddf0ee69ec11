"""The alarm-burden report page of a unit (/units/<code>/report/): the figures of
units/report.py as tables, rendered here, and two plots drawn by ward/static/ward/js/report.js
from the same figures (json_script). A page of its own module: ward/views.py is the live
central station's."""

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_safe

from core.permissions import route_permits
from units.models import Unit
from units.report import report_window, unit_alarm_report
from units.report_serializers import AlarmReportFilterSerializer

REPORT_ROUTE = "api:unit-alarm-report"


@login_required
@require_safe
def unit_report(request: HttpRequest, code: str) -> HttpResponse:
    """A unit's alarm burden over ?since=&until= (default: the last 7 days)."""
    if not route_permits(user=request.user, route=REPORT_ROUTE):
        return render(request, "ward/no_access.html", status=403)
    unit = Unit.objects.filter(code=code).first()
    if unit is None:
        raise Http404(f"No unit {code!r}.")
    filters = AlarmReportFilterSerializer(data=request.GET)
    errors = None if filters.is_valid() else filters.errors
    given = filters.validated_data if errors is None else {}
    since, until = report_window(since=given.get("since"), until=given.get("until"))
    report = unit_alarm_report(unit=unit, since=since, until=until)
    window = {
        "since": since.replace(microsecond=0).isoformat(),
        "until": until.replace(microsecond=0).isoformat(),
    }
    api_url = reverse(REPORT_ROUTE, kwargs={"code": unit.code})
    plots = {
        "byKind": [
            {"kind": row["kind"], "category": row["category"], "perBedDay": row["per_bed_day"]}
            for row in report["by_kind"]
        ],
        "histogram": report["acknowledge_histogram"],
    }
    return render(
        request,
        "ward/report.html",
        {
            "unit": unit,
            "units": Unit.objects.order_by("code"),
            "report": report,
            "errors": errors,
            "window": window,
            "csv_url": f"{api_url}?{urlencode({**window, 'format': 'csv'})}",
            "plots": plots,
        },
    )
