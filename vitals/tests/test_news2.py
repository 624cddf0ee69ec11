"""NEWS2 scoring against the RCP 2017 chart: every band edge of every parameter, the risk bands.

The expected values are written out from the chart (Chart 1 scores, Chart 2 risk), not computed:
a table here is the chart, so a wrong threshold in `vitals/news2.py` shows as a failing edge.
Pure unit tests: no database.
"""

import uuid
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from vitals.contract import CONSCIOUSNESS_LEVELS, Reading
from vitals.news2 import (
    RISKS,
    SUBSCORE_KEYS,
    VALIDITY,
    News2,
    artefact_voids,
    news2_latest,
    news2_of,
    news2_score,
)

# Observations that score 0 on every parameter: a well adult on room air.
NORMAL: dict[str, Any] = {
    "resp_rate": 16,
    "spo2": 98,
    "on_oxygen": False,
    "systolic": 120,
    "pulse": 70,
    "consciousness": "A",
    "temperature": 36.8,
}


def score(**changes: Any) -> News2:
    return news2_score(**{**NORMAL, **changes})


def assert_only(result: News2, key: str, expected: int) -> None:
    """`key` scores `expected`, every other parameter 0, and the aggregate is that score."""
    assert result.subscores[key] == expected, result.subscores
    assert {
        name: value for name, value in result.subscores.items() if name != key
    } == dict.fromkeys((name for name in SUBSCORE_KEYS if name != key), 0)
    assert result.score == expected


def cases(rows: list[tuple[Any, int]], unit: str = "") -> list[Any]:
    return [
        pytest.param(value, expected, id=f"{value}{unit}->{expected}") for value, expected in rows
    ]


# --- Chart 1: one parameter at a time -----------------------------------------------------------

# Respiration rate: <=8 3 | 9-11 1 | 12-20 0 | 21-24 2 | >=25 3
RESP_RATE = [
    (0, 3),
    (8, 3),
    (9, 1),
    (11, 1),
    (12, 0),
    (20, 0),
    (21, 2),
    (24, 2),
    (25, 3),
    (100, 3),
]


@pytest.mark.parametrize(("resp_rate", "expected"), cases(RESP_RATE, "/min"))
def test_resp_rate(resp_rate: int, expected: int):
    assert_only(score(resp_rate=resp_rate), "resp_rate", expected)


# SpO2 Scale 1: <=91 3 | 92-93 2 | 94-95 1 | >=96 0. Oxygen does not change the SpO2 score.
SPO2_SCALE_1 = [
    (0, 3),
    (91, 3),
    (92, 2),
    (93, 2),
    (94, 1),
    (95, 1),
    (96, 0),
    (100, 0),
]


@pytest.mark.parametrize(("spo2", "expected"), cases(SPO2_SCALE_1, "%"))
def test_spo2_scale_1_on_air(spo2: int, expected: int):
    assert_only(score(spo2=spo2, spo2_scale=1), "spo2", expected)


@pytest.mark.parametrize(("spo2", "expected"), cases(SPO2_SCALE_1, "%"))
def test_spo2_scale_1_on_oxygen(spo2: int, expected: int):
    result = score(spo2=spo2, on_oxygen=True, spo2_scale=1)

    assert result.subscores["spo2"] == expected
    assert result.subscores["on_oxygen"] == 2
    assert result.score == expected + 2


@pytest.mark.parametrize(("spo2", "expected"), cases(SPO2_SCALE_1, "%"))
def test_spo2_scale_1_is_the_default(spo2: int, expected: int):
    assert_only(score(spo2=spo2), "spo2", expected)


# SpO2 Scale 2 on air: <=83 3 | 84-85 2 | 86-87 1 | 88-92 0 | >=93 on air 0
SPO2_SCALE_2_ON_AIR = [
    (0, 3),
    (83, 3),
    (84, 2),
    (85, 2),
    (86, 1),
    (87, 1),
    (88, 0),
    (92, 0),
    (93, 0),
    (94, 0),
    (95, 0),
    (96, 0),
    (97, 0),
    (100, 0),
]


@pytest.mark.parametrize(("spo2", "expected"), cases(SPO2_SCALE_2_ON_AIR, "%"))
def test_spo2_scale_2_on_air(spo2: int, expected: int):
    assert_only(score(spo2=spo2, spo2_scale=2), "spo2", expected)


# SpO2 Scale 2 on oxygen: as on air up to 92, then 93-94 1 | 95-96 2 | >=97 3 (over-oxygenated).
SPO2_SCALE_2_ON_OXYGEN = [
    (0, 3),
    (83, 3),
    (84, 2),
    (85, 2),
    (86, 1),
    (87, 1),
    (88, 0),
    (92, 0),
    (93, 1),
    (94, 1),
    (95, 2),
    (96, 2),
    (97, 3),
    (100, 3),
]


@pytest.mark.parametrize(("spo2", "expected"), cases(SPO2_SCALE_2_ON_OXYGEN, "%"))
def test_spo2_scale_2_on_oxygen(spo2: int, expected: int):
    result = score(spo2=spo2, on_oxygen=True, spo2_scale=2)

    assert result.subscores["spo2"] == expected
    assert result.subscores["on_oxygen"] == 2
    assert result.score == expected + 2


@pytest.mark.parametrize(
    ("spo2", "scale_1", "scale_2"),
    [
        pytest.param(88, 3, 0, id="88%-target-of-scale-2"),
        pytest.param(92, 2, 0, id="92%-top-of-scale-2-target"),
        pytest.param(96, 0, 0, id="96%-on-air"),
    ],
)
def test_scale_2_scores_its_target_range_0(spo2: int, scale_1: int, scale_2: int):
    assert score(spo2=spo2, spo2_scale=1).subscores["spo2"] == scale_1
    assert score(spo2=spo2, spo2_scale=2).subscores["spo2"] == scale_2


# Air or oxygen: oxygen 2 | air 0
@pytest.mark.parametrize(
    ("on_oxygen", "expected"),
    [pytest.param(False, 0, id="air->0"), pytest.param(True, 2, id="oxygen->2")],
)
def test_air_or_oxygen(on_oxygen: bool, expected: int):
    assert_only(score(on_oxygen=on_oxygen), "on_oxygen", expected)


# Systolic blood pressure: <=90 3 | 91-100 2 | 101-110 1 | 111-219 0 | >=220 3
SYSTOLIC = [
    (0, 3),
    (30, 3),
    (90, 3),
    (91, 2),
    (100, 2),
    (101, 1),
    (110, 1),
    (111, 0),
    (219, 0),
    (220, 3),
    (300, 3),
]


@pytest.mark.parametrize(("systolic", "expected"), cases(SYSTOLIC, "mmHg"))
def test_systolic(systolic: int, expected: int):
    assert_only(score(systolic=systolic), "systolic", expected)


# Pulse: <=40 3 | 41-50 1 | 51-90 0 | 91-110 1 | 111-130 2 | >=131 3
PULSE = [
    (0, 3),
    (40, 3),
    (41, 1),
    (50, 1),
    (51, 0),
    (90, 0),
    (91, 1),
    (110, 1),
    (111, 2),
    (130, 2),
    (131, 3),
    (300, 3),
]


@pytest.mark.parametrize(("pulse", "expected"), cases(PULSE, "/min"))
def test_pulse(pulse: int, expected: int):
    assert_only(score(pulse=pulse), "pulse", expected)


# Consciousness (ACVPU): Alert 0 | new Confusion, Voice, Pain, Unresponsive 3
@pytest.mark.parametrize(
    ("consciousness", "expected"),
    [
        pytest.param("A", 0, id="alert->0"),
        pytest.param("C", 3, id="new-confusion->3"),
        pytest.param("V", 3, id="voice->3"),
        pytest.param("P", 3, id="pain->3"),
        pytest.param("U", 3, id="unresponsive->3"),
    ],
)
def test_consciousness(consciousness: str, expected: int):
    assert_only(score(consciousness=consciousness), "consciousness", expected)


# Temperature: <=35.0 3 | 35.1-36.0 1 | 36.1-38.0 0 | 38.1-39.0 1 | >=39.1 2
TEMPERATURE = [
    (25.0, 3),
    (34.9, 3),
    (35.0, 3),
    (35.1, 1),
    (36.0, 1),
    (36.1, 0),
    (37.0, 0),
    (38.0, 0),
    (38.1, 1),
    (39.0, 1),
    (39.1, 2),
    (45.0, 2),
]


@pytest.mark.parametrize(("temperature", "expected"), cases(TEMPERATURE, "C"))
def test_temperature(temperature: float, expected: int):
    assert_only(score(temperature=temperature), "temperature", expected)


@pytest.mark.parametrize(
    ("temperature", "expected"),
    [
        # Floats that are not exactly the decimal they print as, from arithmetic.
        pytest.param(35.0 + 0.1, 1, id="35.0+0.1->1"),
        pytest.param(0.1 * 351, 1, id="0.1*351->1"),
        pytest.param(36.2 - 0.1, 0, id="36.2-0.1->0"),
        pytest.param(0.1 * 361, 0, id="0.1*361->0"),
        pytest.param(37.9 + 0.1, 0, id="37.9+0.1->0"),
        pytest.param(0.1 * 381, 1, id="0.1*381->1"),
        pytest.param(38.9 + 0.1, 1, id="38.9+0.1->1"),
        pytest.param(0.1 * 391, 2, id="0.1*391->2"),
        # More than one decimal: scored as charted, rounded to one decimal.
        pytest.param(35.04, 3, id="35.04-is-35.0->3"),
        pytest.param(35.06, 1, id="35.06-is-35.1->1"),
        pytest.param(36.04, 1, id="36.04-is-36.0->1"),
        pytest.param(36.06, 0, id="36.06-is-36.1->0"),
        pytest.param(38.04, 0, id="38.04-is-38.0->0"),
        pytest.param(38.06, 1, id="38.06-is-38.1->1"),
        pytest.param(39.04, 1, id="39.04-is-39.0->1"),
        pytest.param(39.06, 2, id="39.06-is-39.1->2"),
        # Whole degrees as int.
        pytest.param(35, 3, id="int-35->3"),
        pytest.param(36, 1, id="int-36->1"),
        pytest.param(37, 0, id="int-37->0"),
        pytest.param(39, 1, id="int-39->1"),
        pytest.param(40, 2, id="int-40->2"),
    ],
)
def test_temperature_compares_robustly(temperature: float, expected: int):
    assert_only(score(temperature=temperature), "temperature", expected)


# --- Aggregate and Chart 2 risk -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "subscores", "expected_score", "risk"),
    [
        pytest.param({}, (0, 0, 0, 0, 0, 0, 0), 0, "low", id="all-normal-0-low"),
        pytest.param({"temperature": 38.1}, (0, 0, 0, 0, 0, 0, 1), 1, "low", id="1-low"),
        pytest.param(
            {"resp_rate": 21, "pulse": 111},
            (2, 0, 0, 0, 2, 0, 0),
            4,
            "low",
            id="4-without-a-3-low",
        ),
        pytest.param(
            {"spo2": 94, "systolic": 101, "pulse": 91, "temperature": 38.1},
            (0, 1, 0, 1, 1, 0, 1),
            4,
            "low",
            id="4-as-four-1s-low",
        ),
        pytest.param({"resp_rate": 25}, (3, 0, 0, 0, 0, 0, 0), 3, "low-medium", id="3-single-3"),
        pytest.param(
            {"consciousness": "C"}, (0, 0, 0, 0, 0, 3, 0), 3, "low-medium", id="3-new-confusion"
        ),
        pytest.param(
            {"resp_rate": 25, "temperature": 38.1},
            (3, 0, 0, 0, 0, 0, 1),
            4,
            "low-medium",
            id="4-with-a-3-low-medium",
        ),
        pytest.param(
            {"resp_rate": 21, "pulse": 111, "temperature": 38.1},
            (2, 0, 0, 0, 2, 0, 1),
            5,
            "medium",
            id="5-without-a-3-medium",
        ),
        pytest.param(
            {"systolic": 90, "on_oxygen": True},
            (0, 0, 2, 3, 0, 0, 0),
            5,
            "medium",
            id="5-with-a-3-medium",
        ),
        pytest.param(
            {"resp_rate": 21, "pulse": 111, "on_oxygen": True},
            (2, 0, 2, 0, 2, 0, 0),
            6,
            "medium",
            id="6-without-a-3-medium",
        ),
        pytest.param(
            {"resp_rate": 25, "pulse": 111, "temperature": 38.1},
            (3, 0, 0, 0, 2, 0, 1),
            6,
            "medium",
            id="6-with-a-single-3-medium",
        ),
        pytest.param(
            {"pulse": 131, "consciousness": "U"},
            (0, 0, 0, 0, 3, 3, 0),
            6,
            "medium",
            id="6-as-two-3s-medium",
        ),
        pytest.param(
            {"resp_rate": 21, "pulse": 111, "systolic": 91, "temperature": 38.1},
            (2, 0, 0, 2, 2, 0, 1),
            7,
            "high",
            id="7-without-a-3-high",
        ),
        pytest.param(
            {"resp_rate": 25, "pulse": 111, "on_oxygen": True},
            (3, 0, 2, 0, 2, 0, 0),
            7,
            "high",
            id="7-with-a-3-high",
        ),
        pytest.param(
            {"resp_rate": 21, "pulse": 111, "systolic": 91, "temperature": 39.1},
            (2, 0, 0, 2, 2, 0, 2),
            8,
            "high",
            id="8-high",
        ),
        pytest.param(
            {
                "resp_rate": 25,
                "spo2": 91,
                "on_oxygen": True,
                "systolic": 90,
                "pulse": 131,
                "consciousness": "U",
                "temperature": 35.0,
            },
            (3, 3, 2, 3, 3, 3, 3),
            20,
            "high",
            id="20-maximum-scale-1",
        ),
        pytest.param(
            {
                "resp_rate": 8,
                "spo2": 97,
                "on_oxygen": True,
                "systolic": 220,
                "pulse": 40,
                "consciousness": "P",
                "temperature": 35.0,
                "spo2_scale": 2,
            },
            (3, 3, 2, 3, 3, 3, 3),
            20,
            "high",
            id="20-maximum-scale-2-over-oxygenated",
        ),
    ],
)
def test_aggregate_and_risk(
    changes: dict[str, Any], subscores: tuple[int, ...], expected_score: int, risk: str
):
    result = score(**changes)

    assert tuple(result.subscores.values()) == subscores
    assert result.score == expected_score
    assert result.risk == risk


def test_every_risk_is_reachable():
    risks = {
        score().risk,
        score(consciousness="V").risk,
        score(resp_rate=21, pulse=111, temperature=38.1).risk,
        score(resp_rate=25, pulse=111, on_oxygen=True).risk,
    }

    assert risks == set(RISKS)


def test_risks_in_order_of_severity():
    assert RISKS == ("low", "low-medium", "medium", "high")


# --- The result -----------------------------------------------------------------------------------


def test_subscore_keys_and_order():
    result = score(resp_rate=25, temperature=38.1)

    assert SUBSCORE_KEYS == (
        "resp_rate",
        "spo2",
        "on_oxygen",
        "systolic",
        "pulse",
        "consciousness",
        "temperature",
    )
    assert tuple(result.subscores) == SUBSCORE_KEYS
    assert all(type(value) is int for value in result.subscores.values())
    assert type(result.score) is int
    assert result.score == sum(result.subscores.values())


def test_result_is_frozen():
    result = score()

    with pytest.raises(FrozenInstanceError):
        result.score = 5  # type: ignore[misc]


def test_same_observations_same_result():
    assert score(resp_rate=22, spo2=93) == score(resp_rate=22, spo2=93)


def test_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        news2_score(16, 98, False, 120, 70, "A", 36.8)  # type: ignore[misc]


# --- Invalid arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spo2_scale",
    [
        pytest.param(0, id="0"),
        pytest.param(3, id="3"),
        pytest.param(-1, id="minus-1"),
        pytest.param(None, id="None"),
        pytest.param("1", id="string-1"),
        pytest.param(True, id="True"),
    ],
)
def test_invalid_spo2_scale(spo2_scale: Any):
    with pytest.raises(ValueError, match="spo2_scale must be 1 or 2"):
        score(spo2_scale=spo2_scale)


@pytest.mark.parametrize(
    "consciousness",
    [
        pytest.param("X", id="X"),
        pytest.param("a", id="lowercase-a"),
        pytest.param("v", id="lowercase-v"),
        pytest.param("", id="empty"),
        pytest.param("AC", id="two-letters"),
        pytest.param("ACVPU", id="all-letters"),
        pytest.param("Alert", id="word"),
        pytest.param(" A", id="leading-space"),
        # (None is a parameter missing: see below)
    ],
)
def test_invalid_consciousness(consciousness: Any):
    with pytest.raises(ValueError, match="consciousness must be one of A, C, V, P, U"):
        score(consciousness=consciousness)


# --- Worked clinical examples ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("observations", "subscores", "expected_score", "risk"),
    [
        pytest.param(
            {
                "resp_rate": 14,
                "spo2": 98,
                "on_oxygen": False,
                "systolic": 120,
                "pulse": 72,
                "consciousness": "A",
                "temperature": 36.8,
            },
            (0, 0, 0, 0, 0, 0, 0),
            0,
            "low",
            id="normal-adult",
        ),
        pytest.param(
            {
                "resp_rate": 24,
                "spo2": 93,
                "on_oxygen": False,
                "systolic": 98,
                "pulse": 118,
                "consciousness": "A",
                "temperature": 38.6,
            },
            (2, 2, 0, 2, 2, 0, 1),
            9,
            "high",
            id="septic",
        ),
        pytest.param(
            {
                "resp_rate": 18,
                "spo2": 95,
                "on_oxygen": False,
                "systolic": 105,
                "pulse": 88,
                "consciousness": "C",
                "temperature": 36.0,
            },
            (0, 1, 0, 1, 0, 3, 1),
            6,
            "medium",
            id="newly-confused-elderly",
        ),
        pytest.param(
            {
                "resp_rate": 14,
                "spo2": 97,
                "on_oxygen": False,
                "systolic": 125,
                "pulse": 80,
                "consciousness": "V",
                "temperature": 37.0,
            },
            (0, 0, 0, 0, 0, 3, 0),
            3,
            "low-medium",
            id="responds-to-voice-only",
        ),
        pytest.param(
            {
                "resp_rate": 22,
                "spo2": 90,
                "on_oxygen": True,
                "systolic": 135,
                "pulse": 95,
                "consciousness": "A",
                "temperature": 37.2,
                "spo2_scale": 2,
            },
            (2, 0, 2, 0, 1, 0, 0),
            5,
            "medium",
            id="copd-hypercapnic-on-target-scale-2",
        ),
        pytest.param(
            {
                "resp_rate": 22,
                "spo2": 90,
                "on_oxygen": True,
                "systolic": 135,
                "pulse": 95,
                "consciousness": "A",
                "temperature": 37.2,
                "spo2_scale": 1,
            },
            (2, 3, 2, 0, 1, 0, 0),
            8,
            "high",
            id="same-patient-wrongly-on-scale-1",
        ),
        pytest.param(
            {
                "resp_rate": 16,
                "spo2": 98,
                "on_oxygen": True,
                "systolic": 130,
                "pulse": 80,
                "consciousness": "A",
                "temperature": 36.9,
                "spo2_scale": 2,
            },
            (0, 3, 2, 0, 0, 0, 0),
            5,
            "medium",
            id="copd-over-oxygenated-scale-2",
        ),
        pytest.param(
            {
                "resp_rate": 8,
                "spo2": 90,
                "on_oxygen": True,
                "systolic": 85,
                "pulse": 38,
                "consciousness": "U",
                "temperature": 34.5,
            },
            (3, 3, 2, 3, 3, 3, 3),
            20,
            "high",
            id="hypothermic-unresponsive",
        ),
    ],
)
def test_clinical_examples(
    observations: dict[str, Any], subscores: tuple[int, ...], expected_score: int, risk: str
):
    result = news2_score(**observations)

    assert result == News2(
        score=expected_score, risk=risk, subscores=dict(zip(SUBSCORE_KEYS, subscores, strict=True))
    )


def test_scores_every_consciousness_level_of_the_contract():
    """The message contract and NEWS2 agree on ACVPU: no accepted reading fails to score."""
    assert set(CONSCIOUSNESS_LEVELS) == {"A", "C", "V", "P", "U"}
    for level in CONSCIOUSNESS_LEVELS:
        assert score(consciousness=level).subscores["consciousness"] == (0 if level == "A" else 3)


# --- news2_of: a reading as parsed or stored ---------------------------------------------------


def test_news2_of_a_reading_scores_its_observations_on_the_scale_given():
    reading = Reading(
        patient_uuid=uuid.UUID(int=1),
        patient_name="copd",
        measured_at=datetime(2026, 11, 23, tzinfo=UTC),
        pulse=95,
        resp_rate=22,
        systolic=135,
        diastolic=80,
        spo2=90,
        temperature=37.2,
        on_oxygen=True,
    )

    assert news2_of(reading) == score(
        resp_rate=22, spo2=90, on_oxygen=True, systolic=135, pulse=95, temperature=37.2
    )
    assert news2_of(reading).subscores["spo2"] == 3
    assert news2_of(reading, spo2_scale=2).subscores["spo2"] == 0
    assert news2_of(reading, spo2_scale=2).score == 5


@pytest.mark.parametrize("artefact", ["spo2_probe_off", "motion"])
def test_news2_of_an_artefact_is_none(artefact: str):
    reading = SimpleNamespace(**NORMAL, artefact=artefact)

    assert news2_of(reading) is None
    assert news2_of(SimpleNamespace(**NORMAL, artefact="")) == score()


# --- Parameters missing or stale: each parameter's newest value within its validity window --------

AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
# A value of each parameter away from normal, and its Chart 1 sub-score.
ABNORMAL: dict[str, tuple[Any, int]] = {
    "resp_rate": (25, 3),
    "spo2": (91, 3),
    "on_oxygen": (True, 2),
    "systolic": (90, 3),
    "pulse": (131, 3),
    "consciousness": ("V", 3),
    "temperature": (39.1, 2),
}
# The windows of the registry (vitals/signs.py), written out.
WINDOWS = {
    "resp_rate": timedelta(minutes=5),
    "spo2": timedelta(minutes=5),
    "on_oxygen": timedelta(minutes=60),
    "systolic": timedelta(minutes=30),
    "pulse": timedelta(minutes=5),
    "consciousness": timedelta(minutes=60),
    "temperature": timedelta(minutes=60),
}
SECOND = timedelta(seconds=1)


def latest(**ages: timedelta | None) -> dict[str, tuple[Any, datetime]]:
    """Every parameter normal and measured at AT, except those given: abnormal (ABNORMAL) and
    measured that long before AT, or never (None)."""
    values = {key: (value, AT) for key, value in NORMAL.items()}
    for key, age in ages.items():
        if age is None:
            del values[key]
        else:
            values[key] = (ABNORMAL[key][0], AT - age)
    return values


def test_the_validity_windows_are_the_registrys():
    assert VALIDITY == WINDOWS


@pytest.mark.parametrize("key", SUBSCORE_KEYS)
@pytest.mark.parametrize("edge", [-SECOND, timedelta(0)], ids=["window-1s", "window"])
def test_a_value_is_valid_up_to_its_window_edge_included(key: str, edge: timedelta):
    result = news2_latest(latest(**{key: WINDOWS[key] + edge}), at=AT)

    expected = ABNORMAL[key][1]
    assert_only(result, key, expected)
    assert (result.complete, result.missing) == (True, ())


@pytest.mark.parametrize("key", SUBSCORE_KEYS)
def test_a_value_older_than_its_window_is_missing(key: str):
    result = news2_latest(latest(**{key: WINDOWS[key] + SECOND}), at=AT)

    assert result == News2(
        score=0,
        risk="low",
        subscores={name: None if name == key else 0 for name in SUBSCORE_KEYS},
        complete=False,
        missing=(key,),
    )


@pytest.mark.parametrize("key", SUBSCORE_KEYS)
def test_a_parameter_never_measured_is_missing(key: str):
    result = news2_latest(latest(**{key: None}), at=AT)

    assert (result.score, result.complete, result.missing) == (0, False, (key,))
    assert result.subscores[key] is None


def test_an_incomplete_score_sums_the_valid_parameters_and_keeps_the_red_score_rule():
    # Resp. rate 25 (3) and pulse 131 (3) fresh; systolic 90 stale by a second; temperature
    # 39.1 (2) 59 min old; SpO2 never measured.
    result = news2_latest(
        latest(
            resp_rate=timedelta(0),
            pulse=timedelta(minutes=4, seconds=59),
            systolic=WINDOWS["systolic"] + SECOND,
            temperature=timedelta(minutes=59),
            spo2=None,
        ),
        at=AT,
    )

    assert result == News2(
        score=8,
        risk="high",
        subscores={
            "resp_rate": 3,
            "spo2": None,
            "on_oxygen": 0,
            "systolic": None,
            "pulse": 3,
            "consciousness": 0,
            "temperature": 2,
        },
        complete=False,
        missing=("spo2", "systolic"),
    )
    only_resp_rate = news2_latest(latest(resp_rate=timedelta(0), spo2=None), at=AT)
    assert (only_resp_rate.score, only_resp_rate.risk) == (3, "low-medium")


def test_a_value_measured_after_the_reading_is_valid():
    """A reading that arrived after a later-stamped one (a monitor clock set back) is scored
    with the newest values known."""
    result = news2_latest(latest(pulse=-timedelta(minutes=10)), at=AT)

    assert (result.subscores["pulse"], result.complete) == (3, True)


def test_the_windows_can_be_set():
    windows = {**WINDOWS, "systolic": timedelta(minutes=20)}
    ages = {"systolic": timedelta(minutes=20)}

    assert news2_latest(latest(**ages), at=AT, validity=windows).subscores["systolic"] == 3
    ages = {"systolic": timedelta(minutes=20) + SECOND}
    assert news2_latest(latest(**ages), at=AT, validity=windows).missing == ("systolic",)


def test_spo2_on_scale_2_above_its_target_is_missing_without_air_or_oxygen():
    values = {**latest(on_oxygen=None), "spo2": (95, AT)}

    assert news2_latest(values, at=AT, spo2_scale=2).missing == ("spo2", "on_oxygen")
    # within the target, air or oxygen does not matter to the SpO2 score
    values["spo2"] = (90, AT)
    assert news2_latest(values, at=AT, spo2_scale=2).missing == ("on_oxygen",)
    assert news2_latest(values, at=AT, spo2_scale=2).subscores["spo2"] == 0


def test_a_probe_off_reading_without_spo2_is_scored_without_it():
    """Contract version 2: the probe off means SpO2 not measured, the other signs are real.
    Version 1 sends every value, the suspect one too: the reading is not scored."""
    v2 = SimpleNamespace(**{**NORMAL, "spo2": None, "pulse": 131}, artefact="spo2_probe_off")
    v1 = SimpleNamespace(**{**NORMAL, "pulse": 131}, artefact="spo2_probe_off")

    assert (artefact_voids(v2), artefact_voids(v1)) == (False, True)
    assert news2_of(v1) is None
    assert news2_of(v2) == News2(
        score=3,
        risk="low-medium",
        subscores={**dict.fromkeys(SUBSCORE_KEYS, 0), "spo2": None, "pulse": 3},
        complete=False,
        missing=("spo2",),
    )
    motion = SimpleNamespace(**{**NORMAL, "spo2": None}, artefact="motion")
    assert news2_of(motion) is None
