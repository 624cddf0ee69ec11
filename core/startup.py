"""Start-up: a bad setting stops a command with one line, not a traceback.

icu/settings.py checks every setting as it reads it and raises ImproperlyConfigured naming the
variable, the value given and the form expected. manage.py and the web server (gunicorn.conf.py)
load the settings through `settings_load_or_exit` before anything else runs, so that a person
who mistyped a value reads that one line and gets exit status 2 (a usage error, as argparse's).
"""

import sys

from django.core.exceptions import ImproperlyConfigured

SETTINGS_ERROR_EXIT_STATUS = 2


def settings_load_or_exit() -> None:
    """Load the settings module named by DJANGO_SETTINGS_MODULE; on a refused setting, print its
    one line to stderr and exit with status 2."""
    from django.conf import settings

    try:
        settings.INSTALLED_APPS  # noqa: B018 (loading the settings is the point)
    except ImproperlyConfigured as exc:
        sys.stderr.write(f"{exc}\n")
        sys.exit(SETTINGS_ERROR_EXIT_STATUS)
