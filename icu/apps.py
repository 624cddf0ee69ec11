from django.apps import AppConfig


class IcuConfig(AppConfig):
    """The platform as an app, for what Django finds only in apps: its login log (icu/auth.py)
    listens to Django's login signals; the management commands that wrap Django's own
    (`migrate`, safe to start several times at once); templates (the lock-out page, the Swagger
    UI page and the browsable API under the Content-Security-Policy). No models."""

    name = "icu"
    verbose_name = "ICU Monitor platform"

    def ready(self) -> None:
        from icu import auth  # noqa: F401 (connects the login log's receivers)
