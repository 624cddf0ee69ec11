"""The parameters of `GET /fhir/Observation`, as FHIR R4 search defines them
(http://hl7.org/fhir/R4/search.html), parsed into what the selector takes.

- `date`: repeatable, each a prefix (`eq`, `ge`, `gt`, `le`, `lt`; none means `eq`) and a date
  or time of any precision (`2026`, `2026-11`, `2026-11-23`, `2026-11-23T10:00Z`,
  `2026-11-23T10:00:00.250+01:00`). A value is the range its precision covers: `le2026-11-23`
  takes the whole day; `ge` and `le` include their end, `gt` and `lt` exclude it. Times need
  their offset (FHIR requires one); dates without a time are days in UTC.
- `code`: `[system]|code`, comma-separated for either; repeated for all (as FHIR's AND).
- `_count`: entries per page, 1-1000 (more is served as 1000), default 100.
- `_cursor`: where the next page starts, from the `next` link.
"""

import calendar
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from core.exceptions import InvalidCursor, InvalidParameter
from core.pagination import cursor_sign, cursor_unsign
from exports.fhir import KINDS, kinds_matching

DEFAULT_COUNT = 100
MAX_COUNT = 1000
PREFIXES = ("eq", "ge", "gt", "le", "lt")
_DATE = re.compile(
    r"(?P<year>\d{4})(-(?P<month>\d{2})(-(?P<day>\d{2})"
    r"(T(?P<hour>\d{2}):(?P<minute>\d{2})(:(?P<second>\d{2})(\.(?P<fraction>\d{1,6}))?)?"
    r"(?P<offset>Z|[+-]\d{2}:\d{2}))?)?)?"
)


@dataclass(frozen=True)
class TimeRange:
    """Readings with `start` <= measured_at < `end` (None: unbounded)."""

    start: datetime | None = None
    end: datetime | None = None


def _span(text: str) -> tuple[datetime, datetime | None]:
    """The range [start, end) a FHIR date or dateTime covers at its precision (end None when
    it would be past year 9999)."""
    match = _DATE.fullmatch(text)
    if not match:
        raise ValueError
    parts = match.groupdict()
    year, month, day = int(parts["year"]), int(parts["month"] or 1), int(parts["day"] or 1)
    if parts["hour"] is None:
        start = datetime(year, month, day, tzinfo=UTC)
        if parts["day"]:
            step = timedelta(days=1)
        elif parts["month"]:
            step = timedelta(days=calendar.monthrange(year, month)[1])
        else:
            step = timedelta(days=366 if calendar.isleap(year) else 365)
    else:
        offset = parts["offset"]
        start = datetime.fromisoformat(
            f"{text[:10]}T{parts['hour']}:{parts['minute']}:{parts['second'] or '00'}"
            + (f".{parts['fraction'].ljust(6, '0')}" if parts["fraction"] else "")
            + ("+00:00" if offset == "Z" else offset)
        ).astimezone(UTC)
        if parts["fraction"]:
            step = timedelta(microseconds=10 ** (6 - len(parts["fraction"])))
        elif parts["second"]:
            step = timedelta(seconds=1)
        else:
            step = timedelta(minutes=1)
    try:
        return start, start + step
    except OverflowError:
        return start, None


def date_range(values: Iterable[str]) -> TimeRange:
    """Every `date` parameter at once (all must hold); InvalidParameter (400) names a bad one."""
    start: datetime | None = None
    end: datetime | None = None
    for value in values:
        prefix, text = (value[:2], value[2:]) if value[:2] in PREFIXES else ("eq", value)
        try:
            low, high = _span(text)
        except (ValueError, OverflowError):
            raise InvalidParameter(
                f"'date={value}' is not a FHIR date search: a prefix ({', '.join(PREFIXES)}) "
                "and a date or a time with its offset, e.g. ge2026-11-23T10:00:00Z."
            ) from None
        lower = {"eq": low, "ge": low, "gt": high}.get(prefix)
        upper = {"eq": high, "le": high, "lt": low}.get(prefix)
        if prefix == "gt" and high is None:  # after the end of time: nothing
            lower = upper = low
        if lower is not None:
            start = lower if start is None else max(start, lower)
        if upper is not None:
            end = upper if end is None else min(end, upper)
    return TimeRange(start, end)


def code_kinds(values: Iterable[str]) -> list[str]:
    """The kinds of Observation (exports/fhir.py) that every `code` parameter matches, in
    their fixed order; all of them without a `code`."""
    kinds = set(KINDS)
    for value in values:
        tokens = []
        for token in value.split(","):
            system, bar, code = token.rpartition("|")
            if not bar:
                tokens.append((None, token))
            elif code:
                tokens.append((system, code))  # "|code": no system, which matches nothing
            else:
                tokens.extend(
                    (system, c) for k in KINDS.values() for s, c in k.codes() if s == system
                )
        kinds &= kinds_matching(tokens)
    return [k for k in KINDS if k in kinds]


def count_parse(value: str | None) -> int:
    if value is None:
        return DEFAULT_COUNT
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise InvalidParameter(f"'_count={value}' is not a page size: a whole number from 1.")
    return min(count, MAX_COUNT)


_CURSOR_SALT = "exports.fhir_search.observation"
_CURSOR_REFUSED = "'_cursor' is not a cursor this search issued: follow its `next` link."


def cursor_encode(measured_at: datetime, skip: int) -> str:
    """Where a page starts: at the reading measured at `measured_at`, after its `skip` first
    entries. Opaque to clients, and signed (core/pagination.py): only what this search issued
    is followed."""
    return cursor_sign(value=[measured_at.isoformat(), skip], salt=_CURSOR_SALT)


def cursor_decode(value: str) -> tuple[datetime, int]:
    """InvalidCursor (400) for anything `cursor_encode` did not make."""
    cursor = cursor_unsign(cursor=value, salt=_CURSOR_SALT, message=_CURSOR_REFUSED)
    # Signed by us, so of our making; checked all the same, should the key ever leak.
    try:
        moment, skip = cursor
        measured_at = datetime.fromisoformat(moment)
        if measured_at.tzinfo is None or not isinstance(skip, int) or skip < 0:
            raise ValueError
    except (ValueError, TypeError):
        raise InvalidCursor(_CURSOR_REFUSED) from None
    return measured_at, skip
