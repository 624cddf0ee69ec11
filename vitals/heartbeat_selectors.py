"""Whether alarms are processed at all: the consumers' heartbeats
(vitals.models.AlarmProcessingHeartbeat) against the database's clock."""

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models.functions import Now

from vitals.models import AlarmProcessingHeartbeat

OK = "ok"
STOPPED = "stopped"
NEVER_STARTED = "never_started"


@dataclass(frozen=True)
class AlarmProcessingStatus:
    """`status`: OK (a consumer's sweep heard within `stopped_after`), STOPPED (none since
    `last_heartbeat_at`) or NEVER_STARTED (no consumer ever swept here). `checked_at`: the
    database's clock (None when no heartbeat was ever written); `consumers`: the processes
    heard within `stopped_after`."""

    status: str
    last_heartbeat_at: datetime | None
    checked_at: datetime | None
    seconds_since_heartbeat: float | None
    consumers: int
    stopped_after: float


def alarm_processing_status(
    *, now: datetime | None = None, stopped_after: float | None = None
) -> AlarmProcessingStatus:
    """The alarm processing's status, by the database's clock (`now`: another time, for
    tests), one query; `stopped_after` seconds (default settings.ALARM_PROCESSING_STOPPED_AFTER).
    Raises DatabaseError when the database does not answer: then nobody can say "ok"."""
    if stopped_after is None:
        stopped_after = settings.ALARM_PROCESSING_STOPPED_AFTER
    rows = list(AlarmProcessingHeartbeat.objects.annotate(now=Now()).values_list("beat_at", "now"))
    if not rows:
        return AlarmProcessingStatus(NEVER_STARTED, None, now, None, 0, stopped_after)
    checked_at = now or rows[0][1]
    ages = [max(0.0, (checked_at - beat_at).total_seconds()) for beat_at, _ in rows]
    age = min(ages)
    return AlarmProcessingStatus(
        status=OK if age <= stopped_after else STOPPED,
        last_heartbeat_at=max(beat_at for beat_at, _ in rows),
        checked_at=checked_at,
        seconds_since_heartbeat=age,
        consumers=sum(a <= stopped_after for a in ages),
        stopped_after=stopped_after,
    )
