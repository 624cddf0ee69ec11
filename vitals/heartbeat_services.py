"""Writes of the alarm processing heartbeat (vitals.models.AlarmProcessingHeartbeat): every
consumer's alarm sweep says that alarm processing is alive."""

import functools
import os
import socket
from datetime import timedelta

from django.db.models.functions import Now

from vitals.models import AlarmProcessingHeartbeat

# A process gone this long is forgotten (when another one first beats): the table keeps the
# processes of the last day, a few rows.
FORGET_AFTER = timedelta(days=1)


@functools.cache
def _process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def alarm_processing_heartbeat_record(*, process: str | None = None) -> None:
    """This consumer process's alarm sweep ran: stamp its row (`process`, by default
    `host:pid`) with the database's clock. One UPDATE, autocommitted (never inside a batch's
    transaction); the process's first beat inserts its row and forgets processes gone for
    FORGET_AFTER. Raises DatabaseError when the database does not answer: no beat then."""
    process = process or _process_name()
    if AlarmProcessingHeartbeat.objects.filter(process=process).update(beat_at=Now()):
        return
    AlarmProcessingHeartbeat.objects.filter(beat_at__lt=Now() - FORGET_AFTER).delete()
    AlarmProcessingHeartbeat.objects.create(process=process, beat_at=Now())
