"""A bedside monitor emulator: plausible vital signs that drift, and sometimes get bad.

Each vital sign follows an Ornstein-Uhlenbeck process (a random walk pulled back towards a
target) around the patient's own baseline, so values wander smoothly instead of jumping like
`randint`. Now and then an *episode* starts (tachycardia, desaturation, fever, hypotension...):
it ramps the targets towards abnormal values for a few minutes and back, moving the related
signs together (a fever raises pulse and breathing rate too). All randomness comes from one
`random.Random`, so a seed gives the same patient every time.
"""

import math
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from vitals.contract import INT_RANGES, TEMPERATURE_RANGE, Reading

# Patients named on the command line get a uuid derived from the name, so a restarted
# emulator continues the same patient's record.
PATIENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:icu-monitor:patient")

# Per sign: (baseline low, baseline high, stationary standard deviation, reversion time in s,
# measurement noise sd). Baselines are those of a resting adult; temperature moves slowly.
DYNAMICS: dict[str, tuple[float, float, float, float, float]] = {
    "pulse": (62, 92, 3.0, 90, 1.0),
    "resp_rate": (12, 18, 1.2, 120, 0.5),
    "systolic": (108, 138, 4.0, 180, 2.0),
    "diastolic": (64, 84, 3.0, 180, 1.5),
    "spo2": (95, 99, 0.7, 60, 0.4),
    "temperature": (36.4, 37.2, 0.08, 480, 0.03),
}

# Episode kind -> (offsets from baseline at full intensity, shortest and longest duration in s).
# A fever builds over tens of minutes (temperature follows its target slowly); the others
# come on within minutes.
EPISODES: dict[str, tuple[dict[str, float], tuple[float, float]]] = {
    "tachycardia": ({"pulse": 58, "resp_rate": 4}, (60.0, 300.0)),
    "bradycardia": ({"pulse": -30, "systolic": -12}, (60.0, 300.0)),
    "desaturation": ({"spo2": -13, "resp_rate": 11, "pulse": 18}, (60.0, 300.0)),
    "fever": ({"temperature": 2.8, "pulse": 24, "resp_rate": 6}, (1200.0, 2400.0)),
    "hypotension": ({"systolic": -42, "diastolic": -24, "pulse": 26}, (60.0, 300.0)),
    "hypertension": ({"systolic": 58, "diastolic": 28}, (60.0, 300.0)),
}
EPISODE_RATE_PER_S = 1 / 1200  # an episode starts every 20 quiet minutes, on average


def patient_uuid_for_name(name: str) -> uuid.UUID:
    """The stable uuid of a patient emulated under `name`."""
    return uuid.uuid5(PATIENT_NAMESPACE, name)


@dataclass
class Episode:
    kind: str
    duration: float
    elapsed: float = 0.0

    def intensity(self) -> float:
        """0 -> 1 -> 0 over the episode: a ramp up, a plateau, a ramp down (thirds)."""
        third = self.duration / 3
        if self.elapsed < third:
            return self.elapsed / third
        if self.elapsed > 2 * third:
            return max(0.0, (self.duration - self.elapsed) / third)
        return 1.0

    @property
    def over(self) -> bool:
        return self.elapsed >= self.duration


@dataclass
class PatientEmulator:
    """One emulated patient. Call `reading(measured_at, dt)` once per interval."""

    patient_uuid: uuid.UUID
    name: str
    rng: random.Random
    baseline: dict[str, float] = field(init=False)
    state: dict[str, float] = field(init=False)
    episode: Episode | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.baseline = {
            sign: self.rng.uniform(low, high) for sign, (low, high, *_) in DYNAMICS.items()
        }
        self.state = dict(self.baseline)

    @classmethod
    def create(cls, *, name: str, patient_uuid: uuid.UUID, seed: int | None) -> "PatientEmulator":
        # A string seed is hashed with SHA-512 by `random`: stable across runs and machines.
        rng = random.Random(f"{seed}:{patient_uuid}" if seed is not None else None)
        return cls(patient_uuid=patient_uuid, name=name, rng=rng)

    def _advance_episode(self, dt: float) -> None:
        if self.episode is not None:
            self.episode.elapsed += dt
            if self.episode.over:
                self.episode = None
        elif self.rng.random() < 1 - math.exp(-EPISODE_RATE_PER_S * dt):
            kind = self.rng.choice(sorted(EPISODES))
            self.episode = Episode(kind=kind, duration=self.rng.uniform(*EPISODES[kind][1]))

    def _targets(self) -> dict[str, float]:
        targets = dict(self.baseline)
        if self.episode is not None:
            intensity = self.episode.intensity()
            for sign, offset in EPISODES[self.episode.kind][0].items():
                targets[sign] += offset * intensity
        return targets

    def reading(self, measured_at: datetime, dt: float) -> Reading:
        """Advance the hidden state by `dt` seconds and read the monitor at `measured_at`."""
        self._advance_episode(dt)
        observed = {}
        for sign, target in self._targets().items():
            _, _, sd, tau, noise = DYNAMICS[sign]
            # Exact OU transition over dt: stable whatever the interval.
            decay = math.exp(-max(dt, 1e-3) / tau)
            self.state[sign] = (
                target
                + (self.state[sign] - target) * decay
                + sd * math.sqrt(1 - decay * decay) * self.rng.gauss(0, 1)
            )
            observed[sign] = self.state[sign] + self.rng.gauss(0, noise)
        return self._to_reading(observed, measured_at)

    def _to_reading(self, observed: dict[str, float], measured_at: datetime) -> Reading:
        def clamp(sign: str) -> int:
            low, high = INT_RANGES[sign]
            return int(min(high, max(low, round(observed[sign]))))

        systolic = clamp("systolic")
        # A cuff never reports a diastolic at or above the systolic: keep a pulse pressure.
        diastolic = min(clamp("diastolic"), systolic - 15)
        low, high = TEMPERATURE_RANGE
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
        )
