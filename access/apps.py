from django.apps import AppConfig


class AccessConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "access"
    verbose_name = "Access log"

    def ready(self) -> None:
        import atexit

        from django.core.signals import request_finished

        from access.services import patient_access_flush, patient_access_flush_after_response

        # After the response has been sent (WSGI servers close it then): the write is off the
        # request's critical path, in the request's own thread and connection.
        request_finished.connect(
            patient_access_flush_after_response, dispatch_uid="access-log-flush"
        )
        # What this process counted and has not written yet (count, last_at) goes at exit.
        atexit.register(patient_access_flush)
