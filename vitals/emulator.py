"""A physiological bedside-monitor emulator: patients that behave like patients.

Three layers. A seed gives the same patient every time: one seeded `random.Random` drives the
physiology; the `random` scenario draw and the artefacts have streams of their own, derived from
the same seed, so that neither changes a single physiological value.

1. **Disease drivers**, the hidden physiological state: `infection` (inflammation, fever),
   `lung` (lung failure: hypoxaemia), `shock` (vasodilation/hypovolaemia), `brady`
   (bradyarrhythmia) and `hypertension`, each in [0, 1], plus a cardiac-arrest flag. A scenario
   (`SCENARIOS`) gives each driver a smooth target curve over time; the driver follows it as an
   Ornstein-Uhlenbeck (OU) process (reversion time `DRIVER_TAU_S`, noise growing with the
   target), and each patient runs the curves at a pace of its own, so two patients with the
   same story do not deteriorate identically. After the scenario's `duration_s` the targets
   stay where they are: a deteriorated patient does not recover by itself.

2. **Vital signs**: each sign is an OU process around a target = the patient's own baseline +
   the drivers' effects (`_targets`), with the correlations a clinician expects:

       temperature = base + 2.7 infection
       fever       = temperature above max(37, base temperature)  (the hidden state, in °C)
       hypoxia     = SpO2 below 95 (the hidden state, in %)
       pulse       = base + 10 fever + 6 infection + 8 lung + 30 shock + 1.5 hypoxia
                     then pulled towards 36/min by brady: pulse (1 - brady) + 36 brady
       resp_rate   = base + 6 infection + 10 lung + 4 shock + 0.5 hypoxia
       spo2        = base - 17 lung - 2 infection - 2 shock (+ 4 on oxygen), at most 100
       systolic    = base - 55 shock - 15 brady + 85 hypertension
       diastolic   = base - 30 shock - 8 brady + 45 hypertension

   Fever raises the pulse by about 10/min per °C (Liebermeister's rule); hypoxaemia drives
   breathing and heart rate; shock lowers the pressure and the baroreflex raises the pulse.
   The couplings read the *hidden* temperature and SpO2, so the pulse follows the fever as it
   actually builds, not the scenario's plan. Each reading adds measurement noise on top.

   Two signs came later (issue 17) and draw from random streams of their own, so that they
   change no value of the others (a seeded v1 patient sends the very bytes it sent before):

       map   = diastolic + k (systolic - diastolic), k the patient's own in 0.36-0.42
               (an oscillometric cuff measures the mean, a little above the (S + 2D) / 3 rule)
       etco2 = base - 3 infection + 25 lung - 12 shock - 2 brady  (ventilated patients only)

   End-tidal CO2 rises as the lungs fail to clear CO2 (respiratory failure: 60 mmHg and more)
   and falls with a low cardiac output (shock; an arrest brings it near 10 mmHg).

3. **The ward's reactions and the monitor**: a nurse puts the patient on oxygen once the
   displayed SpO2 has stayed below 92% for three minutes (`on_oxygen`, +4% SpO2, never weaned
   within a scenario); consciousness (ACVPU) degrades in late severe states (lung failure ->
   "C" then "V", shock -> "C", cardiac arrest -> "U"); optional sensor artefacts (a probe off
   the finger, a motion spike) are marked as such and leave the hidden state alone.

4. **What the monitor sends** (`schema_version` 2, as a real monitor): pulse, respiratory
   rate and SpO2 (and etCO2 when ventilated) every reading; blood pressure with its MAP only
   when the cuff cycles (`nibp_every` simulated seconds, the first reading included);
   temperature every `temperature_every`; a probe off the finger sends no SpO2. Version 1
   sends every v1 sign in every reading, as before (MAP computed from the pressures, no
   etCO2); the physiology is the same either way.

Every OU step uses the exact transition over `dt`, so a reading every second or every five
minutes (a `--speed`-compressed run) gives the same physiology.
"""

import math
import random
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime

from vitals.contract import INT_RANGES, TEMPERATURE_RANGE, Reading
from vitals.signs import map_from_bp

# Patients named on the command line get a uuid derived from the name, so a restarted
# emulator continues the same patient's record.
PATIENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:icu-monitor:patient")

MINUTE = 60.0
HOUR = 3600.0

# How often a version 2 monitor measures the slow signs (simulated seconds).
NIBP_EVERY_S = 15 * MINUTE
TEMPERATURE_EVERY_S = 5 * MINUTE

# Per sign: (baseline low, baseline high, stationary standard deviation, reversion time in s,
# measurement noise sd). Baselines are those of a resting adult, chosen so that a stable
# patient's noise stays well inside the bedside alarm limits (e.g. diastolic at most 78 + a few
# mmHg against a limit of 90) and mostly scores NEWS2 0; temperature moves slowly.
DYNAMICS: dict[str, tuple[float, float, float, float, float]] = {
    "pulse": (62, 85, 3.0, 90, 1.0),
    "resp_rate": (13, 18, 1.0, 120, 0.5),
    "systolic": (112, 136, 4.0, 180, 2.0),
    "diastolic": (64, 78, 2.5, 180, 1.5),
    "spo2": (96, 99, 0.7, 60, 0.4),
    "temperature": (36.3, 37.1, 0.08, 480, 0.03),
}

DRIVERS = ("infection", "lung", "shock", "brady", "hypertension")
# A disease's course changes over minutes, not seconds. Its noise grows with its severity
# (sd = DRIVER_SD x target): a stable patient has no hidden disease at all.
DRIVER_TAU_S = 300.0
DRIVER_SD = 0.05

# Effect of each driver at 1.0 on each sign's target (see the module docstring).
EFFECTS: dict[str, dict[str, float]] = {
    "infection": {"temperature": 2.7, "pulse": 6, "resp_rate": 6, "spo2": -2},
    "lung": {"pulse": 8, "resp_rate": 10, "spo2": -17},
    "shock": {"pulse": 30, "resp_rate": 4, "spo2": -2, "systolic": -55, "diastolic": -30},
    "brady": {"systolic": -15, "diastolic": -8},
    "hypertension": {"systolic": 85, "diastolic": 45},
}
FEVER_PULSE_PER_C = 10.0  # Liebermeister's rule
FEVER_ABOVE_C = 37.0
HYPOXIA_BELOW = 95.0
HYPOXIA_PULSE_PER_PERCENT = 1.5
HYPOXIA_RESP_RATE_PER_PERCENT = 0.5
BRADY_PULSE = 36.0  # the escape rhythm a complete heart block settles at
# An escape rhythm is regular: at brady 1 the pulse varies 60% less than a sinus rhythm (and
# never dips to what the monitor would take for no pulse).
BRADY_VARIABILITY_CUT = 0.6

# The nurse: SpO2 displayed below 92% for 3 minutes -> oxygen, which adds 4% to the target.
OXYGEN_BELOW = 92
OXYGEN_AFTER_S = 180.0
OXYGEN_SPO2 = 4.0

# ACVPU from the drivers, not from the noisy signs: the brain follows the disease. A level is
# reached when any of its drivers is at its threshold, and left only once all are below it by
# CONSCIOUSNESS_HYSTERESIS, so a driver wavering at a threshold does not make the patient flap.
CONSCIOUSNESS_RULES: tuple[tuple[str, dict[str, float]], ...] = (
    ("C", {"lung": 0.8, "shock": 0.7}),
    ("V", {"lung": 0.95}),
)
CONSCIOUSNESS_HYSTERESIS = 0.1

# Cardiac arrest: no pulse, no breathing, a cuff pressure near the contract's floor (systolic
# 30), keeping a pulse pressure, all at once; the saturation falls over tens of seconds as the
# blood left in the finger desaturates.
# sign -> (value, reversion time in s); a time of 0 sets the value exactly, without noise.
ARREST: dict[str, tuple[float, float]] = {
    "pulse": (0.0, 0.0),
    "resp_rate": (0.0, 0.0),
    "systolic": (40.0, 0.0),
    "diastolic": (20.0, 0.0),
    "spo2": (40.0, 20.0),
}

# MAP: diastolic + k x pulse pressure, k the patient's own; measurement noise sd in mmHg.
MAP_FRACTION = (0.36, 0.42)
MAP_NOISE = 1.5
# End-tidal CO2 (mmHg): baseline low/high, sd, reversion time in s, measurement noise sd; the
# drivers' effects; and its value in a cardiac arrest (reached over `ETCO2_ARREST[1]` s).
ETCO2_DYNAMICS = (36.0, 41.0, 1.0, 120.0, 0.7)
ETCO2_EFFECTS = {"infection": -3.0, "lung": 25.0, "shock": -12.0, "brady": -2.0}
ETCO2_ARREST = (10.0, 30.0)

# Sensor artefacts, when enabled: each kind on this fraction of readings.
ARTEFACT_RATE = 0.003
MOTION_PULSE = (30.0, 60.0)


def patient_uuid_for_name(name: str) -> uuid.UUID:
    """The stable uuid of a patient emulated under `name`."""
    return uuid.uuid5(PATIENT_NAMESPACE, name)


def smoothstep(x: float) -> float:
    """0 below 0, 1 above 1, and an S-curve between with zero slope at both ends: a course
    that starts insidiously and levels off, without the kinks of a linear ramp."""
    x = min(1.0, max(0.0, x))
    return x * x * (3 - 2 * x)


@dataclass(frozen=True)
class Ramp:
    """A driver's target: 0 until `start_s`, rising smoothly to `level` at `end_s`, then kept."""

    start_s: float
    end_s: float
    level: float

    def at(self, t: float, pace: float = 1.0) -> float:
        start, end = self.start_s * pace, self.end_s * pace
        return self.level * smoothstep((t - start) / (end - start))


@dataclass(frozen=True)
class Scenario:
    """A story: the target curve of each driver (the others stay at 0), and maybe an arrest."""

    name: str
    description: str
    # The time over which the story develops; every ramp ends by then.
    duration_s: float
    ramps: dict[str, Ramp] = field(default_factory=dict)
    # Sudden cardiac arrest at a seed-determined time in this window (s), if any.
    arrest_between_s: tuple[float, float] | None = None

    def driver_targets(self, t: float, pace: float = 1.0) -> dict[str, float]:
        return {d: self.ramps[d].at(t, pace) if d in self.ramps else 0.0 for d in DRIVERS}


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("stable", "no deterioration: physiological noise around the baseline", 0.0),
        Scenario(
            "sepsis",
            "over 6 h: fever and tachycardia, then tachypnoea, low pressure and SpO2",
            6 * HOUR,
            {
                "infection": Ramp(0.0, 3 * HOUR, 1.0),
                "shock": Ramp(1.5 * HOUR, 5.5 * HOUR, 0.8),
                "lung": Ramp(2 * HOUR, 5.5 * HOUR, 0.4),
            },
        ),
        Scenario(
            "respiratory_failure",
            "over 4 h: SpO2 falls despite oxygen, fast breathing and pulse, confusion",
            4 * HOUR,
            {
                "lung": Ramp(15 * MINUTE, 3.5 * HOUR, 1.0),
                "infection": Ramp(0.0, 2 * HOUR, 0.25),
            },
        ),
        Scenario(
            "bradycardia",
            "over 1 h: heart block, pulse down to 35-40/min, mild hypotension",
            1 * HOUR,
            {"brady": Ramp(5 * MINUTE, 40 * MINUTE, 1.0)},
        ),
        Scenario(
            "hypertensive_crisis",
            "over 2 h: systolic above 180-220, diastolic above 110-120 mmHg",
            2 * HOUR,
            {"hypertension": Ramp(5 * MINUTE, 100 * MINUTE, 1.0)},
        ),
        Scenario(
            "cardiac_arrest",
            "a sudden arrest 10-40 min in: no pulse, no breathing, unresponsive",
            40 * MINUTE,
            arrest_between_s=(10 * MINUTE, 40 * MINUTE),
        ),
    )
}
# `random` is a choice, not a scenario: each patient draws one, most of them stable.
RANDOM = "random"
RANDOM_WEIGHTS: dict[str, float] = {
    "stable": 0.60,
    "sepsis": 0.12,
    "respiratory_failure": 0.10,
    "hypertensive_crisis": 0.08,
    "bradycardia": 0.06,
    "cardiac_arrest": 0.04,
}
SCENARIO_CHOICES = (*SCENARIOS, RANDOM)


def scenario_resolve(name: str, rng: random.Random) -> str:
    """The scenario a patient gets for the choice `name`: itself, or a weighted draw for
    `random`. Raises ValueError for an unknown name."""
    if name == RANDOM:
        return rng.choices(list(RANDOM_WEIGHTS), weights=list(RANDOM_WEIGHTS.values()))[0]
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; one of: {', '.join(SCENARIO_CHOICES)}")
    return name


def _ou_step(
    state: float, target: float, sd: float, tau: float, dt: float, rng: random.Random
) -> float:
    """The exact Ornstein-Uhlenbeck transition over dt: stable whatever the interval, with a
    stationary spread of `sd` around `target`."""
    decay = math.exp(-dt / tau)
    return target + (state - target) * decay + sd * math.sqrt(1 - decay * decay) * rng.gauss(0, 1)


@dataclass
class PatientEmulator:
    """One emulated patient. Call `reading(measured_at, dt)` once per interval."""

    patient_uuid: uuid.UUID
    name: str
    rng: random.Random
    scenario: str = "stable"
    artefacts: bool = False
    # Artefacts draw from their own stream, so turning them on changes no physiological value.
    artefact_rng: random.Random = field(default_factory=random.Random)
    # MAP and etCO2 too: added later, they change no value of the other signs.
    map_rng: random.Random = field(default_factory=random.Random)
    etco2_rng: random.Random = field(default_factory=random.Random)
    # Ventilated: etCO2 measured (version 2 only).
    ventilated: bool = False
    # What the monitor sends: 1 every v1 sign every reading; 2 the signs measured (below).
    schema_version: int = 1
    nibp_every: float = NIBP_EVERY_S
    temperature_every: float = TEMPERATURE_EVERY_S
    elapsed: float = field(init=False, default=0.0)  # simulated seconds since the start
    baseline: dict[str, float] = field(init=False)
    state: dict[str, float] = field(init=False)
    drivers: dict[str, float] = field(init=False)
    # Individual pace of the disease: its ramps run 0.85-1x as long as the scenario says.
    pace: float = field(init=False)
    arrest_at: float | None = field(init=False, default=None)
    arrested: bool = field(init=False, default=False)
    on_oxygen: bool = field(init=False, default=False)
    low_spo2_for: float = field(init=False, default=0.0)
    consciousness: str = field(init=False, default="A")
    map_fraction: float = field(init=False)
    etco2_baseline: float = field(init=False)
    etco2: float = field(init=False)
    # Simulated time of the last blood pressure and temperature sent (None: never).
    nibp_at: float | None = field(init=False, default=None)
    temperature_at: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; one of: {', '.join(SCENARIOS)}")
        self.baseline = {
            sign: self.rng.uniform(low, high) for sign, (low, high, *_) in DYNAMICS.items()
        }
        self.state = dict(self.baseline)
        self.drivers = dict.fromkeys(DRIVERS, 0.0)
        self.pace = self.rng.uniform(0.85, 1.0)
        window = SCENARIOS[self.scenario].arrest_between_s
        if window is not None:
            self.arrest_at = self.rng.uniform(*window)
        self.map_fraction = self.map_rng.uniform(*MAP_FRACTION)
        self.etco2_baseline = self.etco2 = self.etco2_rng.uniform(*ETCO2_DYNAMICS[:2])

    @classmethod
    def create(
        cls,
        *,
        name: str,
        patient_uuid: uuid.UUID,
        seed: int | None,
        scenario: str = "stable",
        artefacts: bool = False,
        ventilated: bool = False,
        schema_version: int = 1,
        nibp_every: float = NIBP_EVERY_S,
        temperature_every: float = TEMPERATURE_EVERY_S,
    ) -> "PatientEmulator":
        def stream(purpose: str) -> random.Random:
            # A string seed is hashed with SHA-512 by `random`: stable across runs and machines.
            return random.Random(f"{seed}:{patient_uuid}{purpose}" if seed is not None else None)

        return cls(
            patient_uuid=patient_uuid,
            name=name,
            rng=stream(""),
            # Its own stream too: `random` resolving to sepsis gives the very patient that
            # `sepsis` gives.
            scenario=scenario_resolve(scenario, stream(":scenario")),
            artefacts=artefacts,
            artefact_rng=stream(":artefacts"),
            map_rng=stream(":map"),
            etco2_rng=stream(":etco2"),
            ventilated=ventilated,
            schema_version=schema_version,
            nibp_every=nibp_every,
            temperature_every=temperature_every,
        )

    def reading(self, measured_at: datetime, dt: float) -> Reading:
        """Advance the hidden state by `dt` simulated seconds and read the monitor at
        `measured_at` (wall-clock time, unrelated to the simulated time)."""
        if dt < 0:
            raise ValueError(f"dt must be 0 or more, got {dt}")
        self.elapsed += dt
        step = max(dt, 1e-3)
        if self.arrest_at is not None and self.elapsed >= self.arrest_at:
            self.arrested = True
        self._advance_drivers(step)

        observed = {}
        for sign, target in self._targets().items():
            _, _, sd, tau, noise = DYNAMICS[sign]
            if self.arrested and sign in ARREST:
                target, tau = ARREST[sign]
                if tau == 0:
                    self.state[sign] = observed[sign] = target
                    continue
            if sign == "pulse":
                # An escape rhythm is regular: far less variability than a sinus rhythm.
                sd *= 1 - BRADY_VARIABILITY_CUT * self.drivers["brady"]
            self.state[sign] = _ou_step(self.state[sign], target, sd, tau, step, self.rng)
            observed[sign] = self.state[sign] + self.rng.gauss(0, noise)

        observed["etco2"] = self._advance_etco2(step)

        self._update_consciousness()
        reading = self._to_reading(observed, measured_at)
        self._nurse(reading.spo2, dt)
        if self.artefacts:
            reading = self._with_artefact(reading)
        return self._as_sent(reading)

    def _advance_etco2(self, dt: float) -> float:
        """The hidden end-tidal CO2 one step on, and what the capnograph reads."""
        _, _, sd, tau, noise = ETCO2_DYNAMICS
        target = self.etco2_baseline + sum(
            effect * self.drivers[driver] for driver, effect in ETCO2_EFFECTS.items()
        )
        if self.arrested:
            target, tau = ETCO2_ARREST
        self.etco2 = _ou_step(self.etco2, target, sd, tau, dt, self.etco2_rng)
        return self.etco2 + self.etco2_rng.gauss(0, noise)

    def _due(self, last: float | None, every: float) -> bool:
        # A millisecond's slack: the elapsed time is a sum of floats.
        return last is None or self.elapsed - last >= every - 1e-3

    def _as_sent(self, reading: Reading) -> Reading:
        """What the monitor sends of the full reading (see the module docstring, 4.)."""
        if self.schema_version == 1:
            return replace(
                reading, map=map_from_bp(reading.systolic, reading.diastolic), etco2=None
            )
        changes: dict = {"schema_version": 2}
        if not self.ventilated:
            changes["etco2"] = None
        if self._due(self.nibp_at, self.nibp_every):
            self.nibp_at = self.elapsed
        else:
            changes |= {"systolic": None, "diastolic": None, "map": None}
        if self._due(self.temperature_at, self.temperature_every):
            self.temperature_at = self.elapsed
        else:
            changes["temperature"] = None
        if reading.artefact == "spo2_probe_off":
            changes["spo2"] = None
        return replace(reading, **changes)

    def _advance_drivers(self, dt: float) -> None:
        targets = SCENARIOS[self.scenario].driver_targets(self.elapsed, self.pace)
        for driver, target in targets.items():
            if target == 0 and self.drivers[driver] == 0:
                continue  # no disease, no noise: keeps a stable patient's random stream short
            value = _ou_step(
                self.drivers[driver], target, DRIVER_SD * target, DRIVER_TAU_S, dt, self.rng
            )
            self.drivers[driver] = min(1.0, max(0.0, value))

    def _targets(self) -> dict[str, float]:
        """Each sign's target: baseline + the drivers' effects + the couplings between signs,
        which read the current hidden temperature and saturation."""
        targets = dict(self.baseline)
        for driver, effects in EFFECTS.items():
            for sign, effect in effects.items():
                targets[sign] += effect * self.drivers[driver]
        fever = max(
            0.0, self.state["temperature"] - max(FEVER_ABOVE_C, self.baseline["temperature"])
        )
        hypoxia = max(0.0, HYPOXIA_BELOW - self.state["spo2"])
        targets["pulse"] += FEVER_PULSE_PER_C * fever + HYPOXIA_PULSE_PER_PERCENT * hypoxia
        targets["resp_rate"] += HYPOXIA_RESP_RATE_PER_PERCENT * hypoxia
        brady = self.drivers["brady"]
        targets["pulse"] = targets["pulse"] * (1 - brady) + BRADY_PULSE * brady
        if self.on_oxygen:
            targets["spo2"] += OXYGEN_SPO2
        targets["spo2"] = min(100.0, targets["spo2"])
        return targets

    def _update_consciousness(self) -> None:
        if self.arrested:
            self.consciousness = "U"
            return

        def level(margin: float) -> int:
            reached = 0
            for i, (_, thresholds) in enumerate(CONSCIOUSNESS_RULES, start=1):
                if any(self.drivers[d] >= t - margin for d, t in thresholds.items()):
                    reached = i
            return reached

        letters = ("A", *(letter for letter, _ in CONSCIOUSNESS_RULES))
        current = letters.index(self.consciousness)
        worse = level(0.0)
        if worse >= current:
            self.consciousness = letters[worse]
        else:
            self.consciousness = letters[min(current, level(CONSCIOUSNESS_HYSTERESIS))]

    def _nurse(self, spo2: int, dt: float) -> None:
        """Oxygen once the displayed saturation has stayed below 92% for a few minutes (the
        reading is then already taken: it was measured on air)."""
        self.low_spo2_for = self.low_spo2_for + dt if spo2 < OXYGEN_BELOW else 0.0
        if self.low_spo2_for >= OXYGEN_AFTER_S:
            self.on_oxygen = True

    def _with_artefact(self, reading: Reading) -> Reading:
        draw = self.artefact_rng.random()
        if draw < ARTEFACT_RATE:
            return replace(reading, spo2=0, artefact="spo2_probe_off")  # v2: no SpO2 sent
        if draw < 2 * ARTEFACT_RATE:
            spike = self.artefact_rng.uniform(*MOTION_PULSE)
            pulse = min(INT_RANGES["pulse"][1], round(reading.pulse + spike))
            return replace(reading, pulse=pulse, artefact="motion")
        return reading

    def _to_reading(self, observed: dict[str, float], measured_at: datetime) -> Reading:
        def clamp(sign: str) -> int:
            low, high = INT_RANGES[sign]
            return int(min(high, max(low, round(observed[sign]))))

        systolic = clamp("systolic")
        # A cuff never reports a diastolic at or above the systolic: keep a pulse pressure.
        diastolic = min(clamp("diastolic"), systolic - 15)
        low, high = TEMPERATURE_RANGE
        # The cuff's mean: inside the pulse pressure, close to (S + 2D) / 3 but its own.
        mean = diastolic + self.map_fraction * (systolic - diastolic)
        mean += self.map_rng.gauss(0, MAP_NOISE)
        map_ = int(min(systolic - 1, max(diastolic + 1, round(mean))))
        return Reading(
            patient_uuid=self.patient_uuid,
            patient_name=self.name,
            measured_at=measured_at,
            pulse=clamp("pulse"),
            resp_rate=clamp("resp_rate"),
            systolic=systolic,
            diastolic=diastolic,
            spo2=clamp("spo2"),
            temperature=round(min(high, max(low, observed["temperature"])), 1),
            on_oxygen=self.on_oxygen,
            consciousness=self.consciousness,
            map=map_,
            etco2=clamp("etco2"),
        )
