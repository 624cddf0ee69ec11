"""The ward stepped as arrays (vitals/emulator_ward.py), what `run_patient` runs beyond 5
patients: its messages are `reading_to_message`'s bytes and obey the contract, its patients are
those of the per-patient path, a seed reproduces it, its stories behave as the per-patient
path's (compared over the same patients), and its schedule.

Its random stream is the ward's own (numpy), not each patient's `random.Random`: the values
differ from test_emulator.py's seeded sequences, so what is tested here is properties, not a
sequence. Pure unit tests: no database, no broker; time is simulated.
"""

import json
import statistics
import threading
from datetime import timedelta

import numpy as np
import pytest

from vitals import emulation
from vitals.contract import ARTEFACTS, CONSCIOUSNESS_LEVELS, reading_to_message
from vitals.emulator import DRIVERS, DYNAMICS, HOUR, SCENARIOS
from vitals.emulator_ward import EPOCH, WardEmulator
from vitals.tests.test_emulator import (
    REQUIRED,
    SEED,
    START,
    V2_SCHEMA,
    FakeProducer,
    assert_obeys_contract,
    build,
    make,
    run,
)

START_MS = (START - EPOCH) // timedelta(milliseconds=1)


def ward_of(scenarios, per_scenario: int, seed: int = SEED, **monitor) -> WardEmulator:
    return WardEmulator(
        [
            make(f"{scenario}-{i}", seed, scenario, **monitor)
            for scenario in scenarios
            for i in range(per_scenario)
        ]
    )


def ward_run(ward: WardEmulator, steps: int, dt: float, check_messages: bool = False):
    """Each step's readings (every patient, `dt` apart); with `check_messages`, each step's
    messages are checked to be reading_to_message's of those readings."""
    result = []
    for k in range(steps):
        measured = np.full(ward.n, START_MS + round(dt * 1000) * (k + 1), dtype=np.int64)
        step = ward.step(0, ward.n, dt)
        readings = ward.readings(0, step, measured)
        if check_messages:
            assert list(ward.messages(0, step, measured)) == list(map(reading_to_message, readings))
        result.append(readings)
    return result


@pytest.mark.parametrize(
    "monitor",
    [
        pytest.param({"schema_version": 2, "ventilated": True, "artefacts": True}, id="v2-all"),
        pytest.param({"schema_version": 2}, id="v2"),
        pytest.param({"schema_version": 1, "artefacts": True}, id="v1"),
    ],
)
def test_ward_messages_are_reading_to_message_s_bytes_and_obey_the_contract(monitor):
    """Through every story and beyond (5 h at 1 min), two patients each."""
    # A name quoted and non-ASCII too: json.dumps's encoding of it.
    names = ['Zoë O\'Brien "bed"', *(f"p{i}" for i in range(1, 2 * len(REQUIRED)))]
    ward = WardEmulator(
        [make(name, SEED, REQUIRED[i // 2], **monitor) for i, name in enumerate(names)]
    )

    steps = ward_run(ward, 300, 60.0, check_messages=True)

    readings = [r for step in steps for r in step]
    assert_obeys_contract(readings)
    assert min(r.systolic - r.diastolic for r in readings if r.systolic) >= 15
    assert {"A", "C", "U"} <= {r.consciousness for r in readings} <= set(CONSCIOUSNESS_LEVELS)
    if monitor.get("artefacts"):
        assert {r.artefact for r in readings} == {None, *ARTEFACTS}
    if monitor["schema_version"] == 2:
        for reading in steps[-1]:
            assert list(V2_SCHEMA.iter_errors(json.loads(reading_to_message(reading)[1]))) == []
        # The cuff every 15 min and the thermometer every 5, the first reading included.
        bp_at = [k for k, step in enumerate(steps) if step[0].systolic is not None]
        temperature_at = [k for k, step in enumerate(steps) if step[0].temperature is not None]
        assert bp_at[:3] == [0, 15, 30]
        assert temperature_at[:3] == [0, 5, 10]
        assert {r.etco2 is not None for r in readings} == {monitor.get("ventilated", False)}


def test_ward_patients_are_those_of_the_per_patient_path():
    patients = build(patients=40, scenario="random", artefacts=True)
    twins = build(patients=40, scenario="random", artefacts=True)

    ward = WardEmulator(patients)

    for i, twin in enumerate(twins):
        assert ward.names[i] == twin.name
        assert ward.keys[i] == str(twin.patient_uuid).encode()
        assert ward.baseline[i].tolist() == list(twin.baseline.values())
        assert ward.map_fraction[i] == twin.map_fraction
        assert ward.etco2_baseline[i] == twin.etco2_baseline
        assert ward.arrest_at[i] == (np.inf if twin.arrest_at is None else twin.arrest_at)
        for d, ramp in enumerate(SCENARIOS[twin.scenario].ramps.get(x) for x in DRIVERS):
            if ramp is not None:
                assert ward.ramp_start[i, d] == ramp.start_s * twin.pace
                assert ward.ramp_level[i, d] == ramp.level
    assert len({twin.scenario for twin in twins}) >= 4


def test_a_seeded_ward_is_reproducible_and_another_seed_differs():
    def values(seed: int) -> list:
        ward = ward_of(["sepsis", "stable"], 5, seed=seed, artefacts=True)
        return [
            list(ward.messages(0, ward.step(0, ward.n, 5.0), np.zeros(10, dtype=np.int64)))
            for _ in range(50)
        ]

    assert values(1) == values(1)
    assert values(1) != values(2)


# Tolerances on a sign's mean over 12 patients, ward against per-patient: a few times the
# standard error of the mean of 12 patients with baselines spread over the DYNAMICS range.
TOLERANCE = {"pulse": 7, "resp_rate": 2.5, "systolic": 9, "diastolic": 6, "spo2": 2.0}


@pytest.mark.parametrize("scenario", REQUIRED)
def test_ward_stories_behave_as_the_per_patient_path(scenario: str):
    """The same 12 patients both ways, through the story and half an hour beyond (1 min steps):
    the signs' means across patients at the story's landmarks (a quarter, half, the end), the
    spread of each patient's pulse around its own course, the nurse's oxygen and ACVPU."""
    dt, patients = 60.0, 12
    steps = round((SCENARIOS[scenario].duration_s + HOUR / 2) / dt)
    ward = ward_run(ward_of([scenario], patients, ventilated=True), steps, dt)
    alone = [
        run(make(f"{scenario}-{i}", SEED, scenario, ventilated=True), steps, dt)
        for i in range(patients)
    ]

    def mean(readings, sign: str) -> float:
        return statistics.fmean(getattr(r, sign) for r in readings)

    for k in sorted({steps // 4, steps // 2, steps - 1}):
        for sign, tolerance in TOLERANCE.items():
            at_k = [readings[k] for readings in alone]
            assert mean(ward[k], sign) == pytest.approx(mean(at_k, sign), abs=tolerance), (k, sign)
    last = steps - 1
    assert [r.on_oxygen for r in ward[last]].count(True) == pytest.approx(
        [readings[last].on_oxygen for readings in alone].count(True), abs=3
    )
    assert [r.consciousness for r in ward[last]].count("A") == pytest.approx(
        [readings[last].consciousness for readings in alone].count("A"), abs=3
    )
    if scenario == "stable":  # the noise: pulse steps of a patient vary alike
        ward_sd = statistics.fmean(
            statistics.stdev(step[i].pulse for step in ward) for i in range(patients)
        )
        alone_sd = statistics.fmean(statistics.stdev(r.pulse for r in rs) for rs in alone)
        assert ward_sd == pytest.approx(alone_sd, rel=0.3)
        assert ward_sd == pytest.approx(DYNAMICS["pulse"][2], rel=0.4)


def test_ward_schedule_run_sends_count_readings_each_on_the_grid():
    """10 ms slots: 30 patients over 0.05 s; wall-clock stamps, strictly increasing per
    patient, the physiology advanced by speed x the time between two readings."""
    producer = FakeProducer()
    emitter = emulation.Emitter(producer=producer, topic="vitals", log_each=False)
    ward = WardEmulator(build(patients=30, scenario="random"))

    emulation.ward_schedule_run(ward, 0.05, 4, emitter, lambda: False, speed=60.0)

    assert len(producer.produced) == 120 == emitter.produced
    by_patient: dict[bytes, list[float]] = {}
    for key, value in producer.produced:
        stamp = json.loads(value)["timestamp"]
        by_patient.setdefault(key, []).append(EPOCH.fromisoformat(stamp).timestamp())
    assert sorted(by_patient) == sorted(ward.keys)
    for i, key in enumerate(ward.keys):
        times = by_patient[key]
        assert times == sorted(times)
        assert len(set(times)) == 4
        wall = times[-1] - times[0]
        assert 0.14 <= wall < 1.0
        assert ward.elapsed[i] == pytest.approx((0.05 + wall) * 60, abs=0.06)


def test_ward_schedule_run_at_interval_0_sends_all_at_once_strictly_ordered():
    producer = FakeProducer()
    emitter = emulation.Emitter(producer=producer, topic="vitals", log_each=False)
    ward = WardEmulator(build(patients=10))

    emulation.ward_schedule_run(ward, 0, 3, emitter, lambda: False)

    stamps = [json.loads(value)["timestamp"] for key, value in producer.produced[::10]]
    assert len(producer.produced) == 30
    assert stamps == sorted(set(stamps))  # +1 ms when the clock has not moved


def test_emulation_run_steps_a_ward_as_arrays_beyond_5_patients(monkeypatch):
    producer = FakeProducer()
    monkeypatch.setattr(emulation, "producer_create", lambda **config: producer)
    monkeypatch.setattr(emulation, "broker_check", lambda *args, **kwargs: None)

    def per_patient(*args, **kwargs):
        raise AssertionError("per-patient schedule used")

    monkeypatch.setattr(emulation, "schedule_run", per_patient)
    frozen: list[bool] = []  # not the test process's objects: only that it is asked for
    monkeypatch.setattr(emulation.gc, "freeze", lambda: frozen.append(True))

    emulation.emulation_run(
        build(patients=6, ventilated=True),
        interval=0,
        speed=1.0,
        count=2,
        topic="vitals",
        broker_timeout=1.0,
        stop=threading.Event(),
    )

    values = [json.loads(value) for _, value in producer.produced]
    assert len(values) == 12
    assert [v["patient_name"] for v in values[:6]] == [f"bed-{i:03d}" for i in range(1, 7)]
    assert all(v["schema_version"] == 2 and "etco2" in v for v in values)
    assert frozen == [True]
