"""The bedside-monitor emulator: stable identities, determinism, plausible drift, episodes.

Pure unit tests: no database, no broker. Runs are seeded, so every number checked here is the
same on every run; the thresholds still hold with a wide margin for other seeds.
"""

import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from vitals import emulator
from vitals.contract import (
    INT_RANGES,
    TEMPERATURE_RANGE,
    Reading,
    reading_parse,
    reading_to_message,
)
from vitals.emulator import (
    DYNAMICS,
    EPISODES,
    Episode,
    PatientEmulator,
    patient_uuid_for_name,
)

START = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
SEED = 1234
BASE_DIR = Path(__file__).resolve().parents[2]


def make(name: str = "bob", seed: int | None = SEED) -> PatientEmulator:
    return PatientEmulator.create(name=name, patient_uuid=patient_uuid_for_name(name), seed=seed)


def run(patient: PatientEmulator, steps: int, dt: float, start: datetime = START) -> list[Reading]:
    """`steps` readings `dt` seconds apart, the first at start + dt."""
    return [patient.reading(start + timedelta(seconds=dt * (i + 1)), dt) for i in range(steps)]


def abnormal(reading: Reading) -> bool:
    """Would a clinician look twice: tachycardia, hypoxaemia, fever or hypotension."""
    return (
        reading.pulse > 120
        or reading.spo2 < 90
        or reading.temperature >= 38.5
        or reading.systolic < 90
    )


def assert_obeys_contract(readings: list[Reading]) -> None:
    """Every reading survives reading_to_message -> reading_parse unchanged."""
    now = max(reading.measured_at for reading in readings) + timedelta(seconds=1)
    for reading in readings:
        key, value = reading_to_message(reading)
        assert reading_parse(key=key, value=value, now=now) == reading, reading


@pytest.fixture
def no_random_episodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the episodes a test sets itself."""
    monkeypatch.setattr(emulator, "EPISODE_RATE_PER_S", 0.0)


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


def test_reading_carries_identity_and_time():
    patient = make("Zoë Ærø")
    measured_at = START + timedelta(seconds=5)

    reading = patient.reading(measured_at, 5.0)

    assert reading.patient_name == "Zoë Ærø"
    assert reading.patient_uuid == uuid.uuid5(emulator.PATIENT_NAMESPACE, "Zoë Ærø")
    assert reading.measured_at == measured_at


# --- Determinism ---------------------------------------------------------------------------------


def test_same_seed_and_patient_give_identical_readings():
    first = run(make(seed=42), 500, 5.0)
    second = run(make(seed=42), 500, 5.0)

    assert first == second
    assert len({reading.pulse for reading in first}) > 10  # not a constant sequence


def vitals_of(reading: Reading) -> tuple:
    return (
        reading.pulse,
        reading.resp_rate,
        reading.systolic,
        reading.diastolic,
        reading.spo2,
        reading.temperature,
    )


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
    first, second = run(make(*a), 50, 5.0), run(make(*b), 50, 5.0)

    differing = sum(vitals_of(x) != vitals_of(y) for x, y in zip(first, second, strict=True))
    assert differing >= 40


def test_seeded_readings_are_the_same_in_another_process():
    """The seed is a string hashed by `random` with SHA-512: independent of PYTHONHASHSEED."""
    script = (
        "import json, sys\n"
        "from datetime import datetime, timedelta, UTC\n"
        "from vitals.emulator import PatientEmulator, patient_uuid_for_name\n"
        "u = patient_uuid_for_name('bob')\n"
        "p = PatientEmulator.create(name='bob', patient_uuid=u, seed=7)\n"
        "t = datetime(2026, 11, 23, 8, tzinfo=UTC)\n"
        "rs = [p.reading(t + timedelta(seconds=5 * (i + 1)), 5.0) for i in range(20)]\n"
        "json.dump([[r.pulse, r.resp_rate, r.systolic, r.diastolic, r.spo2, r.temperature]"
        " for r in rs], sys.stdout)\n"
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

    here = [
        [r.pulse, r.resp_rate, r.systolic, r.diastolic, r.spo2, r.temperature]
        for r in run(make(seed=7), 20, 5.0)
    ]
    assert json.loads(result.stdout) == here


# --- Long runs: contract and plausibility --------------------------------------------------------


@dataclass
class LongRun:
    readings: dict[str, list[Reading]]  # patient name -> readings in time order
    episode_kinds: list[str | None]  # per step of every patient: the episode then, if any

    @property
    def all(self) -> list[Reading]:
        return [reading for readings in self.readings.values() for reading in readings]


PATIENTS = [f"patient-{i:02d}" for i in range(20)]
LONG_STEPS = 3000
LONG_DT = 5.0


@pytest.fixture(scope="module")
def long_run() -> LongRun:
    """20 patients x 3000 readings 5 s apart (about 4 hours each), with random episodes."""
    readings: dict[str, list[Reading]] = {}
    kinds: list[str | None] = []
    for name in PATIENTS:
        patient = make(name)
        readings[name] = []
        for i in range(LONG_STEPS):
            readings[name].append(
                patient.reading(START + timedelta(seconds=LONG_DT * (i + 1)), LONG_DT)
            )
            kinds.append(patient.episode.kind if patient.episode else None)
    return LongRun(readings=readings, episode_kinds=kinds)


def test_long_run_obeys_the_contract(long_run: LongRun):
    readings = long_run.all
    assert len(readings) == len(PATIENTS) * LONG_STEPS

    assert_obeys_contract(readings)


def test_long_run_keeps_a_pulse_pressure(long_run: LongRun):
    """A cuff never reports diastolic at or near systolic."""
    assert min(r.systolic - r.diastolic for r in long_run.all) >= 15


@pytest.mark.parametrize("name", PATIENTS)
def test_long_run_patient_is_plausible(long_run: LongRun, name: str):
    readings = long_run.readings[name]
    pulses = [r.pulse for r in readings]

    steps = [abs(b - a) for a, b in itertools.pairwise(pulses)]
    assert statistics.median(steps) < 4  # drifts, does not jump like randint
    assert 55 <= statistics.mean(pulses) <= 110
    assert statistics.mean(r.spo2 for r in readings) >= 93
    assert 12 <= statistics.mean(r.resp_rate for r in readings) <= 22
    assert 36.0 <= statistics.mean(r.temperature for r in readings) <= 37.8
    assert len(set(pulses)) >= 10  # it does move


def test_deterioration_happens_but_is_a_minority(long_run: LongRun):
    readings = long_run.all
    count = sum(abnormal(r) for r in readings)

    assert count > 0
    assert count / len(readings) < 0.25
    assert any(r.pulse > 120 for r in readings)
    assert any(r.spo2 < 90 for r in readings)
    assert any(r.systolic < 90 for r in readings)


def test_episodes_occur_at_the_configured_rate(long_run: LongRun):
    kinds = long_run.episode_kinds
    # Kinds are drawn uniformly, each with its own range of durations.
    mean_duration = statistics.mean(sum(span) / 2 for _, span in EPISODES.values())
    # A renewal process: on average 1/rate seconds without an episode, then one episode.
    expected = mean_duration / (1 / emulator.EPISODE_RATE_PER_S + mean_duration)

    in_episode = sum(kind is not None for kind in kinds) / len(kinds)

    assert abs(in_episode - expected) < 0.04, (in_episode, expected)
    assert {kind for kind in kinds if kind is not None} == set(EPISODES)


def test_stable_patient_stays_near_its_baseline(no_random_episodes: None):
    for name in PATIENTS[:5]:
        patient = make(name)
        readings = run(patient, 2000, 5.0)

        assert abs(statistics.mean(r.pulse for r in readings) - patient.baseline["pulse"]) < 2
        assert abs(statistics.mean(r.spo2 for r in readings) - patient.baseline["spo2"]) < 1
        assert not any(r.pulse > 120 or r.spo2 < 90 for r in readings)


# --- Episodes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [
        pytest.param(0.0, 0.0, id="start"),
        pytest.param(50.0, 0.5, id="half-way-up"),
        pytest.param(100.0, 1.0, id="plateau-start"),
        pytest.param(150.0, 1.0, id="plateau-middle"),
        pytest.param(200.0, 1.0, id="plateau-end"),
        pytest.param(250.0, 0.5, id="half-way-down"),
        pytest.param(299.0, 0.01, id="almost-over"),
        pytest.param(300.0, 0.0, id="end"),
        pytest.param(400.0, 0.0, id="after-end-not-negative"),
    ],
)
def test_episode_intensity_ramps_up_plateaus_and_ramps_down(elapsed: float, expected: float):
    episode = Episode(kind="fever", duration=300.0, elapsed=elapsed)

    assert episode.intensity() == pytest.approx(expected)


@pytest.mark.parametrize(
    ("elapsed", "over"),
    [(0.0, False), (299.9, False), (300.0, True), (301.0, True)],
    ids=["start", "just-before-end", "at-end", "after-end"],
)
def test_episode_is_over_after_its_duration(elapsed: float, over: bool):
    assert Episode(kind="fever", duration=300.0, elapsed=elapsed).over is over


def test_episode_is_cleared_once_over(no_random_episodes: None):
    patient = make()
    patient.episode = Episode(kind="tachycardia", duration=30.0)

    run(patient, 5, 5.0)
    assert patient.episode is not None
    assert patient.episode.elapsed == 25.0

    run(patient, 1, 5.0, start=START + timedelta(seconds=25))
    assert patient.episode is None


def plateau_effect(seed: int, kind: str) -> tuple[dict[str, float], dict[str, float]]:
    """Force a 300 s episode after 20 quiet minutes, 5 s steps: (plateau - before, after - before),
    in the mean of each sign; `after` is 10 to 30 minutes after the episode ended."""
    patient = make(seed=seed)
    before = run(patient, 240, 5.0)

    patient.episode = Episode(kind=kind, duration=300.0)
    plateau = []
    t = before[-1].measured_at
    while patient.episode is not None:
        t += timedelta(seconds=5)
        reading = patient.reading(t, 5.0)
        if patient.episode is not None and 150.0 <= patient.episode.elapsed <= 200.0:
            plateau.append(reading)
    after = run(patient, 360, 5.0, start=t)[120:]

    def shift(group: list[Reading]) -> dict[str, float]:
        return {
            sign: statistics.mean(getattr(r, sign) for r in group)
            - statistics.mean(getattr(r, sign) for r in before)
            for sign in DYNAMICS
        }

    assert len(plateau) == 11
    assert_obeys_contract(before + plateau + after)
    return shift(plateau), shift(after)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forced_desaturation_drops_spo2_and_recovers(no_random_episodes: None, seed: int):
    during, after = plateau_effect(seed, "desaturation")

    assert during["spo2"] <= -8
    assert abs(after["spo2"]) < 1.5
    # The related signs move with it: the patient breathes and beats faster.
    assert during["pulse"] >= 5
    assert during["resp_rate"] >= 4
    assert abs(after["pulse"]) < 6


@pytest.mark.parametrize("kind", sorted(EPISODES))
def test_each_episode_moves_its_signs_the_way_it_says(no_random_episodes: None, kind: str):
    """Averaged over 5 patients; only the offsets well above a sign's spread (4 sd) are checked,
    the small ones (e.g. bradycardia's -12 systolic) drown in the drift of a single episode."""
    shifts = [plateau_effect(seed, kind)[0] for seed in range(5)]

    checked = 0
    for sign, offset in EPISODES[kind][0].items():
        if abs(offset) < 4 * DYNAMICS[sign][2]:
            continue
        checked += 1
        reached = statistics.mean(shift[sign] for shift in shifts) / offset
        # Temperature follows its target over 8 minutes: a 5-minute episode barely moves it.
        assert reached >= (0.05 if sign == "temperature" else 0.25), (sign, reached)
    assert checked >= 1


# --- Clamping and time steps ---------------------------------------------------------------------


HIGH = {sign: high for sign, (_, high) in INT_RANGES.items()} | {
    "temperature": TEMPERATURE_RANGE[1]
}
LOW = {sign: low for sign, (low, _) in INT_RANGES.items()} | {"temperature": TEMPERATURE_RANGE[0]}


@pytest.mark.parametrize(
    ("hidden", "expected"),
    [
        pytest.param(dict.fromkeys(DYNAMICS, 500.0), HIGH, id="far-above"),
        pytest.param(dict.fromkeys(DYNAMICS, -50.0), LOW, id="far-below"),
    ],
)
def test_readings_are_clamped_into_the_contract(
    no_random_episodes: None, hidden: dict[str, float], expected: dict[str, float]
):
    """A hidden state beyond the contract (a wild baseline) still gives a valid reading."""
    patient = make()
    patient.baseline.update(hidden)
    patient.state.update(hidden)

    reading = patient.reading(START, 5.0)

    assert {sign: getattr(reading, sign) for sign in expected} == expected
    assert_obeys_contract([reading])


def test_diastolic_is_kept_below_systolic(no_random_episodes: None):
    patient = make()
    patient.baseline.update(systolic=60.0, diastolic=58.0)
    patient.state.update(systolic=60.0, diastolic=58.0)

    readings = run(patient, 50, 5.0)

    # The hidden diastolic sits at or above systolic - 15, so the guard sets almost every reading.
    assert min(r.systolic - r.diastolic for r in readings) >= 15
    assert sum(r.systolic - r.diastolic == 15 for r in readings) >= 0.8 * len(readings)
    assert abs(statistics.mean(r.systolic for r in readings) - 60) < 10
    assert_obeys_contract(readings)


@pytest.mark.parametrize(("dt", "steps"), [(1.0, 3000), (60.0, 1000)], ids=["dt-1s", "dt-60s"])
def test_any_interval_keeps_readings_in_the_contract(dt: float, steps: int):
    readings = [r for name in PATIENTS[:5] for r in run(make(name), steps, dt)]

    assert_obeys_contract(readings)
    assert 55 <= statistics.mean(r.pulse for r in readings) <= 110
    assert statistics.mean(r.spo2 for r in readings) >= 93


@pytest.mark.parametrize(("dt", "steps"), [(1.0, 3000), (60.0, 1000)], ids=["dt-1s", "dt-60s"])
def test_spread_around_baseline_does_not_depend_on_the_interval(
    no_random_episodes: None, dt: float, steps: int
):
    """The OU step is exact for any dt: the stationary spread is the same at 1 s and at 60 s."""
    deviations = []
    for name in PATIENTS[:10]:
        patient = make(name)
        deviations += [r.pulse - patient.baseline["pulse"] for r in run(patient, steps, dt)]
    _, _, sd, _, noise = DYNAMICS["pulse"]

    assert statistics.pstdev(deviations) == pytest.approx(math.hypot(sd, noise), rel=0.15)
    assert abs(statistics.mean(deviations)) < 1


def test_a_fever_episode_brings_a_real_fever(no_random_episodes: None):
    """Fevers last 20-40 minutes, long enough for the slow temperature to pass 38.5 °C (the
    NEWS2 line between 1 and 2 points), with the heart and breathing rates following."""
    shortest = EPISODES["fever"][1][0]
    for seed in range(5):
        patient = make(seed=seed)
        before = run(patient, 120, 5.0)
        patient.episode = Episode(kind="fever", duration=shortest)
        during = run(patient, int(shortest / 5), 5.0, start=before[-1].measured_at)

        assert max(r.temperature for r in during) >= 38.5
        hottest = max(during, key=lambda r: r.temperature)
        assert hottest.pulse > statistics.mean(r.pulse for r in before) + 10
