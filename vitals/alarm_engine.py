"""The consumer's alarm engine: newly stored readings in, alarm changes (and their outbox
events) out, in the same transaction as the readings.

The detector's memory (consecutive counts, which alarms are open) is kept per patient in the
process, and rebuilt from the database the first time a patient is seen: open alarms from the
alarms table, counts by replaying the patient's last readings. Every batch checks the memory's
open alarms against the table's (one statement) and rebuilds a patient whose differ: an alarm
closed by a clinician or a discharge is raised again while its condition lasts. A consumer
that restarts, or takes over a partition in a rebalance, therefore continues where the previous
one stopped.

A patient's readings are judged in the order they were received, which is the order their
monitor sent them (one key, one partition): a monitor clock that is wrong, or jumps, changes
neither which alarms sound nor when. A late reading (`reading_late`: back-filled after the
live ones resumed, measured long before it was sent) is stored but not judged. Clock offsets
are measured against the Kafka timestamp (`timing`) and beyond ALARM_CLOCK_SKEW_WARN raise the
technical alarm `clock_skew`.
"""

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from core.sql import values_in
from patients.models import Patient
from vitals.alarms import Limits, PatientAlarms
from vitals.models import OPEN_ALARM_STATES, Alarm, AlarmEvent, PatientMetric
from vitals.selectors import alarm_limits_for, patient_metrics_newest
from vitals.services import alarm_decisions_bulk_apply, alarm_no_data_resolve, reading_late

# Readings replayed to rebuild a patient's counters: the longest delay allowed (10), twice over,
# so that artefact readings in the window (which count neither way) do not cut the replay short.
WARM_UP_READINGS = 20


class AlarmEngine:
    def __init__(self, *, clock_skew_warn: float = 30.0) -> None:
        self.states: dict[int, PatientAlarms] = {}
        # The id of the last reading judged, by patient (not late: the patient's latest_metric
        # as this engine left it); None when the warm-up replayed none.
        self.last_judged: dict[int, int | None] = {}
        self.clock_skew_warn = clock_skew_warn

    def process(self, metrics: Iterable[PatientMetric]) -> list[AlarmEvent]:
        """Judge the new readings (each with `.patient` set), in the order given (the order
        they were received), and write the decisions; resolve the `no_data` alarms of the
        patients heard from again."""
        by_patient: dict[int, list[PatientMetric]] = defaultdict(list)
        # The readings judged: not the late ones (reading_late: back-filled, measured long
        # ago), which are neither judged nor the patient's latest.
        judged: dict[int, list[PatientMetric]] = defaultdict(list)
        patients: dict[int, Patient] = {}
        metrics_seen = list(metrics)
        for metric in metrics_seen:
            by_patient[metric.patient_id].append(metric)
            if not getattr(metric, "late", False):
                judged[metric.patient_id].append(metric)
            patients[metric.patient_id] = metric.patient
        if not by_patient:
            return []
        limits = alarm_limits_for(patient_ids=by_patient.keys())
        known = [pid for pid in by_patient if pid in self.states]
        if known:
            self._reconcile(known, by_patient)
        unknown = [pid for pid in by_patient if pid not in self.states]
        if unknown:
            self._load(unknown, by_patient, limits)

        # Heard from again: silence over (the readings of a batch share their received_at).
        # Not by a late reading only.
        events: list[AlarmEvent] = alarm_no_data_resolve(
            patient_ids=list(judged), received_at=min(m.received_at for m in metrics_seen)
        )
        decided = []
        for patient_id, patient_metrics in judged.items():
            state = self.states[patient_id]
            decisions = []
            for metric in patient_metrics:
                at, offset = self.timing(metric)
                decisions += state.evaluate(
                    metric, metric.news2, limits[patient_id], at=at, clock_offset=offset
                )
            self.last_judged[patient_id] = patient_metrics[-1].pk
            if decisions:
                decided.append((patients[patient_id], decisions))
        # The whole batch's decisions in a few statements (not a few per decision).
        events += alarm_decisions_bulk_apply(decisions=decided)
        return events

    def timing(self, metric: PatientMetric) -> tuple[datetime, float | None]:
        """(when the reading was taken, as far as we can tell; the monitor clock's offset).

        The offset is measured_at minus sent_at (the Kafka timestamp: when the gateway sent
        it, by a clock that is not the monitor's), in seconds; None when sent_at is unknown.
        Within the tolerance the monitor's own time stands (it is the more precise); beyond
        it, the time it was sent. Never later than it was received.
        """
        measured_at, sent_at = metric.measured_at, metric.sent_at
        offset = None if sent_at is None else (measured_at - sent_at).total_seconds()
        at = measured_at if offset is None or abs(offset) <= self.clock_skew_warn else sent_at
        return min(at, metric.received_at), offset

    def forget(self, patient_ids: Iterable[int] | None = None) -> None:
        """Drop the memory of some patients (all by default): after a failed transaction,
        whose alarm writes were rolled back, or when their partitions go to another consumer."""
        if patient_ids is None:
            self.states.clear()
            self.last_judged.clear()
        else:
            for patient_id in patient_ids:
                self.states.pop(patient_id, None)
                self.last_judged.pop(patient_id, None)

    def _reconcile(self, patient_ids: list[int], by_patient: dict[int, list]) -> None:
        """Forget the patients this engine no longer knows as they are; forgotten, they are
        loaded again as a restarted consumer would load them:
        - those whose latest reading before this batch (`latest_before`, as reading_bulk_store
          found it) is not the last this engine judged: another consumer judged readings in
          between (a partition moved while its old owner still finished its batch), and the
          delay counts would be stale (no statement);
        - of the others, those whose open alarms are not what the memory says (one
          statement): an alarm closed by someone else than this engine (ALARM OFF switched on
          again at once, a discharge and a new admission, an admin) would otherwise stay open
          in memory, and its condition, still beyond the limit, never be raised again while it
          lasts."""
        for patient_id in patient_ids:
            before = getattr(by_patient[patient_id][0], "latest_before", _UNKNOWN)
            if before is not _UNKNOWN and before != self.last_judged.get(patient_id):
                self.forget([patient_id])
        patient_ids = [pid for pid in patient_ids if pid in self.states]
        if not patient_ids:
            return
        open_now: dict[int, dict[str, str]] = defaultdict(dict)
        for patient_id, kind, priority in Alarm.objects.filter(
            patient_id__in=values_in(patient_ids), state__in=OPEN_ALARM_STATES
        ).values_list("patient_id", "kind", "priority"):
            open_now[patient_id][kind] = priority
        for patient_id in patient_ids:
            if self.states[patient_id].open_alarms() != open_now.get(patient_id, {}):
                self.forget([patient_id])

    def _load(
        self,
        patient_ids: list[int],
        by_patient: dict[int, list[PatientMetric]],
        limits: dict[int, Limits],
    ) -> None:
        # The last readings received before this batch (ids follow arrival), replayed in the
        # order they came, as the running engine judged them: every new patient's at once.
        newest = patient_metrics_newest(
            counts={pid: WARM_UP_READINGS + len(by_patient[pid]) for pid in patient_ids}
        )
        for patient_id in patient_ids:
            state = PatientAlarms(clock_skew_warn=self.clock_skew_warn)
            batch = {m.pk for m in by_patient[patient_id]}
            recent = [m for m in newest[patient_id] if m.pk not in batch][:WARM_UP_READINGS]
            previous = None  # the last reading judged: the late ones are skipped as they were
            self.last_judged[patient_id] = None
            for metric in reversed(recent):
                if reading_late(
                    measured_at=metric.measured_at,
                    sent_at=metric.sent_at,
                    received_at=metric.received_at,
                    previous=previous,
                    tolerance=self.clock_skew_warn,
                ):
                    continue
                previous = (metric.measured_at, metric.sent_at, metric.received_at)
                self.last_judged[patient_id] = metric.pk
                at, offset = self.timing(metric)
                state.evaluate(
                    metric,
                    metric.news2,
                    limits[patient_id],
                    at=at,
                    clock_offset=offset,
                    warm_up=True,
                )
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


_UNKNOWN = object()  # a metric not from reading_bulk_store: no latest_before to check
