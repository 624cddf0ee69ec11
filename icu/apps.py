from django.apps import AppConfig


class IcuConfig(AppConfig):
    """The platform as an app, for what Django finds only in apps: the management commands
    that wrap Django's own (`migrate`, safe to start several times at once) and templates that
    wrap a library's (the Swagger UI page under the Content-Security-Policy). No models."""

    name = "icu"
    verbose_name = "ICU Monitor platform"
