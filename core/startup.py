"""Start-up: a bad setting stops a command with one line, not a traceback.

icu/settings.py checks every setting as it reads it and raises ImproperlyConfigured naming the
variable, the value given and the form expected. manage.py and the web server (gunicorn.conf.py)
load the settings through `settings_load_or_exit` before anything else runs, so that a person
who mistyped a value reads that one line and gets exit status 2 (a usage error, as argparse's).
"""

import gc
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


def worker_ready() -> None:
    """A web worker has loaded the application (gunicorn.conf.py's post_worker_init): build the
    URL resolver now rather than at the first request, collect, and move every object then
    alive to the permanent generation (gc.freeze). Python's full collections walk every
    long-lived object (Django, the apps, the URLconf): some 100 ms each, the p99 of the ward
    list and of a patient's last hour in bench/api_scale.py (issue 20). Frozen, they walk only
    what requests leave behind (the same requests: a full collection's pause 90-140 ms to
    4-33 ms). Nothing frozen is ever freed: what the worker loaded it keeps anyway."""
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 (imports and compiles the URLconf)
    gc.collect()
    gc.freeze()
