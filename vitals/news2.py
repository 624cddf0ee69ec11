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

Pure and dependency-free: no Django, no database.
"""

from dataclasses import dataclass
from typing import Protocol

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
    subscores: dict[str, int]  # keys exactly SUBSCORE_KEYS, in that order


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


def _risk(score: int, subscores: dict[str, int]) -> str:
    if score >= HIGH_AT:
        return "high"
    if score >= MEDIUM_AT:
        return "medium"
    if 3 in subscores.values():
        return "low-medium"
    return "low"


def news2_score(
    *,
    resp_rate: int,
    spo2: int,
    on_oxygen: bool,
    systolic: int,
    pulse: int,
    consciousness: str,
    temperature: float,
    spo2_scale: int = 1,
) -> News2:
    """The NEWS2 of one set of observations (Chart 1 scores, Chart 2 risk).

    `consciousness` is one ACVPU letter (upper case); `spo2_scale` is 1, or 2 for a patient with
    hypercapnic respiratory failure. Raises ValueError for anything else.
    """
    # bool is an int (True == 1): refuse it rather than read it as scale 1.
    if isinstance(spo2_scale, bool) or spo2_scale not in SPO2_SCALES:
        raise ValueError(f"spo2_scale must be 1 or 2, got {spo2_scale!r}")
    # A tuple, not the string "ACVPU": "" and "AC" are substrings of it.
    if consciousness not in CONSCIOUSNESS_LEVELS:
        raise ValueError(f"consciousness must be one of A, C, V, P, U, got {consciousness!r}")
    subscores = {
        "resp_rate": _band(resp_rate, _RESP_RATE, _RESP_RATE_ABOVE),
        "spo2": _spo2(spo2, on_oxygen=on_oxygen, scale=spo2_scale),
        "on_oxygen": _OXYGEN if on_oxygen else 0,
        "systolic": _band(systolic, _SYSTOLIC, _SYSTOLIC_ABOVE),
        "pulse": _band(pulse, _PULSE, _PULSE_ABOVE),
        "consciousness": 0 if consciousness == "A" else _NOT_ALERT,
        "temperature": _temperature(temperature),
    }
    score = sum(subscores.values())
    return News2(score=score, risk=_risk(score, subscores), subscores=subscores)


class Observations(Protocol):
    """A reading as the contract parses it or as it is stored: the seven observations and the
    monitor's artefact flag."""

    resp_rate: int
    spo2: int
    on_oxygen: bool
    systolic: int
    pulse: int
    consciousness: str
    temperature: float
    artefact: str | None


def news2_of(observations: Observations, *, spo2_scale: int = 1) -> News2 | None:
    """The NEWS2 of a reading; None for one flagged as a sensor artefact, whose values are not
    the patient's and are not scored."""
    if observations.artefact:
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
