from django.apps import AppConfig


class VitalsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "vitals"

    def ready(self) -> None:
        from core.health import readiness_check_register
        from vitals.health import consumer_stall_check

        readiness_check_register(name="consumer", check=consumer_stall_check)
