"""The vitals app's readiness check and its gauges on the web's /metrics, registered with
core/health.py and core/metrics.py in VitalsConfig.ready()."""

import logging
from collections.abc import Iterator

from django.db import DatabaseError
from prometheus_client.core import GaugeMetricFamily

from core.exceptions import NotReady
from vitals.heartbeat_selectors import OK, alarm_processing_status
from vitals.selectors import consumer_stall_list

logger = logging.getLogger(__name__)


def consumer_stall_check() -> None:
    """Raise NotReady while a consumer is held at a message the DLQ does not take."""
    stalls = consumer_stall_list()
    if stalls:
        raise NotReady(
            f"consumer held at {len(stalls)} partition(s): the DLQ does not take a message",
            detail={
                "stalls": [
                    {
                        "topic": stall.topic,
                        "partition": stall.partition,
                        "offset": stall.offset,
                        "since": stall.since.isoformat(),
                        "attempts": stall.attempts,
                        "error": stall.error,
                    }
                    for stall in stalls
                ]
            },
        )


class AlarmProcessingCollector:
    """Whether alarms are processed (vitals/heartbeat_selectors.py), read at each scrape of the
    web's /metrics: `icu_alarm_processing_up` (1 or 0) and
    `icu_alarm_processing_heartbeat_age_seconds`. Nothing when the database does not answer:
    an unknown status is never exported as up (alert on absent() as well as on 0)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            found = alarm_processing_status()
        except Exception as exc:  # a gauge must not take the other metrics down with it
            level = logging.WARNING if isinstance(exc, DatabaseError) else logging.ERROR
            logger.log(
                level, "could not read the alarm processing status", extra={"error": str(exc)}
            )
            return
        yield GaugeMetricFamily(
            "icu_alarm_processing_up",
            "1 while a consumer's alarm sweep was heard within ALARM_PROCESSING_STOPPED_AFTER "
            "seconds (database clock); 0: no alarm is raised, escalated or published.",
            value=1 if found.status == OK else 0,
        )
        if found.seconds_since_heartbeat is not None:
            yield GaugeMetricFamily(
                "icu_alarm_processing_heartbeat_age_seconds",
                "Seconds since the latest alarm sweep of any consumer (database clock).",
                value=found.seconds_since_heartbeat,
            )
