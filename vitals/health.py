"""The vitals app's readiness check, registered with core/health.py in VitalsConfig.ready()."""

from core.exceptions import NotReady
from vitals.selectors import consumer_stall_list


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
