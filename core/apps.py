from django.apps import AppConfig


class CoreConfig(AppConfig):
    """The platform as an app, for what Django finds only in apps: its login log (core/auth.py)
    listens to Django's login signals; the management commands that wrap Django's own
    (`migrate`, safe to start several times at once) and the project-wide ones (run_dev,
    run_broker, assign_role); templates (the lock-out page, the Swagger UI page and the
    browsable API under the Content-Security-Policy). No models."""

    name = "core"
    verbose_name = "ICU Monitor platform"

    def ready(self) -> None:
        from core import auth  # noqa: F401 (connects the login log's receivers)
