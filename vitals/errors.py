"""The monitoring's errors: a reading that breaks the contract, an alarm action refused."""

from rest_framework import status

from core.exceptions import IcuError


class AlarmNotFound(IcuError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "alarm_not_found"
    default_message = "No such alarm."


class AlarmNotOpen(IcuError):
    """An action on an alarm that its state does not allow (acknowledging a resolved one)."""

    status_code = status.HTTP_409_CONFLICT
    code = "alarm_not_open"
    default_message = "The alarm is resolved."


class AlarmChanged(IcuError):
    """An acknowledgement of an alarm that now ranks above the priority the nurse was shown:
    it became worse meanwhile, and must be seen before it is acknowledged."""

    status_code = status.HTTP_409_CONFLICT
    code = "alarm_changed"
    default_message = "The alarm changed since it was shown."


class AlarmOffRefused(IcuError):
    """Switching off (or on) an alarm that cannot be switched off: NEWS2 escalation, asystole,
    a technical alarm, or no alarm at all."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "alarm_off_refused"
    default_message = "This alarm cannot be switched off."


class InvalidReading(IcuError):
    """A message on the vitals topic that breaks the contract; it goes to the DLQ.

    `reason` is a stable machine code (the `dlq.reason` header), the message says exactly what
    was wrong in words.
    """

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    code = "invalid_reading"

    def __init__(
        self, reason: str, message: str, *, value: float | None = None, floor: float | None = None
    ) -> None:
        self.reason = reason
        # A sign's value refused (out of its range, an implausible pressure), and the range's
        # floor when it was below it (a collapse as likely as an artefact).
        self.value, self.floor = value, floor
        super().__init__(message)
