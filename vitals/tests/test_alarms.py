"""The alarm detector on hand-written reading sequences: delay, hysteresis, priorities,
escalation, NEWS2, asystole, artefacts."""

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from vitals.alarms import ALARM_KINDS, Decision, Limits, PatientAlarms
from vitals.news2 import News2, news2_of
from vitals.signs import map_from_bp

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


@dataclass(frozen=True)
class R:
    """A reading: normal adult values unless told otherwise (None: not measured)."""

    measured_at: datetime = T0
    pulse: int | None = 72
    resp_rate: int | None = 14
    systolic: int | None = 120
    diastolic: int | None = 80
    spo2: int | None = 98
    temperature: float | None = 36.8
    on_oxygen: bool = False
    consciousness: str = "A"
    artefact: str | None = None
    map: int | None = None
    etco2: int | None = None


def parsed(reading: R) -> R:
    """As the contract parses it: a reading with systolic and diastolic but no MAP is given
    the MAP they make."""
    if reading.map is None and reading.systolic is not None and reading.diastolic is not None:
        return replace(reading, map=map_from_bp(reading.systolic, reading.diastolic))
    return reading


DEFAULT_LIMITS = Limits()


def run(values: list[dict], limits: Limits = DEFAULT_LIMITS, state: PatientAlarms | None = None):
    """Feed readings 5 s apart; return [(index, action, kind, priority)] and the state."""
    state = state or PatientAlarms()
    out = []
    for i, changes in enumerate(values):
        reading = parsed(replace(R(), measured_at=T0 + timedelta(seconds=5 * i), **changes))
        news2 = news2_of(reading)
        for d in state.evaluate(reading, news2, limits):
            out.append((i, d.action, d.kind, d.priority))
    return out, state


def test_normal_readings_raise_nothing():
    assert run([{}] * 50)[0] == []


def test_one_outlier_does_not_alarm_two_consecutive_do():
    assert run([{"pulse": 130}, {}, {"pulse": 131}, {}])[0] == []
    events, _ = run([{}, {"pulse": 130}, {"pulse": 128}])
    assert events == [(2, "raise", "pulse_high", "medium")]


def test_delay_is_the_patients_setting():
    # Pulse 125 scores NEWS2 2 (no single 3, aggregate 2): only the limit alarm is in play.
    limits = Limits(delay_readings=3)
    assert run([{"pulse": 125}] * 2, limits)[0] == []
    assert run([{"pulse": 125}] * 3, limits)[0] == [(2, "raise", "pulse_high", "medium")]
    assert run([{"pulse": 125}], Limits(delay_readings=1))[0] == [
        (0, "raise", "pulse_high", "medium")
    ]


def test_a_low_spo2_raises_its_limit_alarm_and_the_news2_red_score_alarm_together():
    # SpO2 88 is below the limit (90) and scores 3 on NEWS2 scale 1: a "red score".
    events, state = run([{"spo2": 88}] * 2 + [{}] * 2)
    assert events == [
        (1, "raise", "spo2_low", "medium"),
        (1, "raise", "news2", "medium"),
        (3, "resolve", "spo2_low", "medium"),
        (3, "resolve", "news2", "medium"),
    ]
    assert state.open_alarms() == {}


def test_hysteresis_keeps_an_alarm_open_while_the_value_hovers_at_the_limit():
    # Raised above 120; 118-120 is inside the limit but not 5 below it: no resolve, no flap.
    values = [{"pulse": 124}, {"pulse": 123}] + [{"pulse": p} for p in (119, 121, 118, 122, 120)]
    events, state = run(values)
    assert events == [(1, "raise", "pulse_high", "medium")]
    assert state.open_alarms() == {"pulse_high": "medium"}
    # 115 or less, twice in a row: resolved.
    events, _ = run([{"pulse": 124}, {"pulse": 123}, {"pulse": 115}, {"pulse": 114}])
    assert events[-1] == (3, "resolve", "pulse_high", "medium")


def test_clearing_also_needs_consecutive_readings():
    values = [{"spo2": 85}, {"spo2": 86}, {"spo2": 95}, {"spo2": 87}, {"spo2": 95}, {"spo2": 96}]
    events, _ = run(values)
    assert [e for e in events if e[2] == "spo2_low"] == [
        (1, "raise", "spo2_low", "medium"),
        (5, "resolve", "spo2_low", "medium"),
    ]


def test_critical_values_are_high_priority_and_an_open_alarm_escalates():
    events, _ = run([{"spo2": 88}, {"spo2": 87}, {"spo2": 84}, {"spo2": 82}])
    assert [e for e in events if e[2] == "spo2_low"] == [
        (1, "raise", "spo2_low", "medium"),
        (2, "priority", "spo2_low", "high"),
    ]
    events, _ = run([{"pulse": 160}, {"pulse": 165}])
    assert (1, "raise", "pulse_high", "high") in events


@pytest.mark.parametrize(
    ("changes", "kind"),
    [
        ({"spo2": 89}, "spo2_low"),
        ({"pulse": 49}, "pulse_low"),
        ({"pulse": 121}, "pulse_high"),
        ({"systolic": 89, "diastolic": 60}, "systolic_low"),
        ({"systolic": 161}, "systolic_high"),
        ({"diastolic": 49}, "diastolic_low"),
        ({"diastolic": 91}, "diastolic_high"),
        ({"resp_rate": 7}, "resp_rate_low"),
        ({"resp_rate": 31}, "resp_rate_high"),
        ({"temperature": 34.9}, "temperature_low"),
        ({"temperature": 39.1}, "temperature_high"),
    ],
)
def test_each_bedside_default_limit(changes, kind):
    events, _ = run([changes, changes])
    assert (1, "raise", kind, "medium") in events
    at_limit = {k: (v + 1 if isinstance(v, int) else round(v + 0.1, 1)) for k, v in changes.items()}
    if kind.endswith("_high"):
        at_limit = {
            k: (v - 1 if isinstance(v, int) else round(v - 0.1, 1)) for k, v in changes.items()
        }
    assert not [e for e in run([at_limit, at_limit])[0] if e[2] == kind]


def test_limits_are_per_patient():
    tolerant = Limits(pulse_high=140)
    assert not [e for e in run([{"pulse": 130}] * 3, tolerant)[0] if e[2] == "pulse_high"]


def test_no_pulse_alarms_at_once_with_high_priority():
    events, _ = run([{}, {"pulse": 0, "resp_rate": 0, "spo2": 70, "consciousness": "U"}])
    assert (1, "raise", "asystole", "high") in events


def test_news2_escalation_medium_at_5_high_at_7_and_on_a_single_3():
    # RR 22 (2) + SpO2 94 (1) + HR 105 (1) + T 38.3 (1) = 5: medium.
    five = {"resp_rate": 22, "spo2": 94, "pulse": 105, "temperature": 38.3}
    events, _ = run([five, five])
    assert (1, "raise", "news2", "medium") in events
    # add oxygen (2): 7 -> high, escalating the open alarm.
    seven = {**five, "on_oxygen": True}
    events, _ = run([five, five, seven, seven])
    assert (2, "priority", "news2", "high") in events
    # new confusion alone scores 3: a single 3 triggers the escalation alarm.
    events, _ = run([{"consciousness": "C"}, {"consciousness": "C"}])
    assert (1, "raise", "news2", "medium") in events


def test_news2_alarm_resolves_at_3_or_less_without_a_single_3():
    five = {"resp_rate": 22, "spo2": 94, "pulse": 105, "temperature": 38.3}
    four = {"resp_rate": 22, "spo2": 94, "pulse": 105}  # 4: still open (hysteresis)
    three = {"resp_rate": 22, "spo2": 94}  # 3
    events, _ = run([five, five, four, four, four, three, three])
    assert [e for e in events if e[2] == "news2"] == [
        (1, "raise", "news2", "medium"),
        (6, "resolve", "news2", "medium"),
    ]


def test_artefacts_neither_raise_nor_reset_physiological_conditions():
    probe_off = {"spo2": 0, "artefact": "spo2_probe_off"}
    events, _ = run([{"spo2": 88}, probe_off, {"spo2": 88}])
    assert (2, "raise", "spo2_low", "medium") in events  # the artefact did not reset the count
    assert (1, "raise", "spo2_probe_off", "low") in events
    assert (2, "resolve", "spo2_probe_off", "low") in events
    motion = {"pulse": 190, "artefact": "motion"}
    assert run([motion, motion, motion])[0] == []


def test_readings_count_in_the_order_given_whatever_their_stamps_and_time_never_goes_back():
    # A monitor whose clock is set back 5 s between two readings: the second is the present
    # all the same (issue 14: a clock off either way must not blind the alarms). Duplicates
    # never reach the detector: the database drops them first.
    state = PatientAlarms()
    high = R(measured_at=T0, pulse=130)
    assert state.evaluate(high, None, Limits()) == []
    set_back = R(measured_at=T0 - timedelta(seconds=5), pulse=130)
    [decision] = state.evaluate(set_back, None, Limits())
    assert decision == Decision(
        action="raise",
        kind="pulse_high",
        priority="medium",
        value=130,
        threshold=120,
        message="Pulse high: 130 /min (> 120)",
        at=T0,  # not before the reading judged before it
    )
    # An explicit time (the engine's corrected one) is used as given when it moves forward.
    normal = R(measured_at=T0 - timedelta(seconds=4), pulse=72)
    later = T0 + timedelta(seconds=10)
    assert state.evaluate(normal, None, Limits(), at=later) == []
    [resolved] = state.evaluate(normal, None, Limits(), at=later + timedelta(seconds=5))
    assert (resolved.action, resolved.at) == ("resolve", later + timedelta(seconds=5))


def test_warm_up_rebuilds_counters_without_deciding():
    state = PatientAlarms()
    first = R(measured_at=T0, pulse=130)
    assert state.evaluate(first, None, Limits(), warm_up=True) == []
    [decision] = state.evaluate(R(measured_at=T0 + timedelta(seconds=5), pulse=131), None, Limits())
    assert (decision.action, decision.kind) == ("raise", "pulse_high")


def test_an_alarm_known_open_is_not_raised_again_and_can_resolve():
    state = PatientAlarms()
    state.mark_open("pulse_high", "medium")
    events, _ = run([{"pulse": 125}, {"pulse": 125}, {}, {}], state=state)
    assert events == [(3, "resolve", "pulse_high", "medium")]


def test_every_kind_is_listed_once():
    # a low and a high for each sign but SpO2 (low only), and six alarms of no limit
    assert len(ALARM_KINDS) == len(set(ALARM_KINDS)) == 28  # 7 of them `<field>_refused`


def test_an_alarm_switched_off_is_not_judged_and_an_open_one_resolves():
    # Pulse 125: NEWS2 2, so only the limit alarm is in play.
    off = Limits(off=frozenset({"pulse_high"}))
    assert run([{"pulse": 125}] * 5, off)[0] == []

    state = PatientAlarms()
    state.mark_open("pulse_high", "medium")
    events, state = run([{"pulse": 125}, {"pulse": 125}], off, state)
    assert events == [(0, "resolve", "pulse_high", "medium")]
    assert state.open_alarms() == {}

    # Counted while on, switched off, back on: the count starts again, then it alarms.
    state = PatientAlarms()

    def at(i: int, limits: Limits) -> list[tuple]:
        reading = R(measured_at=T0 + timedelta(seconds=5 * i), pulse=125)
        return [(d.action, d.kind) for d in state.evaluate(reading, None, limits)]

    assert (at(0, Limits()), at(1, off), at(2, Limits())) == ([], [], [])
    assert at(3, Limits()) == [("raise", "pulse_high")]


def test_news2_and_asystole_sound_whatever_is_switched_off():
    everything = Limits(off=frozenset(ALARM_KINDS))
    arrest = {"pulse": 0, "resp_rate": 0, "systolic": 40, "diastolic": 20, "spo2": 70}
    events, _ = run([arrest, arrest], everything)
    assert events == [(0, "raise", "asystole", "high"), (1, "raise", "news2", "high")]


# --- Partial readings (contract version 2): each sign judged as it arrives ------------------------

NOTHING = dict.fromkeys(("pulse", "resp_rate", "systolic", "diastolic", "spo2", "temperature"))
BP_85_50 = {**NOTHING, "systolic": 85, "diastolic": 50}  # MAP 62
SPO2_ONLY = {**NOTHING, "spo2": 97}


def physiological(events: list[tuple]) -> list[tuple]:
    """The events but the technical sign_missing (readings with a blood pressure only lack the
    pulse, resp. rate and SpO2: test_a_continuous_sign_without_a_valid_value_... has those)."""
    return [event for event in events if event[2] != "sign_missing"]


def test_a_reading_with_only_a_low_blood_pressure_counts_systolic_low_and_map_low():
    events = physiological(run([BP_85_50, BP_85_50])[0])

    # Systolic 85 scores 3 (a red score): NEWS2 escalates on the incomplete score too.
    assert events == [
        (1, "raise", "systolic_low", "medium"),
        (1, "raise", "map_low", "medium"),
        (1, "raise", "news2", "medium"),
    ]


def test_readings_without_a_sign_leave_its_conditions_untouched():
    # A breach, SpO2-only readings (neither breach nor clear), the second breach raises.
    events, state = run([BP_85_50, SPO2_ONLY, SPO2_ONLY, SPO2_ONLY, BP_85_50])
    assert physiological(events) == [
        (4, "raise", "systolic_low", "medium"),
        (4, "raise", "map_low", "medium"),
        (4, "raise", "news2", "medium"),
    ]
    # Open: SpO2-only readings do not resolve them; two normal blood pressures do (the limit
    # alarms; NEWS2 stays open: those readings' scores are incomplete, and only a complete
    # score clears it).
    normal_bp = {**NOTHING, "systolic": 120, "diastolic": 80}
    events, _ = run([SPO2_ONLY] * 5 + [normal_bp, SPO2_ONLY, normal_bp], state=state)
    assert physiological(events) == [
        (7, "resolve", "systolic_low", "medium"),
        (7, "resolve", "map_low", "medium"),
    ]


def test_asystole_is_judged_from_a_measured_pulse_only():
    state = PatientAlarms()
    state.mark_open("asystole", "high")

    assert physiological(run([SPO2_ONLY] * 3, state=state)[0]) == []
    assert physiological(run([{**NOTHING, "pulse": 72}], state=state)[0]) == [
        (0, "resolve", "asystole", "high")
    ]


def test_an_incomplete_news2_that_already_triggers_raises_and_one_that_does_not_never_clears():
    """An incomplete score (a parameter without a valid value) is a lower bound: the missing
    parameters can only add. A patient whose blood-pressure cuff stopped but who scores 9 on
    the rest must not go unannounced: it raises (and rises); an incomplete low score says
    nothing (neither clears nor lowers), only a complete one clears."""
    state = PatientAlarms()
    subscores = {"resp_rate": 3, "spo2": 3, "on_oxygen": 0, "systolic": None, "pulse": 3}
    incomplete_9 = News2(9, "high", subscores, complete=False, missing=("systolic",))
    incomplete_5 = News2(5, "medium", subscores, complete=False, missing=("systolic",))
    incomplete_0 = News2(0, "low", dict.fromkeys(subscores), complete=False, missing=("spo2",))
    complete_0 = News2(0, "low", dict.fromkeys(subscores, 0))

    def judge(news2: News2, i: int) -> list[tuple]:
        reading = R(measured_at=T0 + timedelta(seconds=5 * i))
        return [
            (d.action, d.kind, d.priority, d.message)
            for d in state.evaluate(reading, news2, Limits())
            if d.kind == "news2"
        ]

    raised = (
        "raise",
        "news2",
        "high",
        "NEWS2 9 or more (high risk; incomplete: no valid Systolic BP)",
    )
    assert [judge(incomplete_9, i) for i in range(3)] == [[], [raised], []]
    # A lower incomplete score does not lower the priority, and a low one does not clear.
    assert [judge(incomplete_5, i) for i in range(3, 6)] == [[], [], []]
    assert [judge(incomplete_0, i) for i in range(6, 9)] == [[], [], []]
    assert judge(complete_0, 9) == []
    assert judge(complete_0, 10) == [("resolve", "news2", "high", "NEWS2 0 (low risk)")]


def test_a_continuous_sign_without_a_valid_value_raises_a_technical_alarm():
    """Readings keep coming without an SpO2 (an oximeter off the finger that does not say
    so): its limit alarm can no longer sound, so its silence is an alarm (low, technical),
    after the delay; a sign monitored now and then (temperature) is not; an SpO2 whose
    probe-off alarm is open is not counted twice; a valid SpO2 again resolves it."""
    state = PatientAlarms()
    scored = {"resp_rate": 0, "on_oxygen": 0, "systolic": 0, "pulse": 0, "consciousness": 0}

    def news2(*missing: str) -> News2:
        subscores = {**scored, "spo2": 0, "temperature": 0} | dict.fromkeys(missing)
        return News2(0, "low", subscores, complete=not missing, missing=missing)

    def judge(score: News2, i: int, **values) -> list[tuple]:
        reading = R(measured_at=T0 + timedelta(seconds=5 * i), **values)
        return [
            (d.action, d.kind, d.priority, d.value, d.message)
            for d in state.evaluate(reading, score, Limits())
        ]

    assert [judge(news2("temperature"), i) for i in range(3)] == [[], [], []]
    assert [judge(news2("spo2"), i, spo2=None) for i in range(3, 5)] == [
        [],
        [("raise", "sign_missing", "low", 1, "No valid SpO2: sensor off?")],
    ]
    assert judge(news2("spo2", "pulse"), 5, spo2=None, pulse=None) == []  # open: no new event
    assert [judge(news2(), i) for i in range(6, 8)] == [
        [],
        [("resolve", "sign_missing", "low", 0, "Every sign measured again")],
    ]
    # The probe-off alarm says it already.
    probe_off = {"spo2": None, "artefact": "spo2_probe_off"}
    assert [[d[1] for d in judge(news2("spo2"), i, **probe_off)] for i in range(8, 11)] == [
        ["spo2_probe_off"],
        [],
        [],
    ]


def test_a_version_2_probe_off_reading_is_judged_without_spo2():
    """Version 2: the probe off means no SpO2, the other signs are the patient's (pulse 130
    counts). Version 1 sends a value that is not the patient's: nothing physiological counts.
    The technical alarm clears with a reading that has an SpO2, not with one that has none."""
    v2_probe_off = {"spo2": None, "pulse": 130, "artefact": "spo2_probe_off"}
    v1_probe_off = {"spo2": 60, "pulse": 130, "artefact": "spo2_probe_off"}

    assert run([v2_probe_off, v2_probe_off])[0] == [
        (0, "raise", "spo2_probe_off", "low"),
        (1, "raise", "pulse_high", "medium"),
    ]
    events, state = run([v1_probe_off, v1_probe_off])
    assert events == [(0, "raise", "spo2_probe_off", "low")]
    assert run([{"spo2": None}, {}], state=state)[0] == [(1, "resolve", "spo2_probe_off", "low")]
