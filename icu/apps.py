from django.apps import AppConfig


class IcuConfig(AppConfig):
    """The platform as an app: its login log (icu/auth.py) listens to Django's login signals,
    and the lock-out page lives in its templates."""

    name = "icu"
    verbose_name = "ICU Monitor platform"

    def ready(self) -> None:
        from icu import auth  # noqa: F401 (connects the login log's receivers)
