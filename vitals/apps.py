from django.apps import AppConfig


class VitalsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "vitals"

    def ready(self) -> None:
        from core.health import readiness_check_register
        from core.metrics import web_collector_register
        from vitals.health import AlarmProcessingCollector, consumer_stall_check

        readiness_check_register(name="consumer", check=consumer_stall_check)
        # Not a readiness check: the web process is ready (the station page must stay up to
        # say so) while no consumer runs; the pages and /metrics say that alarms are not.
        web_collector_register(name="alarm_processing", collector=AlarmProcessingCollector())
