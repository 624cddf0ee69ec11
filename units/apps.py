from django.apps import AppConfig


class UnitsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "units"
    verbose_name = "Units, beds and admissions"

    def ready(self) -> None:
        # vitals cannot import units: units hooks into the storage of readings (AUTO_ADMIT).
        from units.services import patients_auto_admit
        from vitals.services import patients_stored_hook_register

        patients_stored_hook_register(patients_auto_admit)
