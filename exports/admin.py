from django.contrib import admin
from django.http import HttpRequest

from exports.models import Export


@admin.register(Export)
class ExportAdmin(admin.ModelAdmin):
    """Who exported whose readings, when, and how it went. Read-only: exports are made through
    the API and deleted when they expire (with their files, which a deletion here would leave
    behind)."""

    list_display = ["created_at", "requested_by", "patient_uuid", "format", "status", "row_count"]
    list_filter = ["status", "format"]
    search_fields = ["=patient_uuid", "requested_by__username"]
    date_hierarchy = "created_at"
    # The file by name: a link would point at MEDIA_URL, which nothing serves (only the API's
    # result endpoint hands export files out).
    fields = readonly_fields = [
        *(f.name for f in Export._meta.fields if f.name != "result"),
        "result_file",
    ]

    @admin.display(description="result")
    def result_file(self, export: Export) -> str:
        return export.result.name

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Export | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Export | None = None) -> bool:
        return False
