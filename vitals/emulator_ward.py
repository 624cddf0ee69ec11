"""A ward of emulated patients stepped as arrays (numpy): the physiology of vitals/emulator.py,
for thousands of patients in one process.

`PatientEmulator` steps one patient in Python: some 70 µs a reading, 0.7 s of CPU a second for
10,000 patients at 1 Hz. `WardEmulator` holds the same state for every patient as arrays and
steps a slice of patients at once (`step`): the same equations, coefficients, scenarios,
nurse, consciousness, artefacts and monitor cadence, read from vitals/emulator.py's constants.
`messages` encodes a step's readings as the very bytes `reading_to_message` gives (tested).

What differs from the per-patient path is the random stream only: one numpy generator for the
ward instead of a `random.Random` per patient (seeded from the first patient's, itself from
`--seed`), so a seeded ward is reproducible for the same steps but its values are not those
lone `PatientEmulator`s of the same seed give. A patient's own draws at creation (its
baselines, pace, arrest time, MAP fraction, etCO2 baseline, its `random` scenario) are taken
from its `PatientEmulator`: the same patients as before.
"""

import json
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np

from vitals.contract import INT_RANGES, TEMPERATURE_RANGE, Reading
from vitals.emulator import (
    ARREST,
    ARTEFACT_RATE,
    BRADY_PULSE,
    BRADY_VARIABILITY_CUT,
    CONSCIOUSNESS_HYSTERESIS,
    CONSCIOUSNESS_RULES,
    DRIVER_SD,
    DRIVER_TAU_S,
    DRIVERS,
    DYNAMICS,
    EFFECTS,
    ETCO2_ARREST,
    ETCO2_DYNAMICS,
    ETCO2_EFFECTS,
    FEVER_ABOVE_C,
    FEVER_PULSE_PER_C,
    HYPOXIA_BELOW,
    HYPOXIA_PULSE_PER_PERCENT,
    HYPOXIA_RESP_RATE_PER_PERCENT,
    MAP_NOISE,
    MOTION_PULSE,
    OXYGEN_AFTER_S,
    OXYGEN_BELOW,
    OXYGEN_SPO2,
    SCENARIOS,
    PatientEmulator,
)
from vitals.signs import map_from_bp

SIGNS = tuple(DYNAMICS)  # the hidden signs, in the column order of the arrays
PULSE, RESP_RATE, SYSTOLIC, DIASTOLIC, SPO2, TEMPERATURE = (
    SIGNS.index(s) for s in ("pulse", "resp_rate", "systolic", "diastolic", "spo2", "temperature")
)
BRADY = DRIVERS.index("brady")
LETTERS = ("A", *(letter for letter, _ in CONSCIOUSNESS_RULES), "U")
ARREST_LEVEL = len(LETTERS) - 1
# Artefact codes in the arrays: none, a probe off the finger, a motion spike.
NO_ARTEFACT, PROBE_OFF, MOTION = 0, 1, 2
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_SD = np.array([DYNAMICS[s][2] for s in SIGNS])
_TAU = np.array([DYNAMICS[s][3] for s in SIGNS], dtype=float)
_NOISE = np.array([DYNAMICS[s][4] for s in SIGNS])
_EFFECTS = np.array([[EFFECTS.get(d, {}).get(s, 0.0) for s in SIGNS] for d in DRIVERS])
_ETCO2_EFFECTS = np.array([ETCO2_EFFECTS.get(d, 0.0) for d in DRIVERS])
# Cardiac arrest: the signs set exactly (reversion time 0) and the one that falls (SpO2).
_ARREST_SET = np.array([s in ARREST and ARREST[s][1] == 0 for s in SIGNS])
_ARREST_TARGET = np.array([ARREST.get(s, (0.0, 0.0))[0] for s in SIGNS])
_ARREST_TAU = np.array([ARREST[s][1] if s in ARREST and ARREST[s][1] else 1.0 for s in SIGNS])
_ARREST_EASE = np.array([s in ARREST and ARREST[s][1] > 0 for s in SIGNS])
_RULES = [
    (np.array([DRIVERS.index(d) for d in t]), np.array(list(t.values())))
    for _, t in CONSCIOUSNESS_RULES
]


def _ou(state, target, sd, tau, dt, noise):
    """`_ou_step` of vitals/emulator.py on arrays (the exact transition over dt)."""
    decay = np.exp(-dt / tau)
    return target + (state - target) * decay + sd * np.sqrt(1 - decay * decay) * noise


def _clamp(values, sign: str):
    low, high = INT_RANGES[sign]
    return np.clip(np.rint(values), low, high).astype(np.int64)


class WardEmulator:
    """Every patient's hidden state as arrays; `step(start, stop, dt)` reads the monitors of
    patients start..stop-1 (a slice: the schedule steps neighbours together)."""

    def __init__(self, emulators: Sequence[PatientEmulator]) -> None:
        """The ward of these patients, from their state now. Its random stream is seeded from
        the first patient's (drawn from it), itself from the seed it was created with: a
        seeded ward is reproducible, an unseeded one is not."""
        first = emulators[0]
        options = ("artefacts", "ventilated", "schema_version", "nibp_every", "temperature_every")
        for e in emulators:
            if any(getattr(e, o) != getattr(first, o) for o in options):
                raise ValueError("a ward's patients share their monitor options")
        self.n = len(emulators)
        self.rng = np.random.default_rng(first.rng.getrandbits(128))
        self.artefacts = first.artefacts
        self.ventilated = first.ventilated
        self.schema_version = first.schema_version
        self.nibp_every = first.nibp_every
        self.temperature_every = first.temperature_every
        self.keys = [str(e.patient_uuid).encode() for e in emulators]
        self.names = [e.name for e in emulators]
        self.prefixes = [
            f'{{"schema_version":{first.schema_version},"patient_uuid":"{e.patient_uuid}",'
            f'"patient_name":{json.dumps(e.name, ensure_ascii=False)},"timestamp":"'
            for e in emulators
        ]
        # The state each PatientEmulator has now (at creation: its own seeded draws).
        self.elapsed = np.array([e.elapsed for e in emulators])
        self.baseline = np.array([[e.baseline[s] for s in SIGNS] for e in emulators])
        self.state = np.array([[e.state[s] for s in SIGNS] for e in emulators])
        self.drivers = np.array([[e.drivers[d] for d in DRIVERS] for e in emulators])
        # Each driver's ramp as the patient runs it (its pace applied); level 0: no ramp.
        ramps = [[SCENARIOS[e.scenario].ramps.get(d) for d in DRIVERS] for e in emulators]
        paces = np.array([[e.pace] for e in emulators])
        self.ramp_start = np.array([[r.start_s if r else 0.0 for r in p] for p in ramps]) * paces
        self.ramp_end = np.array([[r.end_s if r else 1.0 for r in p] for p in ramps]) * paces
        self.ramp_level = np.array([[r.level if r else 0.0 for r in p] for p in ramps])
        self.arrest_at = np.array(
            [np.inf if e.arrest_at is None else e.arrest_at for e in emulators]
        )
        self.arrested = np.array([e.arrested for e in emulators])
        self.on_oxygen = np.array([e.on_oxygen for e in emulators])
        self.low_spo2_for = np.array([e.low_spo2_for for e in emulators])
        self.consciousness = np.array([LETTERS.index(e.consciousness) for e in emulators])
        self.map_fraction = np.array([e.map_fraction for e in emulators])
        self.etco2_baseline = np.array([e.etco2_baseline for e in emulators])
        self.etco2 = np.array([e.etco2 for e in emulators])
        self.nibp_at = np.array([np.nan if e.nibp_at is None else e.nibp_at for e in emulators])
        self.temperature_at = np.array(
            [np.nan if e.temperature_at is None else e.temperature_at for e in emulators]
        )

    def step(self, start: int, stop: int, dt) -> dict[str, np.ndarray]:
        """Advance patients start..stop-1 by `dt` simulated seconds (a number or an array) and
        read their monitors: `PatientEmulator.reading` for each, as arrays. Returns every
        sign's value as the full reading has it, whether each is sent (`nibp_sent`,
        `temperature_sent`), `temperature` in tenths of a degree, `artefact` codes and
        `consciousness` as an index into LETTERS."""
        s = slice(start, stop)
        k = stop - start
        dt = np.broadcast_to(np.asarray(dt, dtype=float), (k,))
        if (dt < 0).any():
            raise ValueError(f"dt must be 0 or more, got {dt.min()}")
        rng = self.rng
        elapsed = self.elapsed[s] = self.elapsed[s] + dt
        step = np.maximum(dt, 1e-3)[:, None]
        arrested = self.arrested[s] = self.arrested[s] | (elapsed >= self.arrest_at[s])

        # The drivers follow their scenario's ramps (smoothstep), clipped into [0, 1].
        x = np.clip(
            (elapsed[:, None] - self.ramp_start[s]) / (self.ramp_end[s] - self.ramp_start[s]),
            0.0,
            1.0,
        )
        goal = self.ramp_level[s] * x * x * (3 - 2 * x)
        drivers = _ou(
            self.drivers[s],
            goal,
            DRIVER_SD * goal,
            DRIVER_TAU_S,
            step,
            rng.standard_normal((k, len(DRIVERS))),
        )
        drivers = self.drivers[s] = np.clip(drivers, 0.0, 1.0)

        # Each sign's target: baseline + the drivers' effects + the couplings (`_targets`).
        state = self.state[s]
        baseline = self.baseline[s]
        targets = baseline + drivers @ _EFFECTS
        fever = np.maximum(
            0.0, state[:, TEMPERATURE] - np.maximum(FEVER_ABOVE_C, baseline[:, TEMPERATURE])
        )
        hypoxia = np.maximum(0.0, HYPOXIA_BELOW - state[:, SPO2])
        targets[:, PULSE] += FEVER_PULSE_PER_C * fever + HYPOXIA_PULSE_PER_PERCENT * hypoxia
        targets[:, RESP_RATE] += HYPOXIA_RESP_RATE_PER_PERCENT * hypoxia
        brady = drivers[:, BRADY]
        targets[:, PULSE] = targets[:, PULSE] * (1 - brady) + BRADY_PULSE * brady
        targets[:, SPO2] = np.minimum(100.0, targets[:, SPO2] + OXYGEN_SPO2 * self.on_oxygen[s])

        sd = np.broadcast_to(_SD, (k, len(SIGNS))).copy()
        sd[:, PULSE] *= 1 - BRADY_VARIABILITY_CUT * brady
        tau = np.broadcast_to(_TAU, (k, len(SIGNS)))
        if arrested.any():
            a = arrested[:, None]
            targets = np.where(a & (_ARREST_SET | _ARREST_EASE), _ARREST_TARGET, targets)
            tau = np.where(a & _ARREST_EASE, _ARREST_TAU, tau)
        state = _ou(state, targets, sd, tau, step, rng.standard_normal((k, len(SIGNS))))
        observed = state + _NOISE * rng.standard_normal((k, len(SIGNS)))
        if arrested.any():
            exact = arrested[:, None] & _ARREST_SET
            state = np.where(exact, _ARREST_TARGET, state)
            observed = np.where(exact, _ARREST_TARGET, observed)
        self.state[s] = state

        # End-tidal CO2 (`_advance_etco2`).
        _, _, e_sd, e_tau, e_noise = ETCO2_DYNAMICS
        e_target = np.where(
            arrested, ETCO2_ARREST[0], self.etco2_baseline[s] + drivers @ _ETCO2_EFFECTS
        )
        e_tau = np.where(arrested, ETCO2_ARREST[1], e_tau)
        etco2 = self.etco2[s] = _ou(
            self.etco2[s], e_target, e_sd, e_tau, step[:, 0], rng.standard_normal(k)
        )
        etco2_observed = etco2 + e_noise * rng.standard_normal(k)

        consciousness = self.consciousness[s] = self._consciousness(s, drivers, arrested)

        # The monitor's reading (`_to_reading`).
        systolic = _clamp(observed[:, SYSTOLIC], "systolic")
        diastolic = np.minimum(_clamp(observed[:, DIASTOLIC], "diastolic"), systolic - 15)
        mean = diastolic + self.map_fraction[s] * (systolic - diastolic)
        mean += MAP_NOISE * rng.standard_normal(k)
        low, high = TEMPERATURE_RANGE
        reading = {
            "pulse": _clamp(observed[:, PULSE], "pulse"),
            "resp_rate": _clamp(observed[:, RESP_RATE], "resp_rate"),
            "systolic": systolic,
            "diastolic": diastolic,
            "map": np.minimum(systolic - 1, np.maximum(diastolic + 1, np.rint(mean))).astype(
                np.int64
            ),
            "spo2": _clamp(observed[:, SPO2], "spo2"),
            "temperature": np.rint(np.clip(observed[:, TEMPERATURE], low, high) * 10).astype(
                np.int64
            ),
            "etco2": _clamp(etco2_observed, "etco2"),
            "on_oxygen": self.on_oxygen[s].copy(),
            "consciousness": consciousness,
        }

        # The nurse reads the displayed saturation (`_nurse`).
        low_for = self.low_spo2_for[s] = np.where(
            reading["spo2"] < OXYGEN_BELOW, self.low_spo2_for[s] + dt, 0.0
        )
        self.on_oxygen[s] |= low_for >= OXYGEN_AFTER_S

        artefact = np.zeros(k, dtype=np.int64)
        if self.artefacts:  # `_with_artefact`
            draw = rng.random(k)
            spike = rng.uniform(*MOTION_PULSE, k)
            artefact[draw < 2 * ARTEFACT_RATE] = MOTION
            artefact[draw < ARTEFACT_RATE] = PROBE_OFF
            reading["spo2"] = np.where(artefact == PROBE_OFF, 0, reading["spo2"])
            moved = np.minimum(INT_RANGES["pulse"][1], np.rint(reading["pulse"] + spike))
            reading["pulse"] = np.where(
                artefact == MOTION, moved.astype(np.int64), reading["pulse"]
            )
        reading["artefact"] = artefact

        # What a version 2 monitor sends (`_as_sent`): the cuff and the thermometer when due.
        reading["nibp_sent"] = self._due(self.nibp_at, s, elapsed, self.nibp_every)
        reading["temperature_sent"] = self._due(
            self.temperature_at, s, elapsed, self.temperature_every
        )
        return reading

    def _due(self, last: np.ndarray, s: slice, elapsed: np.ndarray, every: float) -> np.ndarray:
        if self.schema_version == 1:
            return np.ones(len(elapsed), dtype=bool)
        due = np.isnan(last[s]) | (elapsed - last[s] >= every - 1e-3)
        last[s] = np.where(due, elapsed, last[s])
        return due

    def _consciousness(self, s: slice, drivers: np.ndarray, arrested: np.ndarray) -> np.ndarray:
        """ACVPU with its hysteresis (`_update_consciousness`)."""

        def level(margin: float) -> np.ndarray:
            reached = np.zeros(len(drivers), dtype=np.int64)
            for i, (columns, thresholds) in enumerate(_RULES, start=1):
                reached[(drivers[:, columns] >= thresholds - margin).any(axis=1)] = i
            return reached

        current = self.consciousness[s]
        worse = level(0.0)
        kept = np.minimum(current, level(CONSCIOUSNESS_HYSTERESIS))
        return np.where(arrested, ARREST_LEVEL, np.where(worse >= current, worse, kept))

    def messages(
        self, start: int, reading: dict[str, np.ndarray], measured_ms: np.ndarray
    ) -> Iterator[tuple[bytes, bytes]]:
        """The (key, value) of each reading of a `step` that began at patient `start`, taken
        at `measured_ms` (ms since the epoch): `reading_to_message`'s bytes."""
        stamps: dict[int, str] = {}
        version1 = self.schema_version == 1
        ventilated = self.ventilated
        columns = zip(
            *(
                reading[name].tolist()
                for name in (
                    "pulse",
                    "resp_rate",
                    "systolic",
                    "diastolic",
                    "map",
                    "spo2",
                    "temperature",
                    "etco2",
                    "on_oxygen",
                    "consciousness",
                    "artefact",
                    "nibp_sent",
                    "temperature_sent",
                )
            ),
            measured_ms.tolist(),
            strict=True,
        )
        keys, prefixes = self.keys, self.prefixes
        for i, row in enumerate(columns, start=start):
            (
                pulse,
                resp_rate,
                systolic,
                diastolic,
                map_,
                spo2,
                tenths,
                etco2,
                oxygen,
                level,
                artefact,
                nibp,
                temperature,
                ms,
            ) = row
            stamp = stamps.get(ms)
            if stamp is None:
                stamp = stamps[ms] = _timestamp(ms)
            degrees = f"{tenths // 10}.{tenths % 10}"
            if version1:
                signs = (
                    f',"pulse":{pulse},"resp_rate":{resp_rate},"bp":"{systolic}/{diastolic}"'
                    f',"spo2":{spo2},"temperature":{degrees}'
                )
            else:
                signs = f',"pulse":{pulse},"resp_rate":{resp_rate}'
                if nibp:
                    signs += f',"bp":"{systolic}/{diastolic}","map":{map_}'
                if artefact != PROBE_OFF:
                    signs += f',"spo2":{spo2}'
                if temperature:
                    signs += f',"temperature":{degrees}'
                if ventilated:
                    signs += f',"etco2":{etco2}'
            tail = (
                f',"on_oxygen":{"true" if oxygen else "false"},"consciousness":"{LETTERS[level]}"'
            )
            if artefact:
                tail += (
                    ',"artefact":"spo2_probe_off"}'
                    if artefact == PROBE_OFF
                    else ',"artefact":"motion"}'
                )
            else:
                tail += "}"
            yield keys[i], f'{prefixes[i]}{stamp}"{signs}{tail}'.encode()

    def readings(
        self, start: int, reading: dict[str, np.ndarray], measured_ms: np.ndarray
    ) -> list[Reading]:
        """The `Reading`s of a `step` (what `PatientEmulator.reading` returns), for a look at
        the values: `messages` encodes the same without building them."""
        result = []
        for j in range(len(measured_ms)):
            i = start + j
            value = {name: int(array[j]) for name, array in reading.items()}
            artefact = (None, "spo2_probe_off", "motion")[value["artefact"]]
            nibp = value["nibp_sent"]
            temperature = value["temperature_sent"]
            version1 = self.schema_version == 1
            systolic, diastolic = value["systolic"], value["diastolic"]
            result.append(
                Reading(
                    patient_uuid=uuid.UUID(self.keys[i].decode()),
                    patient_name=self.names[i],
                    measured_at=EPOCH + timedelta(milliseconds=int(measured_ms[j])),
                    pulse=value["pulse"],
                    resp_rate=value["resp_rate"],
                    systolic=systolic if nibp else None,
                    diastolic=diastolic if nibp else None,
                    spo2=None if artefact == "spo2_probe_off" and not version1 else value["spo2"],
                    temperature=value["temperature"] / 10 if temperature else None,
                    on_oxygen=bool(value["on_oxygen"]),
                    consciousness=LETTERS[value["consciousness"]],
                    artefact=artefact,
                    map=map_from_bp(systolic, diastolic)
                    if version1
                    else (value["map"] if nibp else None),
                    etco2=value["etco2"] if self.ventilated and not version1 else None,
                    schema_version=self.schema_version,
                )
            )
        return result


def _timestamp(ms: int) -> str:
    """`reading_to_message`'s timestamp of a time in ms since the epoch."""
    return (EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")
