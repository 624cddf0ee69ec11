from django.apps import AppConfig


class WardConfig(AppConfig):
    name = "ward"
    verbose_name = "Central station"
