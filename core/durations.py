"""Durations as people write them in settings and on command lines: `30d`, `12h`, `2w`.

Pure (no Django): the settings module parses with it too.
"""

import re
from datetime import timedelta

UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def duration_parse(text: str, *, kind: str = "a duration") -> timedelta:
    """`30d`, `12h`, `90m`, `3600s`, `2w` -> a timedelta; ValueError naming `kind` otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not {kind} like 30d, 12h, 90m, 2w")
    return timedelta(**{UNITS[match[2]]: int(match[1])})
