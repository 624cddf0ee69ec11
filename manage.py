#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "icu.settings")
    from django.core.management import execute_from_command_line

    from core.startup import settings_load_or_exit

    settings_load_or_exit()  # a bad setting: one line and exit status 2, for every command

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
