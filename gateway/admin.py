from django.contrib import admin

from gateway.models import Device


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ["eui64", "bed", "several_beds", "last_seen_at"]
    list_filter = ["several_beds"]
    list_select_related = ["bed__unit"]
    search_fields = ["eui64"]
    readonly_fields = ["last_seen_at"]
