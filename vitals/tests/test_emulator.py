"""The physiological emulator: identities, determinism, the scenarios' stories, the nurse,
consciousness, artefacts, time steps and `--speed`, what a version 2 monitor sends when (blood
pressure and MAP, temperature, etCO2), version 1 unchanged, and `run_patient`'s argument
handling over the runtime (vitals/emulation.py).

Pure unit tests: no database, no broker. Runs are seeded, so every number checked here is the
same on every run; the thresholds hold with a margin for other seeds too. Time is simulated:
hours of a patient take a fraction of a second.
"""

import functools
import hashlib
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from jsonschema import Draft202012Validator

from testing.devservers import free_port
from testing.processes import report_figure
from vitals import emulation, emulator
from vitals.contract import (
    ARTEFACTS,
    CONSCIOUSNESS_LEVELS,
    INT_RANGES,
    TEMPERATURE_RANGE,
    Reading,
    reading_parse,
    reading_schema,
    reading_to_message,
)
from vitals.emulator import (
    DRIVERS,
    DYNAMICS,
    HOUR,
    MINUTE,
    SCENARIO_CHOICES,
    SCENARIOS,
    PatientEmulator,
    patient_uuid_for_name,
    scenario_resolve,
)
from vitals.management.commands import run_patient
from vitals.signs import SIGN_KEYS, map_from_bp

START = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
SEED = 1234
DT = 5.0  # the default METRICS_INTERVAL
BASE_DIR = Path(__file__).resolve().parents[2]
REQUIRED = (
    "stable",
    "sepsis",
    "respiratory_failure",
    "bradycardia",
    "hypertensive_crisis",
    "cardiac_arrest",
)


def make(
    name: str = "bob",
    seed: int | None = SEED,
    scenario: str = "stable",
    artefacts: bool = False,
    **monitor,
) -> PatientEmulator:
    """A patient; `monitor`: ventilated, schema_version (1 unless said), nibp_every, ..."""
    return PatientEmulator.create(
        name=name,
        patient_uuid=patient_uuid_for_name(name),
        seed=seed,
        scenario=scenario,
        artefacts=artefacts,
        **monitor,
    )


def run(patient: PatientEmulator, steps: int, dt: float, start: datetime = START) -> list[Reading]:
    """`steps` readings `dt` seconds apart, the first at start + dt."""
    return [patient.reading(start + timedelta(seconds=dt * (i + 1)), dt) for i in range(steps)]


@functools.cache
def story(scenario: str, seed: int, hours: float, dt: float = DT) -> tuple[Reading, ...]:
    """One patient's readings over `hours` of simulated time (cached: tests share runs)."""
    return tuple(run(make(f"{scenario}-{seed}", seed, scenario), round(hours * HOUR / dt), dt))


def hours_at(index: int, dt: float = DT) -> float:
    return (index + 1) * dt / HOUR


def first(readings, condition, sustained: int = 1) -> int | None:
    """The index of the first reading meeting `condition` (for `sustained` readings in a row)."""
    run_length = 0
    for i, reading in enumerate(readings):
        run_length = run_length + 1 if condition(reading) else 0
        if run_length == sustained:
            return i - sustained + 1
    return None


def outside_bedside_limits(r: Reading) -> bool:
    """The bedside default alarm limits."""
    return (
        r.spo2 < 90
        or not 50 <= r.pulse <= 120
        or not 90 <= r.systolic <= 160
        or not 50 <= r.diastolic <= 90
        or not 8 <= r.resp_rate <= 30
        or not 35.0 <= r.temperature <= 39.0
    )


def assert_obeys_contract(readings) -> None:
    """Every reading survives reading_to_message -> reading_parse unchanged."""
    now = max(reading.measured_at for reading in readings) + timedelta(seconds=1)
    for reading in readings:
        key, value = reading_to_message(reading)
        assert reading_parse(key=key, value=value, now=now) == reading, reading


def vitals_of(reading: Reading) -> tuple:
    return (
        reading.pulse,
        reading.resp_rate,
        reading.systolic,
        reading.diastolic,
        reading.spo2,
        reading.temperature,
    )


# --- Patient identity ----------------------------------------------------------------------------


def test_patient_namespace_is_pinned():
    """Changing it would give every named patient a new uuid, splitting their records."""
    expected = uuid.uuid5(uuid.NAMESPACE_URL, "urn:icu-monitor:patient")
    assert expected == emulator.PATIENT_NAMESPACE


def test_patient_uuid_for_name_is_a_stable_uuid5():
    bob = patient_uuid_for_name("bob")

    assert bob == uuid.uuid5(emulator.PATIENT_NAMESPACE, "bob")
    assert patient_uuid_for_name("bob") == bob
    assert bob.version == 5
    assert bob.variant == uuid.RFC_4122


@pytest.mark.parametrize(
    "other",
    ["alice", "Bob", "bob ", "bob2", ""],
    ids=["other-name", "case", "trailing-space", "suffix", "empty"],
)
def test_patient_uuid_differs_between_names(other: str):
    assert patient_uuid_for_name(other) != patient_uuid_for_name("bob")


def test_reading_carries_identity_time_and_the_quiet_defaults():
    patient = make("Zoë Ærø")
    measured_at = START + timedelta(seconds=5)

    reading = patient.reading(measured_at, 5.0)

    assert reading.patient_name == "Zoë Ærø"
    assert reading.patient_uuid == uuid.uuid5(emulator.PATIENT_NAMESPACE, "Zoë Ærø")
    assert reading.measured_at == measured_at
    assert (reading.on_oxygen, reading.consciousness, reading.artefact) == (False, "A", None)
    assert patient.scenario == "stable"
    assert patient.elapsed == 5.0


# --- Determinism ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", REQUIRED)
def test_same_seed_and_patient_give_identical_readings(scenario: str):
    first_run = run(make(seed=42, scenario=scenario, artefacts=True), 600, 5.0)
    second_run = run(make(seed=42, scenario=scenario, artefacts=True), 600, 5.0)

    assert first_run == second_run
    assert len({reading.pulse for reading in first_run}) > 10  # not a constant sequence


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param(("bob", 42), ("bob", 43), id="different-seed"),
        pytest.param(("bob", 42), ("alice", 42), id="same-seed-other-patient"),
        pytest.param(("bob", None), ("bob", None), id="seed-none"),
    ],
)
def test_different_randomness_gives_different_readings(
    a: tuple[str, int | None], b: tuple[str, int | None]
):
    first_run, second_run = run(make(*a), 50, 5.0), run(make(*b), 50, 5.0)

    differing = sum(
        vitals_of(x) != vitals_of(y) for x, y in zip(first_run, second_run, strict=True)
    )
    assert differing >= 40


def test_seeded_readings_are_the_same_in_another_process():
    """The seed is a string hashed by `random` with SHA-512: independent of PYTHONHASHSEED."""
    script = (
        "import json, sys\n"
        "from datetime import datetime, timedelta, UTC\n"
        "from vitals.emulator import PatientEmulator, patient_uuid_for_name\n"
        "u = patient_uuid_for_name('bob')\n"
        "p = PatientEmulator.create(name='bob', patient_uuid=u, seed=7, scenario='random')\n"
        "t = datetime(2026, 11, 23, 8, tzinfo=UTC)\n"
        "rs = [p.reading(t + timedelta(seconds=60 * (i + 1)), 60.0) for i in range(200)]\n"
        "json.dump([p.scenario] + [[r.pulse, r.resp_rate, r.systolic, r.diastolic, r.spo2,"
        " r.temperature, r.on_oxygen, r.consciousness] for r in rs], sys.stdout)\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "DJANGO_SETTINGS_MODULE": "icu.settings_test"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    patient = make(seed=7, scenario="random")
    here = [patient.scenario] + [
        [*vitals_of(r), r.on_oxygen, r.consciousness] for r in run(patient, 200, 60.0)
    ]
    assert json.loads(result.stdout) == here


# --- The scenario registry and `random` -----------------------------------------------------------


def test_the_required_scenarios_are_registered_with_a_story():
    assert set(REQUIRED) <= set(SCENARIOS)
    assert set(SCENARIO_CHOICES) == {*SCENARIOS, "random"}
    assert "random" not in SCENARIOS  # a choice, resolved per patient, not a scenario
    for name, scenario in SCENARIOS.items():
        assert scenario.name == name
        assert scenario.description
        assert "\n" not in scenario.description
        assert scenario.duration_s >= 0
        assert set(scenario.ramps) <= set(DRIVERS)
        # Every ramp is over by the scenario's duration, and the state is kept after it.
        for ramp in scenario.ramps.values():
            assert 0 <= ramp.start_s < ramp.end_s <= scenario.duration_s
            assert 0 < ramp.level <= 1
        assert scenario.driver_targets(scenario.duration_s) == scenario.driver_targets(
            scenario.duration_s + 10 * HOUR
        )
    assert SCENARIOS["stable"].driver_targets(10 * HOUR) == dict.fromkeys(DRIVERS, 0.0)


def test_ramps_are_smooth():
    ramp = SCENARIOS["sepsis"].ramps["infection"]
    values = [ramp.at(t) for t in range(0, int(4 * HOUR), 60)]

    assert values[0] == 0
    assert values[-1] == ramp.level
    assert all(b >= a for a, b in itertools.pairwise(values))  # never recovers by itself
    assert max(b - a for a, b in itertools.pairwise(values)) < 0.02  # no jump within a minute


@pytest.mark.parametrize("bad", ["nope", "Stable", "", "random "])
def test_an_unknown_scenario_is_refused(bad: str):
    with pytest.raises(ValueError, match="unknown scenario"):
        scenario_resolve(bad, emulator.random.Random(1))
    with pytest.raises(ValueError, match="unknown scenario"):
        make(scenario=bad)


def test_random_resolves_per_patient_deterministically_mostly_to_stable():
    names = [f"bed-{i:03d}" for i in range(200)]

    drawn = [make(name, seed=5, scenario="random").scenario for name in names]

    assert drawn == [make(name, seed=5, scenario="random").scenario for name in names]
    assert drawn != [make(name, seed=6, scenario="random").scenario for name in names]
    counts = Counter(drawn)
    assert counts["stable"] > len(names) / 2  # most beds are quiet (weight 60%)
    assert set(counts) == set(REQUIRED)  # every story shows up on a ward of 200
    report_figure("emulator: scenarios drawn by `random` for 200 beds (seed 5)", str(counts))


def test_random_resolving_to_a_scenario_gives_that_scenario_s_very_patient():
    """The draw has its own random stream, so `random` -> sepsis is the `sepsis` patient."""
    name = next(
        f"bed-{i}" for i in range(100) if make(f"bed-{i}", scenario="random").scenario == "sepsis"
    )

    assert run(make(name, scenario="random"), 100, 60.0) == run(
        make(name, scenario="sepsis"), 100, 60.0
    )


def test_scenario_resolve_accepts_every_scenario_as_itself():
    rng = emulator.random.Random(0)
    for name in SCENARIOS:
        assert scenario_resolve(name, rng) == name


# --- Every scenario obeys the contract -----------------------------------------------------------


@pytest.mark.parametrize("scenario", REQUIRED)
def test_every_scenario_obeys_the_contract_over_a_long_run_with_artefacts(scenario: str):
    """Through its whole story and an hour beyond, at the default interval, 3 patients."""
    hours = SCENARIOS[scenario].duration_s / HOUR + 1
    readings = [
        r
        for seed in range(3)
        for r in run(make(f"p{seed}", seed, scenario, artefacts=True), round(hours * HOUR / DT), DT)
    ]

    assert_obeys_contract(readings)
    assert min(r.systolic - r.diastolic for r in readings) >= 15  # a cuff keeps a pulse pressure
    assert {r.consciousness for r in readings} <= set(CONSCIOUSNESS_LEVELS)
    assert {r.artefact for r in readings} <= {None, *ARTEFACTS}


@pytest.mark.parametrize("scenario", ["sepsis", "cardiac_arrest", "hypertensive_crisis"])
@pytest.mark.parametrize("dt", [1.0, 60.0, 300.0])
def test_any_time_step_keeps_readings_in_the_contract(scenario: str, dt: float):
    hours = SCENARIOS[scenario].duration_s / HOUR + 0.5
    readings = run(make(seed=3, scenario=scenario), round(hours * HOUR / dt), dt)

    assert_obeys_contract(readings)


# --- stable --------------------------------------------------------------------------------------

STABLE_SEEDS = range(6)


@pytest.fixture(scope="module")
def stable_days() -> dict[int, tuple[Reading, ...]]:
    return {seed: story("stable", seed, 24) for seed in STABLE_SEEDS}


def test_stable_patients_stay_inside_the_bedside_limits(stable_days):
    """At most 0.1% of a simulated day's readings outside the default alarm limits: a stable
    patient's noise must not make the alarms cry wolf."""
    fractions = {
        seed: sum(map(outside_bedside_limits, readings)) / len(readings)
        for seed, readings in stable_days.items()
    }
    report_figure(
        "emulator stable: readings outside the bedside limits per simulated day (6 seeds)",
        ", ".join(f"{f:.4%}" for f in fractions.values()),
    )
    assert max(fractions.values()) <= 0.001


def test_stable_patients_never_deteriorate(stable_days):
    for readings in stable_days.values():
        assert not any(r.on_oxygen or r.consciousness != "A" or r.artefact for r in readings)
        assert max(r.temperature for r in readings) < 38.0
        assert min(r.spo2 for r in readings) >= 92


def test_stable_patients_drift_around_their_own_baseline():
    for seed in range(5):
        patient = make(f"p{seed}", seed)
        readings = run(patient, 2000, DT)
        pulses = [r.pulse for r in readings]

        assert statistics.median(abs(b - a) for a, b in itertools.pairwise(pulses)) < 4  # drifts
        assert len(set(pulses)) >= 10  # it does move
        assert abs(statistics.mean(pulses) - patient.baseline["pulse"]) < 2.5
        assert abs(statistics.mean(r.spo2 for r in readings) - patient.baseline["spo2"]) < 1
        assert patient.drivers == dict.fromkeys(DRIVERS, 0.0)


def test_baselines_are_normal_adult_values():
    for i in range(200):
        baseline = make(f"p{i}", i).baseline
        assert 60 <= baseline["pulse"] <= 90
        assert 12 <= baseline["resp_rate"] <= 20
        assert 110 <= baseline["systolic"] <= 140
        assert 60 <= baseline["diastolic"] <= 80
        assert 96 <= baseline["spo2"] <= 100
        assert 36.1 <= baseline["temperature"] <= 37.2


# --- The stories ---------------------------------------------------------------------------------

STORY_SEEDS = range(4)


@pytest.mark.parametrize("seed", STORY_SEEDS)
def test_sepsis_fever_tachycardia_tachypnoea_then_hypotension_within_6_hours(seed: int):
    readings = story("sepsis", seed, 6)
    reached = {
        "T >= 38.1": first(readings, lambda r: r.temperature >= 38.1),
        "HR >= 111": first(readings, lambda r: r.pulse >= 111),
        "RR >= 21": first(readings, lambda r: r.resp_rate >= 21),
        "SBP <= 100": first(readings, lambda r: r.systolic <= 100),
        "SpO2 <= 91 or O2": first(readings, lambda r: r.spo2 <= 91 or r.on_oxygen),
        "confused": first(readings, lambda r: r.consciousness != "A"),
    }
    report_figure(
        f"emulator sepsis seed {seed}: hours to",
        ", ".join(f"{k} {hours_at(i):.2f}" for k, i in reached.items() if i is not None),
    )
    assert None not in reached.values(), reached
    # The order of a septic course: fever first, the pressure falls later (for good: a single
    # reading of a patient with a low-normal pressure may touch 100 early).
    assert reached["T >= 38.1"] < first(readings, lambda r: r.systolic <= 100, sustained=60)
    assert hours_at(reached["SBP <= 100"]) < 5.5


@pytest.mark.parametrize("seed", STORY_SEEDS)
def test_respiratory_failure_hypoxaemia_oxygen_tachypnoea_and_late_confusion(seed: int):
    readings = story("respiratory_failure", seed, 4)
    low = first(readings, lambda r: r.spo2 <= 91)
    oxygen = first(readings, lambda r: r.on_oxygen)
    fast = first(readings, lambda r: r.resp_rate >= 25)
    confused = first(readings, lambda r: r.consciousness == "C")
    voice = first(readings, lambda r: r.consciousness == "V")
    assert None not in (low, oxygen, fast, confused, voice)
    report_figure(
        f"emulator respiratory_failure seed {seed}: hours to",
        f"SpO2 <= 91 {hours_at(low):.2f}, oxygen {hours_at(oxygen):.2f}, RR >= 25 "
        f"{hours_at(fast):.2f}, C {hours_at(confused):.2f}, V {hours_at(voice):.2f}",
    )
    assert low < oxygen < confused < voice
    assert hours_at(confused) > 2  # late
    # Oxygen helps for a while, but the lungs keep failing: below 90% even on oxygen.
    assert min(r.spo2 for r in readings[oxygen:]) < 90
    early, late = readings[:360], readings[-360:]
    assert statistics.mean(r.pulse for r in late) > statistics.mean(r.pulse for r in early) + 10


@pytest.mark.parametrize("seed", STORY_SEEDS)
def test_bradycardia_pulse_falls_to_35_40_with_mild_hypotension_within_an_hour(seed: int):
    readings = story("bradycardia", seed, 1)
    slow = first(readings, lambda r: r.pulse <= 45)
    assert slow is not None
    last = readings[-120:]  # the last 10 minutes
    report_figure(
        f"emulator bradycardia seed {seed}: hours to HR <= 45, mean HR of the last 10 min",
        f"{hours_at(slow):.2f}, {statistics.mean(r.pulse for r in last):.1f}",
    )
    assert 33 <= statistics.mean(r.pulse for r in last) <= 45
    # A complete heart block's escape rhythm, not an asystole: never a pulse the monitor
    # would take for no pulse.
    assert min(r.pulse for r in readings) >= 25
    drop = statistics.mean(r.systolic for r in readings[:120]) - statistics.mean(
        r.systolic for r in last
    )
    assert 5 <= drop <= 30
    assert all(r.consciousness == "A" for r in readings)


@pytest.mark.parametrize("seed", STORY_SEEDS)
def test_hypertensive_crisis_reaches_180_over_110_within_2_hours(seed: int):
    readings = story("hypertensive_crisis", seed, 2)
    systolic = first(readings, lambda r: r.systolic >= 180)
    diastolic = first(readings, lambda r: r.diastolic >= 110)
    assert systolic is not None
    assert diastolic is not None
    report_figure(
        f"emulator hypertensive_crisis seed {seed}: hours to SBP >= 180 / DBP >= 110",
        f"{hours_at(systolic):.2f} / {hours_at(diastolic):.2f}",
    )
    last = readings[-180:]
    assert statistics.mean(r.systolic for r in last) >= 185
    assert statistics.mean(r.diastolic for r in last) >= 105


@pytest.mark.parametrize("seed", range(10))
def test_cardiac_arrest_is_sudden_at_a_seeded_time_between_10_and_40_minutes(seed: int):
    patient = make(f"p{seed}", seed, "cardiac_arrest")
    readings = run(patient, round(45 * MINUTE / DT), DT)
    onset = first(readings, lambda r: r.pulse == 0)

    assert 10 * MINUTE <= patient.arrest_at <= 40 * MINUTE
    # The very first reading at or after the onset, not one later.
    assert hours_at(onset - 1) * HOUR < patient.arrest_at <= hours_at(onset) * HOUR
    before, at, after = readings[:onset], readings[onset], readings[onset + 1 :]
    assert all(r.pulse > 45 and r.consciousness == "A" for r in before)
    assert (at.pulse, at.resp_rate, at.systolic, at.diastolic, at.consciousness) == (
        0,
        0,
        40,
        20,
        "U",
    )
    assert all(r.pulse == 0 and r.resp_rate == 0 and r.consciousness == "U" for r in after)
    # The saturation falls within a minute, as the blood stops being oxygenated.
    assert readings[onset + 12].spo2 < 60 < before[-1].spo2


def test_cardiac_arrest_onset_is_kept_with_large_time_steps():
    """At --speed 60 (dt 300 s) the first reading after the onset still shows it."""
    patient = make(seed=2, scenario="cardiac_arrest")
    readings = run(patient, 12, 300.0)
    onset = first(readings, lambda r: r.pulse == 0)

    assert (onset + 1) * 300 >= patient.arrest_at > onset * 300


# --- Correlations and couplings ------------------------------------------------------------------


def test_correlations_a_clinician_expects_across_a_sepsis_run():
    readings = story("sepsis", 0, 6)

    def corr(a: str, b: str) -> float:
        return statistics.correlation(
            [float(getattr(r, a)) for r in readings], [float(getattr(r, b)) for r in readings]
        )

    assert corr("pulse", "temperature") > 0.7
    assert corr("resp_rate", "temperature") > 0.5
    assert corr("systolic", "pulse") < -0.5
    report_figure(
        "emulator sepsis seed 0: correlation pulse~temperature, systolic~pulse",
        f"{corr('pulse', 'temperature'):.2f}, {corr('systolic', 'pulse'):.2f}",
    )


def test_correlations_across_a_respiratory_failure_run():
    readings = story("respiratory_failure", 0, 4)

    def corr(a: str, b: str) -> float:
        return statistics.correlation(
            [float(getattr(r, a)) for r in readings], [float(getattr(r, b)) for r in readings]
        )

    assert corr("spo2", "resp_rate") < -0.6
    assert corr("spo2", "pulse") < -0.5


def test_fever_raises_the_pulse_by_about_10_per_degree():
    """Liebermeister's rule, on the hidden temperature above 37 °C."""
    patient = make()
    patient.baseline["temperature"] = 36.8
    before = patient._targets()["pulse"]

    patient.state["temperature"] = 39.0

    assert patient._targets()["pulse"] - before == pytest.approx(20.0)


def test_hypoxaemia_raises_the_pulse_and_the_breathing_rate():
    patient = make()
    patient.state["spo2"] = 97.0
    before = patient._targets()

    patient.state["spo2"] = 85.0
    after = patient._targets()

    assert after["pulse"] - before["pulse"] == pytest.approx(15.0)
    assert after["resp_rate"] - before["resp_rate"] == pytest.approx(5.0)


def test_shock_lowers_the_pressure_and_raises_the_pulse():
    patient = make()
    before = patient._targets()

    patient.drivers["shock"] = 1.0
    after = patient._targets()

    assert after["systolic"] < before["systolic"] - 40
    assert after["diastolic"] < before["diastolic"] - 20
    assert after["pulse"] > before["pulse"] + 20


# --- The nurse and consciousness -----------------------------------------------------------------


def test_the_nurse_gives_oxygen_after_3_minutes_below_92_and_spo2_rises_by_4():
    patient = make()
    patient.baseline["spo2"] = patient.state["spo2"] = 88.0
    readings = run(patient, 240, DT)
    oxygen = first(readings, lambda r: r.on_oxygen)
    low_since = first(readings, lambda r: r.spo2 < 92)

    # 180 s of readings below 92 (36 of them), measured on air; oxygen from the next one.
    assert (oxygen - low_since) * DT >= 180
    assert all(r.on_oxygen for r in readings[oxygen:])
    on_air = statistics.mean(r.spo2 for r in readings[oxygen - 30 : oxygen])
    on_oxygen = statistics.mean(r.spo2 for r in readings[oxygen + 60 :])
    assert on_oxygen - on_air == pytest.approx(4, abs=1)


def test_the_nurse_waits_for_a_sustained_low():
    """A dip of a minute is not a reason for oxygen."""
    patient = make()
    patient.state["spo2"] = 85.0  # the baseline stays normal: the saturation recovers
    readings = run(patient, 200, DT)

    assert not any(r.on_oxygen for r in readings)
    assert min(r.spo2 for r in readings) < 92


def test_consciousness_worsens_at_once_and_recovers_only_with_a_margin():
    """Hysteresis: lung failure at 0.85 confuses (>= 0.8); the patient is alert again only
    below 0.7, not as soon as the driver dips under 0.8."""
    patient = make()
    patient.drivers["lung"] = 0.85  # a stable patient's driver decays back to 0, without noise
    letters, lungs = [], []
    for i in range(60):
        letters.append(patient.reading(START + timedelta(seconds=10 * i), 10.0).consciousness)
        lungs.append(patient.drivers["lung"])

    assert letters[0] == "C"
    alert = letters.index("A")
    assert lungs[alert] < 0.7 <= lungs[alert - 1]
    assert set(letters[:alert]) == {"C"}
    assert set(letters[alert:]) == {"A"}


# --- Time: steps and --speed ---------------------------------------------------------------------


@pytest.mark.parametrize("dt", [1.0, 5.0, 60.0, 300.0])
def test_spread_around_baseline_does_not_depend_on_the_time_step(dt: float):
    """The OU step is exact for any dt: the stationary spread is the same at 1 s and 300 s."""
    deviations = []
    for seed in range(10):
        patient = make(f"p{seed}", seed)
        deviations += [r.pulse - patient.baseline["pulse"] for r in run(patient, 600, dt)]
    _, _, sd, _, noise = DYNAMICS["pulse"]

    assert statistics.pstdev(deviations) == pytest.approx(math.hypot(sd, noise), rel=0.2)
    assert abs(statistics.mean(deviations)) < 1


@pytest.mark.parametrize("dt", [1.0, 60.0, 300.0])
def test_a_story_unfolds_in_simulated_time_whatever_the_step(dt: float):
    """Sepsis at 4 simulated hours looks the same read every second or every 5 minutes."""
    patient = make(seed=1, scenario="sepsis")
    readings = run(patient, round(4 * HOUR / dt), dt)
    last = readings[-max(1, round(600 / dt)) :]  # the last 10 minutes

    assert patient.elapsed == pytest.approx(4 * HOUR)
    assert statistics.mean(r.temperature for r in last) >= 38.8
    assert statistics.mean(r.pulse for r in last) >= 115


def test_speed_changes_the_pace_of_the_physiology_not_the_timestamps():
    """`--speed 12` with `--interval 5`: readings 5 s apart, each advancing 60 s of physiology;
    after 60 readings (5 wall minutes) the bradycardia of the first hour is there."""
    times = [START + timedelta(seconds=5 * (i + 1)) for i in range(60)]
    real_time, fast = make(seed=1, scenario="bradycardia"), make(seed=1, scenario="bradycardia")

    slow_readings = [real_time.reading(t, 5.0) for t in times]
    fast_readings = [fast.reading(t, 5.0 * 12) for t in times]

    assert [r.measured_at for r in fast_readings] == times == [r.measured_at for r in slow_readings]
    assert (real_time.elapsed, fast.elapsed) == (300.0, 3600.0)
    assert fast_readings[-1].pulse <= 45
    assert slow_readings[-1].pulse >= fast_readings[-1].pulse + 15


def test_run_patient_schedule_advances_the_physiology_by_interval_times_speed():
    """The command's scheduler: wall-clock timestamps, `speed` x the elapsed wall time."""

    class Producer:
        def poll(self, timeout: float) -> None:
            pass

    class Emitter:
        producer = Producer()

        def __init__(self) -> None:
            self.readings: list[Reading] = []

        def emit(self, reading: Reading) -> None:
            self.readings.append(reading)

    patient, emitter = make(), Emitter()

    emulation.schedule_run([patient], 0.02, 5, emitter, lambda: False, speed=60.0)

    times = [r.measured_at for r in emitter.readings]
    assert len(times) == 5
    wall = (times[-1] - times[0]).total_seconds()
    assert 0.07 <= wall < 1.0  # timestamps are wall-clock time, 0.02 s apart
    # The first reading advances one interval, the others the time since the previous one.
    assert patient.elapsed == pytest.approx((0.02 + wall) * 60, abs=1e-6)


def test_a_negative_time_step_is_refused():
    with pytest.raises(ValueError, match="dt must be 0 or more"):
        make().reading(START, -1.0)


# --- Artefacts -----------------------------------------------------------------------------------

ARTEFACT_STEPS = 8000


@pytest.mark.parametrize("scenario", ["stable", "sepsis"])
def test_artefacts_are_rare_marked_and_leave_the_physiology_alone(scenario: str):
    clean, noisy = [], []
    for seed in range(3):
        clean += run(make(f"p{seed}", seed, scenario), ARTEFACT_STEPS, DT)
        noisy += run(make(f"p{seed}", seed, scenario, artefacts=True), ARTEFACT_STEPS, DT)

    counts = Counter(r.artefact for r in noisy)
    expected = emulator.ARTEFACT_RATE * len(noisy)  # 72
    assert 0.5 * expected <= counts["spo2_probe_off"] <= 1.6 * expected, counts
    assert 0.5 * expected <= counts["motion"] <= 1.6 * expected, counts
    assert not any(r.artefact for r in clean)
    for physiological, reading in zip(clean, noisy, strict=True):
        if reading.artefact == "spo2_probe_off":
            assert reading.spo2 == 0
            assert reading == emulator.replace(physiological, spo2=0, artefact="spo2_probe_off")
        elif reading.artefact == "motion":
            assert 30 <= reading.pulse - physiological.pulse <= 60
            assert emulator.replace(reading, pulse=physiological.pulse, artefact=None) == (
                physiological
            )
        else:
            assert reading == physiological  # the hidden state never saw the artefacts


# --- Clamping ------------------------------------------------------------------------------------


HIGH = {sign: high for sign, (_, high) in INT_RANGES.items() if sign in DYNAMICS} | {
    "temperature": TEMPERATURE_RANGE[1]
}
LOW = {sign: low for sign, (low, _) in INT_RANGES.items() if sign in DYNAMICS} | {
    "temperature": TEMPERATURE_RANGE[0]
}


@pytest.mark.parametrize(
    ("hidden", "expected"),
    [
        pytest.param(dict.fromkeys(DYNAMICS, 500.0), HIGH, id="far-above"),
        pytest.param(dict.fromkeys(DYNAMICS, -50.0), LOW, id="far-below"),
    ],
)
def test_readings_are_clamped_into_the_contract(
    hidden: dict[str, float], expected: dict[str, float]
):
    """A hidden state beyond the contract (a wild baseline) still gives a valid reading."""
    patient = make()
    patient.baseline.update(hidden)
    patient.state.update(hidden)

    reading = patient.reading(START, 5.0)

    assert {sign: getattr(reading, sign) for sign in expected} == expected
    assert_obeys_contract([reading])


@pytest.mark.parametrize(("hidden", "expected"), [(500.0, 150), (-50.0, 0)], ids=["above", "below"])
def test_etco2_is_clamped_into_the_contract(hidden: float, expected: int):
    patient = make(ventilated=True, schema_version=2)
    patient.etco2_baseline = patient.etco2 = hidden

    reading = patient.reading(START, 5.0)

    assert reading.etco2 == expected
    assert_obeys_contract([reading])


def test_diastolic_is_kept_below_systolic():
    patient = make()
    patient.baseline.update(systolic=60.0, diastolic=58.0)
    patient.state.update(systolic=60.0, diastolic=58.0)

    readings = run(patient, 50, 5.0)

    # The hidden diastolic sits at or above systolic - 15, so the guard sets almost every reading.
    assert min(r.systolic - r.diastolic for r in readings) >= 15
    assert sum(r.systolic - r.diastolic == 15 for r in readings) >= 0.8 * len(readings)
    assert abs(statistics.mean(r.systolic for r in readings) - 60) < 10
    assert_obeys_contract(readings)


# --- What the monitor sends: contract version 2 -------------------------------------------------

V2_SCHEMA = Draft202012Validator(reading_schema(2))


def sent(reading: Reading) -> set[str]:
    """The signs a reading carries (measured)."""
    return {key for key in SIGN_KEYS if getattr(reading, key) is not None}


EVERY_READING = {"pulse", "resp_rate", "spo2"}
WITH_BP = {"systolic", "diastolic", "map"}


def test_v2_sends_blood_pressure_every_15_min_and_temperature_every_5_min():
    """Readings every simulated minute for an hour: the cuff at 0, 15, 30, 45 and 60 min, the
    thermometer every 5 min, the rest every reading; MAP exactly with the blood pressure."""
    readings = run(make(schema_version=2), 61, 60.0)

    assert [i for i, r in enumerate(readings) if r.systolic is not None] == [0, 15, 30, 45, 60]
    assert [i for i, r in enumerate(readings) if r.temperature is not None] == list(range(0, 61, 5))
    for i, reading in enumerate(readings):
        expected = EVERY_READING | (WITH_BP if i % 15 == 0 else set())
        assert sent(reading) == expected | ({"temperature"} if i % 5 == 0 else set()), i
        assert reading.schema_version == 2
        assert reading.etco2 is None  # not ventilated
        _, value = reading_to_message(reading)
        assert set(json.loads(value)) >= {"pulse", "resp_rate", "spo2"}
        assert ("bp" in json.loads(value)) == ("map" in json.loads(value)) == (i % 15 == 0)
    assert_obeys_contract(readings)


def test_v2_cadence_follows_the_options_in_simulated_time():
    """--nibp-every 300 and --temperature-every 600 with readings every 30 s; and --speed-like
    large steps: each reading past the period sends it."""
    readings = run(make(schema_version=2, nibp_every=300, temperature_every=600), 41, 30.0)

    assert [i for i, r in enumerate(readings) if r.map is not None] == [0, 10, 20, 30, 40]
    assert [i for i, r in enumerate(readings) if r.temperature is not None] == [0, 20, 40]
    # Steps longer than the period: every reading has it.
    coarse = run(make(schema_version=2), 5, 20 * MINUTE)
    assert all(WITH_BP | {"temperature"} <= sent(r) for r in coarse)
    # A period of 0: every reading.
    assert all(r.map for r in run(make(schema_version=2, nibp_every=0), 5, 5.0))


def test_v2_values_are_the_physiology_of_v1_where_sent():
    """The version changes what is sent, never a value: the same seed gives the same patient."""
    v1 = run(make("same", scenario="sepsis"), 400, 60.0)
    v2 = run(make("same", scenario="sepsis", schema_version=2), 400, 60.0)

    for full, partial in zip(v1, v2, strict=True):
        for key in sent(partial) - {"map"}:
            assert getattr(partial, key) == getattr(full, key), key
        assert (partial.on_oxygen, partial.consciousness) == (full.on_oxygen, full.consciousness)


def test_map_is_measured_close_to_the_formula_but_its_own():
    readings = run(make(scenario="hypertensive_crisis", schema_version=2), 720, 10.0)
    with_bp = [r for r in readings if r.systolic is not None]

    assert len(with_bp) == 8  # 2 h, every 15 min
    for r in with_bp:
        assert r.diastolic < r.map < r.systolic
        assert (
            abs(r.map - map_from_bp(r.systolic, r.diastolic))
            <= 0.1 * (r.systolic - r.diastolic) + 5
        )
    assert sum(r.map != map_from_bp(r.systolic, r.diastolic) for r in with_bp) >= 6
    # Version 1 carries no MAP: the consumer computes it, and the Reading says so.
    assert all(r.map == map_from_bp(r.systolic, r.diastolic) for r in run(make(), 50, 60.0))


def test_etco2_only_for_ventilated_patients_and_only_in_version_2():
    assert all(r.etco2 is None for r in run(make(schema_version=2), 100, 60.0))
    assert all(r.etco2 is None for r in run(make(ventilated=True), 100, 60.0))  # v1
    ventilated = run(make(ventilated=True, schema_version=2), 100, 60.0)
    assert all(type(r.etco2) is int for r in ventilated)
    assert all(json.loads(reading_to_message(r)[1])["etco2"] == r.etco2 for r in ventilated)


@pytest.mark.parametrize("seed", STORY_SEEDS)
def test_etco2_rises_in_respiratory_failure_and_stays_normal_when_stable(seed: int):
    failing = run(
        make(f"rf-{seed}", seed, "respiratory_failure", ventilated=True, schema_version=2),
        240,
        60.0,
    )
    stable = run(make(f"st-{seed}", seed, "stable", ventilated=True, schema_version=2), 240, 60.0)

    first_hour = [r.etco2 for r in failing[:60]]
    last_half_hour = [r.etco2 for r in failing[-30:]]
    assert 35 <= statistics.mean(first_hour) <= 45
    assert statistics.mean(last_half_hour) >= 55  # hypercapnia: the lungs no longer clear CO2
    assert statistics.mean(last_half_hour) >= statistics.mean(first_hour) + 15
    assert all(33 <= r.etco2 <= 47 for r in stable)


@pytest.mark.parametrize("scenario", ["sepsis", "bradycardia", "hypertensive_crisis"])
def test_etco2_stays_near_normal_in_the_other_stories(scenario: str):
    readings = run(make(scenario=scenario, ventilated=True, schema_version=2), 360, 60.0)

    assert all(28 <= r.etco2 <= 48 for r in readings), sorted({r.etco2 for r in readings})


def test_etco2_falls_in_cardiac_arrest():
    readings = run(make(scenario="cardiac_arrest", ventilated=True, schema_version=2), 60, 60.0)
    arrested = first(readings, lambda r: r.pulse == 0)

    assert arrested is not None
    assert 33 <= readings[arrested - 1].etco2 <= 47
    assert all(r.etco2 <= 15 for r in readings[arrested + 3 :])


def test_v2_probe_off_sends_no_spo2_and_version_1_its_zero():
    """A probe off the finger: no SpO2 in version 2 (not measured), 0 flagged in version 1."""
    v2 = run(make("probe", artefacts=True, schema_version=2), ARTEFACT_STEPS, DT)
    v1 = run(make("probe", artefacts=True), ARTEFACT_STEPS, DT)

    probe_off = [i for i, r in enumerate(v2) if r.artefact == "spo2_probe_off"]
    assert len(probe_off) >= 10
    assert probe_off == [i for i, r in enumerate(v1) if r.artefact == "spo2_probe_off"]
    for i in probe_off:
        assert v2[i].spo2 is None
        assert v1[i].spo2 == 0
        assert "spo2" not in json.loads(reading_to_message(v2[i])[1])
    assert all(r.spo2 is not None for r in v2 if r.artefact != "spo2_probe_off")


@pytest.mark.parametrize("scenario", REQUIRED)
def test_every_scenario_sends_valid_v2_messages_ventilated_with_artefacts(scenario: str):
    readings = run(
        make(scenario=scenario, artefacts=True, ventilated=True, schema_version=2), 400, 30.0
    )

    assert_obeys_contract(readings)
    for reading in readings:
        assert list(V2_SCHEMA.iter_errors(json.loads(reading_to_message(reading)[1]))) == []
        assert {"pulse", "resp_rate", "etco2"} <= sent(reading)


# The sha-256 of 2000 readings of each scenario (seed 1234, artefacts, 30 s apart) as version 1
# messages, taken from the emulator before version 2 and MAP/etCO2 came: a consumer older than
# version 2 gets exactly what it got.
V1_DIGEST = "b320184e41092fda2b2b0cf44224439a57b6349a13f2e23edcc326b3d914c28f"


def test_version_1_messages_are_byte_for_byte_those_of_before():
    digest = hashlib.sha256()
    for scenario in SCENARIOS:
        patient = make(f"v1-{scenario}", SEED, scenario, artefacts=True, ventilated=True)
        for reading in run(patient, 2000, 30.0, start=START):
            key, value = reading_to_message(reading)
            digest.update(key + b"|" + value + b"\n")

    assert digest.hexdigest() == V1_DIGEST


def test_emitter_produces_the_v2_message_and_logs_the_signs_sent(caplog):
    class Producer:
        def __init__(self) -> None:
            self.produced: list[tuple[str, bytes, bytes]] = []

        def produce(self, topic: str, key: bytes, value: bytes, on_delivery) -> None:
            self.produced.append((topic, key, value))

    producer = Producer()
    emitter = emulation.Emitter(producer=producer, topic="vitals", log_each=True)
    reading = run(make(schema_version=2), 2, 60.0)[1]  # no blood pressure, no temperature

    with caplog.at_level("INFO", logger="vitals.emulator"):
        emitter.emit(reading)

    [(topic, key, value)] = producer.produced
    assert (topic, key) == ("vitals", str(reading.patient_uuid).encode())
    assert value == reading_to_message(reading)[1]
    assert set(json.loads(value)) == {
        "schema_version", "patient_uuid", "patient_name", "timestamp", "pulse", "resp_rate",
        "spo2", "on_oxygen", "consciousness",
    }  # fmt: skip
    [record] = [r for r in caplog.records if r.getMessage() == "reading"]
    assert (record.bp, record.map, record.temperature, record.etco2) == (None, None, None, None)
    assert record.pulse == reading.pulse
    assert emitter.produced == 1


class FakeProducer:
    """What emulation_run needs of a confluent_kafka Producer; delivers nothing."""

    def __init__(self, left_in_queue: int = 0) -> None:
        self.produced: list[tuple[bytes, bytes]] = []
        self.left_in_queue = left_in_queue

    def produce(self, topic: str, key: bytes, value: bytes, on_delivery) -> None:
        self.produced.append((key, value))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return self.left_in_queue


@pytest.mark.parametrize("left_in_queue", [0, 2], ids=["delivered", "undelivered"])
def test_emulation_run_produces_count_readings_each_then_reports(
    monkeypatch, caplog, left_in_queue: int
):
    producer = FakeProducer(left_in_queue)
    monkeypatch.setattr(emulation, "producer_create", lambda **config: producer)
    monkeypatch.setattr(emulation, "broker_check", lambda *args, **kwargs: None)
    patients = build(names=["ann", "ben"], ventilated=True)

    def emulate() -> None:
        emulation.emulation_run(
            patients,
            interval=0,
            speed=1.0,
            count=3,
            topic="vitals",
            broker_timeout=1.0,
            stop=threading.Event(),
        )

    with caplog.at_level("INFO", logger="vitals.emulator"):
        if left_in_queue:
            with pytest.raises(
                emulation.UndeliveredReadings, match=r"2 reading\(s\) were not delivered to vitals"
            ):
                emulate()
        else:
            emulate()

    assert len(producer.produced) == 6
    values = [json.loads(value) for _, value in producer.produced]
    assert {value["schema_version"] for value in values} == {2}
    assert all("etco2" in value for value in values)
    [started] = [r for r in caplog.records if r.getMessage() == "emulating patients"]
    assert (started.schema_version, started.ventilated, started.nibp_every_s) == (2, True, 900.0)
    [stopped] = [r for r in caplog.records if r.getMessage() == "emulator stopped"]
    assert (stopped.produced, stopped.undelivered) == (6, left_in_queue)


# --- run_patient's arguments ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bob:sepsis", ("bob", "sepsis")),
        ("bob:random", ("bob", "random")),
        ("bed 3:cardiac_arrest", ("bed 3", "cardiac_arrest")),
        ("a:b:sepsis", ("a:b", "sepsis")),  # split on the last ':' only
        ("ward:3", ("ward:3", None)),  # not a scenario: part of the name
        ("bob:", ("bob:", None)),
        (":sepsis", (":sepsis", None)),  # no name before it: the whole is the name
        ("bob", ("bob", None)),
    ],
)
def test_name_scenario_split(text: str, expected: tuple[str, str | None]):
    assert emulation.name_scenario_split(text) == expected


@pytest.mark.parametrize(("text", "scenario"), [("bob:foo", "foo"), ("bob:Sepsis", "Sepsis")])
def test_a_name_ending_in_an_unknown_scenario_is_refused_with_the_known_ones(
    no_broker: None, text: str, scenario: str
):
    """`bob:foo` is a mistyped scenario, not a stable patient called "bob:foo"."""
    with pytest.raises(CommandError) as refused:
        call_command("run_patient", "--name", text)

    assert str(refused.value) == (
        f"--name {text!r}: unknown scenario {scenario!r}; one of "
        "stable, sepsis, respiratory_failure, bradycardia, hypertensive_crisis, cardiac_arrest, "
        "random."
    )


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("", "'patient_name' must be 1-200 characters, got 0"),
        ("   ", "'patient_name' is blank: nothing visible in it"),
        ("b" * 201, "'patient_name' must be 1-200 characters, got 201"),
        ("bob\u200b", "'patient_name' has zero-width character U+200B: no zero-width characters"),
        ("bob\u202e", "'patient_name' has bidi control U+202E: no bidi controls"),
        (
            "bob\n",
            "'patient_name' has control character U+000A: no control characters (C0, C1, "
            "U+2028, U+2029)",
        ),
    ],
)
def test_a_name_the_contract_refuses_is_refused_before_producing(
    no_broker: None, name: str, rule: str
):
    """The consumer would send every reading of such a patient to the DLQ."""
    with pytest.raises(CommandError) as refused:
        call_command("run_patient", "--name", name)

    assert str(refused.value) == f"--name {name!r}: {rule}."


def build(**options) -> list[PatientEmulator]:
    defaults = {
        "names": [],
        "patients": 0,
        "patient_uuid": None,
        "scenario": "stable",
        "seed": 7,
        "artefacts": False,
    }
    return emulation.emulators_build(**(defaults | options))


def test_a_name_s_own_scenario_overrides_the_default_and_keeps_the_name_s_uuid(settings):
    settings.PATIENT_UUID = ""
    bob, alice, bed = build(names=["bob:sepsis", "alice"], patients=1, scenario="bradycardia")

    assert (bob.name, bob.scenario, bob.patient_uuid) == (
        "bob",
        "sepsis",
        patient_uuid_for_name("bob"),
    )
    assert (alice.name, alice.scenario) == ("alice", "bradycardia")
    assert (bed.name, bed.scenario) == ("bed-001", "bradycardia")


def test_one_named_patient_with_a_scenario_takes_the_explicit_uuid(settings):
    settings.PATIENT_UUID = ""
    explicit = uuid.uuid4()

    [bob] = build(names=["bob:cardiac_arrest"], patient_uuid=str(explicit), artefacts=True)

    assert (bob.name, bob.scenario, bob.patient_uuid, bob.artefacts) == (
        "bob",
        "cardiac_arrest",
        explicit,
        True,
    )


def test_a_random_ward_is_reproducible_with_a_seed(settings):
    ward = [e.scenario for e in build(patients=40, scenario="random")]

    assert ward == [e.scenario for e in build(patients=40, scenario="random")]
    assert len(set(ward)) >= 3


def test_the_same_name_with_two_scenarios_is_still_the_same_patient(settings):
    with pytest.raises(emulation.InvalidEmulatorOption, match="Each --name must be different"):
        build(names=["bob", "bob:sepsis"])


@pytest.fixture
def no_broker(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listens at the broker address, and creating a producer fails the test: the
    error must come before any broker access."""
    settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{free_port()}"

    def touched(**_config):
        raise AssertionError("the broker was touched")

    monkeypatch.setattr(emulation, "producer_create", touched)


def test_an_unknown_scenario_is_an_argument_error(no_broker: None):
    with pytest.raises(CommandError, match="argument --scenario: invalid choice: 'nope'"):
        call_command("run_patient", "--name", "bob", "--scenario", "nope")


@pytest.mark.parametrize("speed", ["0", "-1", "nan", "inf"])
def test_speed_must_be_a_positive_number(no_broker: None, speed: str):
    with pytest.raises(CommandError, match="--speed must be a number more than 0"):
        call_command("run_patient", "--name", "bob", "--speed", speed)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nibp-every", "-1"], "--nibp-every must be 0 or more"),
        (["--nibp-every", "nan"], "--nibp-every must be 0 or more"),
        (["--temperature-every", "-5"], "--temperature-every must be 0 or more"),
        (["--schema-version", "3"], "argument --schema-version: invalid choice: 3"),
    ],
)
def test_monitor_options_are_checked_before_the_broker(no_broker: None, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("run_patient", "--name", "bob", *args)


def test_the_monitor_sends_version_2_by_default_and_version_1_on_request(no_broker, monkeypatch):
    built: list[PatientEmulator] = []
    real = emulation.emulators_build

    def spy(**options) -> list[PatientEmulator]:
        built.extend(real(**options))
        return built

    monkeypatch.setattr(run_patient, "emulators_build", spy)
    for args in ([], ["--ventilated", "--nibp-every", "600", "--temperature-every", "120"]):
        with pytest.raises(AssertionError, match="the broker was touched"):
            call_command("run_patient", "--name", "bob", *args)
    with pytest.raises(AssertionError, match="the broker was touched"):
        call_command("run_patient", "--name", "bob", "--schema-version", "1")

    default, ventilated, v1 = built
    assert (default.schema_version, default.ventilated) == (2, False)
    assert (default.nibp_every, default.temperature_every) == (15 * MINUTE, 5 * MINUTE)
    assert (ventilated.ventilated, ventilated.nibp_every, ventilated.temperature_every) == (
        True,
        600.0,
        120.0,
    )
    assert v1.schema_version == 1


def test_name_with_a_scenario_on_the_command_line(no_broker: None, monkeypatch):
    built: list[PatientEmulator] = []
    real = run_patient.emulators_build

    def spy(**options) -> list[PatientEmulator]:
        built.extend(real(**options))
        return built

    monkeypatch.setattr(run_patient, "emulators_build", spy)

    with pytest.raises(AssertionError, match="the broker was touched"):
        call_command(
            "run_patient", "--name", "bob:sepsis", "--name", "carol", "--scenario", "random",
            "--seed", "3", "--speed", "60", "--artefacts",
        )  # fmt: skip

    bob, carol = built
    assert (bob.name, bob.scenario, bob.patient_uuid) == (
        "bob",
        "sepsis",
        patient_uuid_for_name("bob"),
    )
    assert carol.scenario == make("carol", seed=3, scenario="random").scenario
    assert bob.artefacts
    assert carol.artefacts


def test_help_lists_the_scenarios_and_keeps_the_examples_readable():
    help_text = run_patient.Command().create_parser("manage.py", "run_patient").format_help()

    for name in SCENARIO_CHOICES:
        assert f"\n  {name} " in help_text
    assert "\nexamples:\n" in help_text
    assert "\n  python manage.py run_patient --name bob:sepsis --speed 60" in help_text
    assert "\n  python manage.py run_patient --name dora:respiratory_failure --ventilated" in (
        help_text
    )
    assert "\n  python manage.py run_patient --patients 5 --schema-version 1" in help_text
    for option in ("--ventilated", "--nibp-every", "--temperature-every", "--schema-version"):
        assert option in help_text
