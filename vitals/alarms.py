"""Alarm detection, modelled on bedside monitors. Pure: no database, no Kafka.

A patient's readings go through `PatientAlarms.evaluate` in time order; it returns what to do:
raise, escalate or resolve an alarm. The service layer writes those decisions; the scenario
tests run hours of emulated patients through this module alone.

How a monitor avoids crying wolf, and how this does it:
- **Delay**: a condition must hold for `delay_readings` consecutive readings before it alarms
  (one outlier does not), and be gone for as many before the alarm resolves.
- **Hysteresis**: "gone" means back inside the limit by a margin (e.g. pulse alarm at > 120
  clears at <= 115), so a value hovering at the limit does not flap.
- **Priorities** (IEC 60601-1-8): a limit alarm is *medium*; *high* when the value is beyond a
  critical level (e.g. SpO2 < 85) or for a lethal condition (no pulse); *low* for technical
  conditions (SpO2 probe off, a monitor clock that is off). An open alarm's priority rises at
  once when its condition gets worse, and falls back only after `delay_readings` readings at
  the lower priority (a priority does not flap either).
- **Artefacts**: readings the monitor flags as artefacts count neither for nor against a
  physiological condition; a probe-off raises the low-priority technical alarm instead. A
  version 2 probe-off reading carries no SpO2 (not measured): its other signs are judged.
- **Each sign as it arrives**: a reading carries any subset of the signs (contract version 2);
  a sign it does not carry leaves that sign's conditions as they were (neither breach nor
  clear); asystole is judged only from a measured pulse. An incomplete NEWS2 (a parameter
  without a valid value) is a lower bound: reaching the trigger it raises the escalation, below
  it it says nothing; only a complete score clears.
- **The rules are the registry's** (vitals/signs.py): one low and/or high limit alarm per sign
  with its default limit, hysteresis and critical level.
- **Order and time**: readings are judged in the order they arrive (a patient's readings keep
  the order the monitor sent them in, on one Kafka partition), whatever their timestamps: a
  monitor whose clock is wrong, or is set back, is judged like any other. The time a decision
  carries (`at`) is given by the caller (the reading's time, corrected for a wrong clock) and
  never goes back.
"""

from dataclasses import dataclass, field, make_dataclass
from datetime import datetime
from typing import Protocol

from vitals.news2 import News2, artefact_voids
from vitals.signs import LIMIT_DEFAULTS, SIGN_BY_KEY, SIGN_KEYS_OF_FIELD, SIGN_OF_LIMIT, SIGNS

PRIORITY_RANK = {"low": 0, "medium": 1, "high": 2}


# The range each limit may be set to, for an adult in intensive care: never so wide that the
# alarm can no longer sound (an SpO2 low limit of 0, a pulse high limit of 300). Switching an
# alarm off is done explicitly instead (`Limits.off`, the AlarmOff model), where it is seen.
# Narrower than what bedside monitors allow (e.g. SpO2 low 50-99 %); see README "Alarm limits".
LIMIT_RANGES: dict[str, tuple[float, float]] = {
    **{limit.kind: limit.settable for limit in LIMIT_DEFAULTS},
    "delay_readings": (1, 10),
}


DELAY_READINGS = 2

# Alarm limits: one attribute per limit kind of the registry (spo2_low, pulse_high, ...) with the
# registry's default, `delay_readings`, and `off`: the kinds of limit alarm switched off (never
# news2, asystole or a technical alarm: see ALARM_OFF_KINDS). A frozen dataclass, built from
# the registry so that a new sign's limits need no edit here.
Limits = make_dataclass(
    "Limits",
    [
        *((limit.kind, float, field(default=limit.default)) for limit in LIMIT_DEFAULTS),
        ("delay_readings", int, field(default=DELAY_READINGS)),
        ("off", frozenset[str], field(default=frozenset())),
    ],
    frozen=True,
)
Limits.__module__ = __name__
Limits.__doc__ = "A patient's alarm limits; the defaults are the bedside defaults (the registry's)."


@dataclass(frozen=True)
class LimitRule:
    """`sign` below (`low`) or above (`high`) the patient's limit `kind`."""

    kind: str
    sign: str
    label: str
    unit: str
    hysteresis: float
    critical: float  # beyond this the alarm is high priority
    low: bool = field(init=False)

    def __post_init__(self) -> None:
        # Set once: the detector asks for every rule of every reading.
        object.__setattr__(self, "low", self.kind.endswith("_low"))

    def judge(self, value: float, limit: float) -> tuple[bool, bool]:
        """(breached, cleared): beyond the limit, or back inside it by the hysteresis."""
        if self.low:
            return value < limit, value >= limit + self.hysteresis
        return value > limit, value <= limit - self.hysteresis

    def priority(self, value: float) -> str:
        critical = value < self.critical if self.low else value > self.critical
        return "high" if critical else "medium"

    def message(self, value: float, limit: float) -> str:
        return f"{self.label}: {value:g} {self.unit} ({'<' if self.low else '>'} {limit:g})"


LIMIT_RULES = tuple(
    LimitRule(
        limit.kind,
        SIGN_OF_LIMIT[limit.kind],
        limit.label,
        SIGN_BY_KEY[SIGN_OF_LIMIT[limit.kind]].unit,
        limit.hysteresis,
        limit.critical,
    )
    for limit in LIMIT_DEFAULTS
)
# A lethal condition alarms at once, whatever the delay: no pulse.
ASYSTOLE_BELOW = 20
ASYSTOLE_CLEARS_AT = 30
# NEWS2 escalation (RCP 2017): aggregate 5-6 or a single parameter scoring 3 call for an urgent
# response (medium), 7 or more for an emergency response (high). It clears at 3 or less with no
# single 3, a point below the trigger so that a score wavering at 4-5 does not flap.
NEWS2_MEDIUM_AT = 5
NEWS2_HIGH_AT = 7
NEWS2_CLEARS_AT = 3
# The NEWS2 parameters in an alarm's message ("incomplete: no valid Resp. rate").
NEWS2_PARAMETER_LABELS = {
    **{sign.news2: sign.label for sign in SIGNS if sign.news2},
    "consciousness": "consciousness",
    "on_oxygen": "air or oxygen",
}

# Technical alarms (low priority): a monitor clock off by more than the tolerance, for as many
# readings as a limit alarm's delay; back within 80% of it to clear.
CLOCK_SKEW_CLEARS_AT = 0.8
# Raised by the consumer's sweep, not by a reading (vitals/services.py): no reading for
# ALARM_NO_DATA_AFTER seconds; resolved by the next reading.
NO_DATA = "no_data"
# Technical (low): readings keep coming but a sign the monitor measures continuously (Sign.
# continuous: pulse, respiratory rate, SpO2) has had no valid value for longer than its validity
# window (SIGN_VALIDITY), for as many readings as a limit alarm's delay: its sensor is off, and
# none of its limit alarms can sound. An SpO2 whose probe-off alarm is open is not counted twice.
SIGN_MISSING = "sign_missing"
CONTINUOUS_SIGNS = tuple(sign.key for sign in SIGNS if sign.continuous)
# The alarms a clinician may switch off: the physiological limit alarms only. NEWS2 escalation,
# asystole (lethal) and the technical alarms always sound.
ALARM_OFF_KINDS = tuple(rule.kind for rule in LIMIT_RULES)

# A sign the contract refused in a reading it kept (version 2: out of its range, or an
# implausible pressure; the rest of the reading is judged) must not vanish: one alarm kind per
# contract field, raised at once by a reading carrying it refused, resolved by the first
# carrying a valid value of it. High when the value was below its range (a pressure or a
# temperature collapsing beyond what the contract takes: the patient as likely as the sensor),
# medium otherwise (above the range, a pair that cannot be: an artefact as likely as not).
REFUSED_FIELDS = tuple(SIGN_KEYS_OF_FIELD)
REFUSED_KIND = {name: f"{name}_refused" for name in REFUSED_FIELDS}
REFUSED_KINDS = tuple(REFUSED_KIND.values())
# The sign a valid value of the field is read from, and how the alarm names the field.
_REFUSED_SIGN = {name: keys[0] for name, keys in SIGN_KEYS_OF_FIELD.items()}
_REFUSED_LABEL = {
    name: "Blood pressure" if name == "bp" else SIGN_BY_KEY[name].label for name in REFUSED_FIELDS
}

ALARM_KINDS = (
    *(rule.kind for rule in LIMIT_RULES),
    "asystole",
    "news2",
    "spo2_probe_off",
    "clock_skew",
    SIGN_MISSING,
    NO_DATA,
    *REFUSED_KINDS,
)


class ReadingLike(Protocol):
    """A reading as parsed or stored: every sign of the registry (None: not measured)."""

    measured_at: datetime
    pulse: int | None
    resp_rate: int | None
    systolic: int | None
    diastolic: int | None
    map: int | None
    spo2: int | None
    temperature: float | None
    etco2: int | None
    artefact: str | None


@dataclass(frozen=True)
class Decision:
    action: str  # "raise" | "priority" (its priority changed, up or down) | "resolve"
    kind: str
    priority: str
    value: float
    threshold: float | None
    message: str
    at: datetime


@dataclass
class _Condition:
    """One kind's counters and its open alarm, if any."""

    breaches: int = 0
    clears: int = 0
    # Consecutive breaching readings at a priority below the open alarm's.
    lower: int = 0
    open_priority: str | None = None


@dataclass
class PatientAlarms:
    """Everything the detector remembers about one patient between readings."""

    conditions: dict[str, _Condition] = field(default_factory=dict)
    last_at: datetime | None = None
    # A monitor clock off by more than this many seconds raises `clock_skew`.
    clock_skew_warn: float = 30.0
    # Some `<field>_refused` alarm is open: each reading is looked at for a valid value.
    refusals_open: bool = False

    def open_alarms(self) -> dict[str, str]:
        """kind -> priority of the alarms this state believes open."""
        return {k: c.open_priority for k, c in self.conditions.items() if c.open_priority}

    def mark_open(self, kind: str, priority: str) -> None:
        """Tell the state about an alarm that is open in the database (at load time)."""
        self._condition(kind).open_priority = priority
        if kind in REFUSED_KINDS:
            self.refusals_open = True

    def _condition(self, kind: str) -> _Condition:
        # Not setdefault(): that would build a _Condition on every call, for every rule of
        # every reading, only to throw it away.
        condition = self.conditions.get(kind)
        if condition is None:
            condition = self.conditions[kind] = _Condition()
        return condition

    def evaluate(
        self,
        reading: ReadingLike,
        news2: News2 | None,
        limits: Limits,
        *,
        at: datetime | None = None,
        clock_offset: float | None = None,
        warm_up: bool = False,
    ) -> list[Decision]:
        """Advance the counters with one reading, the next one received; return the decisions
        it brings.

        `at` is the time the decisions carry (default: the reading's measured_at); it never
        goes back: a reading stamped before the last one (a clock set back) is judged all the
        same, at the last one's time. `clock_offset` is how far the monitor's clock is ahead
        (negative: behind) in seconds, None when unknown. `warm_up` replays readings already
        judged (after a restart) to rebuild the counters without deciding anything again.
        """
        at = reading.measured_at if at is None else at
        if self.last_at is not None and at < self.last_at:
            at = self.last_at
        self.last_at = at
        decisions = self._judge(reading, news2, limits, at, clock_offset)
        return [] if warm_up else decisions

    # The consumer runs this on every reading of every patient: a message is formatted only
    # for a decision, which is rare, and a priority only for a breach.
    def _judge(
        self,
        reading: ReadingLike,
        news2: News2 | None,
        limits: Limits,
        at: datetime,
        clock_offset: float | None,
    ) -> list[Decision]:
        decisions: list[Decision] = []

        def decide(kind: str, outcome: tuple[str, str], value, threshold, message: str) -> None:
            action, priority = outcome
            decisions.append(Decision(action, kind, priority, value, threshold, message, at))

        step = self._step
        delay = limits.delay_readings
        if clock_offset is not None:
            off_by = abs(clock_offset)
            skewed = off_by > self.clock_skew_warn
            cleared = off_by <= self.clock_skew_warn * CLOCK_SKEW_CLEARS_AT
            if outcome := step("clock_skew", skewed, cleared, "low", delay):
                way = "ahead" if clock_offset > 0 else "behind"
                decide(
                    "clock_skew",
                    outcome,
                    round(clock_offset, 1),
                    self.clock_skew_warn,
                    f"Monitor clock {off_by:.0f} s {way}",
                )

        # A reading replayed from the database carries no refusals: its refused signs are
        # None there, so they neither raise nor clear.
        refused = getattr(reading, "refused", ())
        if refused or self.refusals_open:
            self._judge_refusals(reading, refused, decide)

        spo2 = reading.spo2
        probe_off = reading.artefact == "spo2_probe_off"
        # Back on: a reading with an SpO2 and no probe-off flag (one without SpO2 says nothing).
        probe_on = not probe_off and spo2 is not None
        if outcome := step("spo2_probe_off", probe_off, probe_on, "low", 1):
            value = 0 if spo2 is None else spo2
            decide("spo2_probe_off", outcome, value, None, "SpO2 probe off: no oximetry")
        if artefact_voids(reading):
            return decisions  # not physiological: neither for nor against any condition

        off = limits.off
        for rule in LIMIT_RULES:
            value = getattr(reading, rule.sign)
            limit = getattr(limits, rule.kind)
            if off and rule.kind in off:
                # ALARM OFF: not judged, nothing remembered; one it believed open resolves.
                forgotten = self.conditions.pop(rule.kind, None)
                if forgotten is not None and forgotten.open_priority:
                    outcome = ("resolve", forgotten.open_priority)
                    decide(rule.kind, outcome, value, limit, f"{rule.label}: alarm off")
                continue
            if value is None:
                continue  # not measured: this sign's counters stay as they are
            breached, cleared = rule.judge(value, limit)
            priority = rule.priority(value) if breached else None
            if outcome := step(rule.kind, breached, cleared, priority, delay):
                decide(rule.kind, outcome, value, limit, rule.message(value, limit))

        pulse = reading.pulse
        if pulse is not None:
            asystole = pulse < ASYSTOLE_BELOW
            if outcome := step("asystole", asystole, pulse >= ASYSTOLE_CLEARS_AT, "high", 1):
                decide("asystole", outcome, pulse, ASYSTOLE_BELOW, f"No pulse: {pulse} /min")

        if news2 is not None:
            probe_off_open = self._condition("spo2_probe_off").open_priority is not None
            lost = [
                key
                for key in CONTINUOUS_SIGNS
                if key in news2.missing and not (key == "spo2" and probe_off_open)
            ]
            if outcome := step(SIGN_MISSING, bool(lost), not lost, "low", delay):
                labels = ", ".join(SIGN_BY_KEY[key].label for key in lost)
                message = f"No valid {labels}: sensor off?" if lost else "Every sign measured again"
                decide(SIGN_MISSING, outcome, len(lost), None, message)

        if news2 is not None:
            score = news2.score
            single_three = 3 in news2.subscores.values()
            high = score >= NEWS2_HIGH_AT
            triggered = score >= NEWS2_MEDIUM_AT or single_three
            priority = "high" if high else "medium"
            threshold = NEWS2_HIGH_AT if high else NEWS2_MEDIUM_AT
            if news2.complete:
                cleared = score <= NEWS2_CLEARS_AT and not single_three
                if outcome := step("news2", triggered, cleared, priority, delay):
                    decide("news2", outcome, score, threshold, f"NEWS2 {score} ({news2.risk} risk)")
            elif triggered:
                # Incomplete (a parameter without a valid value): a lower bound, since the
                # missing parameters can only add. Reaching the trigger already, it raises or
                # raises the priority; it never lowers it, and an incomplete score below the
                # trigger says nothing (the counters stay): only a complete score clears.
                open_priority = self._condition("news2").open_priority
                if open_priority and PRIORITY_RANK[open_priority] > PRIORITY_RANK[priority]:
                    priority = open_priority
                if outcome := step("news2", True, False, priority, delay):
                    missing = ", ".join(NEWS2_PARAMETER_LABELS[key] for key in news2.missing)
                    message = (
                        f"NEWS2 {score} or more ({news2.risk} risk; incomplete: no valid {missing})"
                    )
                    decide("news2", outcome, score, threshold, message)
        return decisions

    def _judge_refusals(self, reading: ReadingLike, refused, decide) -> None:
        """The `<field>_refused` alarms: at once, no delay (the refusal is the device's word,
        not a noisy value); cleared by the field's next valid value."""
        by_field = {refusal.fields[0]: refusal for refusal in refused}
        for name in REFUSED_FIELDS:
            kind = REFUSED_KIND[name]
            refusal = by_field.get(name)
            if refusal is None and kind not in self.conditions:
                continue  # neither refused now nor ever open: nothing to count
            valid = getattr(reading, _REFUSED_SIGN[name], None)
            if refusal is not None:
                priority = "high" if refusal.floor is not None else "medium"
                if outcome := self._step(kind, True, False, priority, 1):
                    value = 0 if refusal.value is None else refusal.value
                    message = f"{_REFUSED_LABEL[name]} refused: {refusal.message}"
                    decide(kind, outcome, value, refusal.floor, message)
            elif outcome := self._step(kind, False, valid is not None, None, 1):
                decide(kind, outcome, valid, None, f"{_REFUSED_LABEL[name]} valid again")
        self.refusals_open = any(
            self.conditions[kind].open_priority for kind in REFUSED_KINDS if kind in self.conditions
        )

    def _step(
        self, kind: str, breached: bool, cleared: bool, priority: str | None, delay: int
    ) -> tuple[str, str] | None:
        """Count one reading for one condition; return the (action, priority) it brings, if
        any. `priority` is the breach's (None when not breached)."""
        # `_condition` written out: some 19 calls a reading.
        condition = self.conditions.get(kind)
        if condition is None:
            condition = self.conditions[kind] = _Condition()
        condition.breaches = condition.breaches + 1 if breached else 0
        condition.clears = condition.clears + 1 if cleared else 0

        open_priority = condition.open_priority
        if open_priority is None:
            if condition.breaches >= delay:
                condition.open_priority = priority
                return "raise", priority
            return None
        if condition.clears >= delay:
            condition.open_priority, condition.lower = None, 0
            return "resolve", open_priority
        if not breached or priority == open_priority:
            condition.lower = 0
            return None
        if PRIORITY_RANK[priority] > PRIORITY_RANK[open_priority]:
            # Worse: at once.
            condition.open_priority, condition.lower = priority, 0
            return "priority", priority
        # Better, but still breached: only once it has held for the delay.
        condition.lower += 1
        if condition.lower >= delay:
            condition.open_priority, condition.lower = priority, 0
            return "priority", priority
        return None
