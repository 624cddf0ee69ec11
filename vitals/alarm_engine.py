"""The consumer's alarm engine: newly stored readings in, alarm changes (and their outbox
events) out, in the same transaction as the readings.

The detector's memory (consecutive counts, which alarms are open) is kept per patient in the
process, and rebuilt from the database the first time a patient is seen: open alarms from the
alarms table, counts by replaying the patient's last readings. A consumer that restarts, or
takes over a partition in a rebalance, therefore continues where the previous one stopped.
"""

from collections import defaultdict
from collections.abc import Iterable

from patients.models import Patient
from vitals.alarms import Limits, PatientAlarms
from vitals.models import OPEN_ALARM_STATES, Alarm, AlarmEvent, PatientMetric
from vitals.selectors import alarm_limits_for
from vitals.services import alarm_decisions_apply

# Readings replayed to rebuild a patient's counters: the longest delay allowed (10), twice over,
# so that artefact readings in the window (which count neither way) do not cut the replay short.
WARM_UP_READINGS = 20


class AlarmEngine:
    def __init__(self) -> None:
        self.states: dict[int, PatientAlarms] = {}

    def process(self, metrics: Iterable[PatientMetric]) -> list[AlarmEvent]:
        """Judge the new readings (each with `.patient` set) and write the decisions."""
        by_patient: dict[int, list[PatientMetric]] = defaultdict(list)
        patients: dict[int, Patient] = {}
        for metric in metrics:
            by_patient[metric.patient_id].append(metric)
            patients[metric.patient_id] = metric.patient
        if not by_patient:
            return []
        limits = alarm_limits_for(patient_ids=by_patient.keys())
        unknown = [pid for pid in by_patient if pid not in self.states]
        if unknown:
            self._load(unknown, by_patient, limits)

        events: list[AlarmEvent] = []
        for patient_id, patient_metrics in by_patient.items():
            state = self.states[patient_id]
            decisions = []
            for metric in sorted(patient_metrics, key=lambda m: m.measured_at):
                decisions += state.evaluate(metric, metric.news2, limits[patient_id])
            if decisions:
                events += alarm_decisions_apply(patient=patients[patient_id], decisions=decisions)
        return events

    def forget(self, patient_ids: Iterable[int] | None = None) -> None:
        """Drop the memory of some patients (all by default): after a failed transaction,
        whose alarm writes were rolled back, or when their partitions go to another consumer."""
        if patient_ids is None:
            self.states.clear()
        else:
            for patient_id in patient_ids:
                self.states.pop(patient_id, None)

    def _load(
        self,
        patient_ids: list[int],
        by_patient: dict[int, list[PatientMetric]],
        limits: dict[int, Limits],
    ) -> None:
        for patient_id in patient_ids:
            state = PatientAlarms()
            # The newest readings stored before this batch, not merely those older than the
            # batch: a late reading (older than some already stored) must then be ignored, as
            # the running engine ignores it, instead of being judged against an old past.
            batch = {m.measured_at for m in by_patient[patient_id]}
            stored = PatientMetric.objects.filter(patient_id=patient_id).order_by("-measured_at")
            newest = stored[: WARM_UP_READINGS + len(batch)]
            recent = [m for m in newest if m.measured_at not in batch][:WARM_UP_READINGS]
            for metric in reversed(recent):
                state.evaluate(metric, metric.news2, limits[patient_id], warm_up=True)
            # What is open is what the database says, not what the replay concluded (limits
            # may have changed, an admin may have closed an alarm).
            for condition in state.conditions.values():
                condition.open_priority = None
            self.states[patient_id] = state
        open_alarms = Alarm.objects.filter(
            patient_id__in=patient_ids, state__in=OPEN_ALARM_STATES
        ).values_list("patient_id", "kind", "priority")
        for patient_id, kind, priority in open_alarms:
            self.states[patient_id].mark_open(kind, priority)
