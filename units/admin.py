from django.contrib import admin

from core.admin import ReadOnlyAdmin
from units.models import Admission, Bed, Unit


class BedInline(admin.TabularInline):
    model = Bed
    fields = ["position", "label"]
    ordering = ["position"]
    extra = 1


@admin.register(Unit)
class UnitAdmin(admin.ModelAdmin):
    list_display = ["code", "name"]
    search_fields = ["code", "name"]
    inlines = [BedInline]


@admin.register(Bed)
class BedAdmin(admin.ModelAdmin):
    list_display = ["__str__", "unit", "position", "label"]
    list_filter = ["unit"]
    list_select_related = ["unit"]
    ordering = ["unit", "position"]


@admin.register(Admission)
class AdmissionAdmin(ReadOnlyAdmin):
    """Who lay in which bed from when to when: written by the API's admit, transfer and
    discharge (audited) and AUTO_ADMIT, never edited here."""

    list_display = [
        "admitted_at",
        "patient",
        "bed",
        "admitted_by",
        "discharged_at",
        "end_reason",
    ]
    list_filter = ["bed__unit", "end_reason"]
    list_select_related = ["patient", "bed__unit", "admitted_by"]
    search_fields = ["=patient__uuid", "patient__name", "bed__label"]
    date_hierarchy = "admitted_at"
    fields = [
        "patient",
        "bed",
        "admitted_at",
        "admitted_by",
        "reason",
        "discharged_at",
        "discharged_by",
        "end_reason",
        "discharge_reason",
    ]
