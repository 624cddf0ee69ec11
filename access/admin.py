from django.contrib import admin
from django.http import HttpRequest

from access.models import PatientAccess


@admin.register(PatientAccess)
class PatientAccessAdmin(admin.ModelAdmin):
    """Who read which patient's data. Written after each read; nobody edits or deletes it."""

    list_display = ["first_at", "last_at", "username", "patient", "patient_uuid", "kind", "count"]
    list_filter = ["kind", "username", "patient"]
    list_select_related = ["patient"]
    search_fields = ["username", "=patient_uuid", "patient__name"]
    date_hierarchy = "first_at"
    fields = [*list_display[:5], "user", "kind", "window_start", "count"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
