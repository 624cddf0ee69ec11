"""NEWS2, the National Early Warning Score 2 of the Royal College of Physicians (RCP).

NEWS2 is the track-and-trigger score used across the NHS to detect a deteriorating adult
patient: each of seven bedside observations scores 0-3 by how far it lies from normal, and the
sum (0-20) sets the clinical risk and the urgency of the response.

Source: Royal College of Physicians. National Early Warning Score (NEWS) 2: Standardising the
assessment of acute-illness severity in the NHS. Updated report of a working party. London: RCP,
December 2017; Chart 1 (the NEWS scoring system) and Chart 2 (thresholds and triggers). Checked
against a transcription of Chart 1 (scribd.com/document/584338409, "NEWS2 Chart 1 - The NEWS
scoring system", (c) RCP 2017), Table 1 of a Thorax (BMJ) article on the two SpO2 scales, and
the NEWS2 cut points as tabulated in an RCP journal (Clinical Medicine) article.

Chart 1, the score of each parameter (a band's edges are both inclusive):

    Score:            3        2        1          0           1         2         3
    Resp. rate /min   <=8               9-11       12-20                 21-24     >=25
    SpO2 Scale 1 %    <=91     92-93    94-95      >=96
    SpO2 Scale 2 %    <=83     84-85    86-87      88-92       93-94     95-96     >=97
                                                   >=93 air    on O2     on O2     on O2
    Air or oxygen?             oxygen              air
    Systolic mmHg     <=90     91-100   101-110    111-219                         >=220
    Pulse /min        <=40              41-50      51-90       91-110    111-130   >=131
    Consciousness                                  A                               C, V, P, U
    Temperature degC  <=35.0            35.1-36.0  36.1-38.0   38.1-39.0 >=39.1

SpO2 Scale 2 is only for a patient with hypercapnic respiratory failure whose prescribed target
is 88-92% (decided by a clinician; here `Patient.hypercapnic_respiratory_failure`): a saturation
of 93% or more then scores 0 on air but 1-3 on oxygen (over-oxygenation); Scale 1 is for everyone
else. Consciousness is ACVPU: Alert, new Confusion, Voice, Pain, Unresponsive. The temperature is
scored after rounding to one decimal, as it is charted.

Chart 2, the clinical risk of the aggregate score (sum of the seven, 0-20):

    7 or more                                                        high
    5 or 6                                                           medium
    0-4 with a score of 3 in any single parameter ("red score")      low-medium
    0-4 otherwise                                                    low

A parameter may be missing: readings of contract version 2 carry any subset of the signs, and a
reading's NEWS2 uses each parameter's newest value within its validity window (`news2_latest`:
SpO2, pulse and respiratory rate 5 min, systolic 30 min, temperature, consciousness and air or
oxygen 60 min by default; settings.SIGN_VALIDITY). A parameter with no valid value is `missing`:
the score is then the sum of the parameters that have one, marked incomplete (`complete`
False), and its sub-score is None. An incomplete score is a lower bound: it never triggers or
clears the NEWS2 escalation alarm (vitals/alarms.py).

Pure and dependency-free: no Django, no database.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from vitals.signs import OBSERVATION_VALIDITY, SIGNS

SUBSCORE_KEYS = (
    "resp_rate",
    "spo2",
    "on_oxygen",
    "systolic",
    "pulse",
    "consciousness",
    "temperature",
)
RISKS = ("low", "low-medium", "medium", "high")
SPO2_SCALES = (1, 2)
CONSCIOUSNESS_LEVELS = ("A", "C", "V", "P", "U")

HIGH_AT = 7
MEDIUM_AT = 5

# Bands as (highest value of the band, score), ascending; above the last band: the last score.
_Bands = tuple[tuple[float, int], ...]
_RESP_RATE: _Bands = ((8, 3), (11, 1), (20, 0), (24, 2))
_RESP_RATE_ABOVE = 3
_SPO2_SCALE_1: _Bands = ((91, 3), (93, 2), (95, 1))
_SPO2_SCALE_1_ABOVE = 0
_SPO2_SCALE_2: _Bands = ((83, 3), (85, 2), (87, 1), (92, 0))
_SPO2_SCALE_2_ABOVE_ON_AIR = 0
_SPO2_SCALE_2_ABOVE_ON_OXYGEN: _Bands = ((94, 1), (96, 2))
_SPO2_SCALE_2_ABOVE_ON_OXYGEN_TOP = 3
_SYSTOLIC: _Bands = ((90, 3), (100, 2), (110, 1), (219, 0))
_SYSTOLIC_ABOVE = 3
_PULSE: _Bands = ((40, 3), (50, 1), (90, 0), (110, 1), (130, 2))
_PULSE_ABOVE = 3
# In tenths of a degree, so that the edges are exact integers, not floats.
_TEMPERATURE_TENTHS: _Bands = ((350, 3), (360, 1), (380, 0), (390, 1))
_TEMPERATURE_ABOVE = 2
_OXYGEN = 2
_NOT_ALERT = 3


@dataclass(frozen=True, slots=True)
class News2:
    score: int
    risk: str  # one of RISKS
    # Keys exactly SUBSCORE_KEYS, in that order; None for a parameter missing.
    subscores: dict[str, int | None]
    # Every parameter had a valid value; else `missing` names those without (SUBSCORE_KEYS order).
    complete: bool = True
    missing: tuple[str, ...] = ()


def _band(value: float, bands: _Bands, above: int) -> int:
    for highest, score in bands:
        if value <= highest:
            return score
    return above


def _spo2(spo2: int, *, on_oxygen: bool, scale: int) -> int:
    if scale == 1:
        return _band(spo2, _SPO2_SCALE_1, _SPO2_SCALE_1_ABOVE)
    if spo2 <= _SPO2_SCALE_2[-1][0] or not on_oxygen:
        return _band(spo2, _SPO2_SCALE_2, _SPO2_SCALE_2_ABOVE_ON_AIR)
    return _band(spo2, _SPO2_SCALE_2_ABOVE_ON_OXYGEN, _SPO2_SCALE_2_ABOVE_ON_OXYGEN_TOP)


def _temperature(temperature: float) -> int:
    # Round to one decimal first (36.04 is 36.0), then count whole tenths: 35.1 * 10 is
    # 351.00000000000006 as a float, which must not fall above the 351 edge.
    tenths = round(round(float(temperature), 1) * 10)
    return _band(tenths, _TEMPERATURE_TENTHS, _TEMPERATURE_ABOVE)


def _risk(score: int, subscores: dict[str, int | None]) -> str:
    if score >= HIGH_AT:
        return "high"
    if score >= MEDIUM_AT:
        return "medium"
    if 3 in subscores.values():
        return "low-medium"
    return "low"


def news2_score(
    *,
    resp_rate: int | None,
    spo2: int | None,
    on_oxygen: bool | None,
    systolic: int | None,
    pulse: int | None,
    consciousness: str | None,
    temperature: float | None,
    spo2_scale: int = 1,
) -> News2:
    """The NEWS2 of one set of observations (Chart 1 scores, Chart 2 risk).

    `consciousness` is one ACVPU letter (upper case); `spo2_scale` is 1, or 2 for a patient with
    hypercapnic respiratory failure. Raises ValueError for anything else. None is a parameter
    missing: the score is the sum of the others, incomplete. SpO2 on Scale 2 above 92% is
    scored by air or oxygen, so it is missing too when that is.
    """
    # bool is an int (True == 1): refuse it rather than read it as scale 1.
    if isinstance(spo2_scale, bool) or spo2_scale not in SPO2_SCALES:
        raise ValueError(f"spo2_scale must be 1 or 2, got {spo2_scale!r}")
    # A tuple, not the string "ACVPU": "" and "AC" are substrings of it.
    if consciousness is not None and consciousness not in CONSCIOUSNESS_LEVELS:
        raise ValueError(f"consciousness must be one of A, C, V, P, U, got {consciousness!r}")
    spo2_needs_oxygen = spo2 is not None and spo2_scale == 2 and spo2 > _SPO2_SCALE_2[-1][0]
    subscores: dict[str, int | None] = {
        "resp_rate": None if resp_rate is None else _band(resp_rate, _RESP_RATE, _RESP_RATE_ABOVE),
        "spo2": (
            None
            if spo2 is None or (spo2_needs_oxygen and on_oxygen is None)
            else _spo2(spo2, on_oxygen=bool(on_oxygen), scale=spo2_scale)
        ),
        "on_oxygen": None if on_oxygen is None else (_OXYGEN if on_oxygen else 0),
        "systolic": None if systolic is None else _band(systolic, _SYSTOLIC, _SYSTOLIC_ABOVE),
        "pulse": None if pulse is None else _band(pulse, _PULSE, _PULSE_ABOVE),
        "consciousness": (
            None if consciousness is None else 0 if consciousness == "A" else _NOT_ALERT
        ),
        "temperature": None if temperature is None else _temperature(temperature),
    }
    missing = tuple(key for key, value in subscores.items() if value is None)
    score = sum(value for value in subscores.values() if value is not None)
    return News2(
        score=score,
        risk=_risk(score, subscores),
        subscores=subscores,
        complete=not missing,
        missing=missing,
    )


class Observations(Protocol):
    """A reading as the contract parses it or as it is stored: the seven observations (None:
    not measured) and the monitor's artefact flag."""

    resp_rate: int | None
    spo2: int | None
    on_oxygen: bool
    systolic: int | None
    pulse: int | None
    consciousness: str
    temperature: float | None
    artefact: str | None


def artefact_voids(observations: Observations) -> bool:
    """Whether a reading's values are not the patient's at all: one flagged as an artefact
    (contract version 1: every value is sent, the suspect one too), except an SpO2 probe-off
    without SpO2 (version 2: SpO2 is simply not measured; the other signs are real)."""
    artefact = observations.artefact
    if not artefact:
        return False
    return not (artefact == "spo2_probe_off" and observations.spo2 is None)


def news2_of(observations: Observations, *, spo2_scale: int = 1) -> News2 | None:
    """The NEWS2 of a reading from its own values alone; None for one whose values are not the
    patient's (`artefact_voids`), which is not scored."""
    if artefact_voids(observations):
        return None
    return news2_score(
        resp_rate=observations.resp_rate,
        spo2=observations.spo2,
        on_oxygen=observations.on_oxygen,
        systolic=observations.systolic,
        pulse=observations.pulse,
        consciousness=observations.consciousness,
        temperature=observations.temperature,
        spo2_scale=spo2_scale,
    )


# How long a value stays valid for scoring, by parameter (SUBSCORE_KEYS names): the registry's.
VALIDITY: dict[str, timedelta] = {
    **{sign.key: sign.valid_for for sign in SIGNS if sign.news2},
    **OBSERVATION_VALIDITY,
}


def news2_latest(
    latest: Mapping[str, tuple[object, datetime]],
    *,
    at: datetime,
    validity: Mapping[str, timedelta] = VALIDITY,
    spo2_scale: int = 1,
) -> News2:
    """The NEWS2 at time `at` from each parameter's newest value, `latest`: parameter ->
    (value, when it was measured). A value measured at most its window before `at` is valid
    (the edge included; one measured after `at`, by a reading that arrived before, too); a
    parameter without a valid value is missing."""
    values = {}
    for key in SUBSCORE_KEYS:
        newest = latest.get(key)
        valid = newest is not None and at - newest[1] <= validity[key]
        values[key] = newest[0] if valid else None
    return news2_score(**values, spo2_scale=spo2_scale)


# What a patient's newest values are kept for (Patient.latest_signs): every sign of the registry
# and the two observations that are not signs.
LATEST_KEYS: tuple[str, ...] = (*(sign.key for sign in SIGNS), "consciousness", "on_oxygen")


class Measured(Protocol):
    measured_at: datetime


def news2_track(
    latest: dict[str, tuple[object, datetime]],
    reading: Measured,
    *,
    validity: Mapping[str, timedelta] = VALIDITY,
    spo2_scale: int = 1,
    fold: bool = True,
) -> News2 | None:
    """The NEWS2 of the next reading received from a patient whose newest values are `latest`
    (key of LATEST_KEYS -> (value, when measured)), and `latest` brought up to date with it.

    The reading's own values, and for the parameters it did not measure the newest within
    their window (`news2_latest`). The reading's values replace those kept whatever its stamp:
    the newest is the newest *received* (docs/alarms.md, "Monitor clocks"), so the values a
    monitor measures after its clock, which ran ahead, was set right are kept at once. The
    caller folds only readings received for the first time (a reading delivered again is not
    stored again: `reading_bulk_store` scores it, but keeps the values of before it), and
    `fold=False` scores a reading without keeping its values (a late one). None (and `latest`
    untouched) for a reading whose values are not the patient's (`artefact_voids`).
    """
    if artefact_voids(reading):
        return None
    at = reading.measured_at
    own = {
        key: (value, at)
        for key in LATEST_KEYS
        if (value := getattr(reading, key, None)) is not None
    }
    news2 = news2_latest({**latest, **own}, at=at, validity=validity, spo2_scale=spo2_scale)
    if fold:
        latest.update(own)
    return news2
