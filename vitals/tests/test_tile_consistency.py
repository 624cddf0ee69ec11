"""The ward's snapshot (patients.models.PatientTile) never shows a patient otherwise than the
list built live: a stateful property test over every change that alters an entry.

Hypothesis drives random sequences of the operations that change what the ward list shows,
through the services the real system uses: readings stored by the consumer's batch (a
patient's first, duplicates, copies with other values, out of order, values that raise,
re-prioritize and resolve alarms, another name), acknowledgement, the escalation and silence
sweeps, alarms switched off and on, rename and name confirmation, the NEWS2 scale, monitoring
ended, admission, transfer and discharge (by the API's services and by HL7 ADT), an MRN given
(patient_identify: ADT and PCD-01), the admin's save, pruning, and time passing. After every
step the ward list served from the tiles, read by a viewer, is the list built live (the
snapshot off, DRF's own walk: patients/tests/ward.py), byte for byte, in two orderings and per
unit; and every tile of the current key is what a rebuild would write now (a stale tile is a
deteriorating patient hidden). Time moves on a clock of the test's (django.utils.timezone.now),
so that what a tile could freeze ("stale", "unanswered for") would differ from a live build.

Renames may give two patients one name: the orderings end with the uuid, so patients of one
name and score come in one order on both paths (a defect found here, test below).

Deterministic and bounded (derandomized, no example database): a few seconds on SQLite.
"""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from gateway.adt import adt_handle
from gateway.identity import patient_uuid_for
from gateway.tests.test_adt import adt
from patients.models import Patient, PatientTile
from patients.tests.test_api import reading
from patients.tests.ward import ward_fast_and_slow
from testing.clients import token_client
from units.errors import AlreadyAdmitted, BedOccupied, NotAdmitted
from units.models import Admission, Bed, Unit
from units.services import admission_create, admission_discharge, admission_transfer
from vitals import services as vitals_services
from vitals.alarms import ALARM_OFF_KINDS
from vitals.models import OPEN_ALARM_STATES, Alarm, AlarmState
from vitals.patient_selectors import PATIENT_ORDERINGS, patient_list
from vitals.services import (
    alarm_acknowledge,
    alarm_escalation_sweep,
    alarm_limits_update,
    alarm_no_data_sweep,
    alarm_switch_off,
    alarm_switch_on,
    patient_identify,
    patient_monitoring_end,
    patient_name_confirm,
    patient_news2_scale_set,
    patient_rename,
    reading_prune_batch,
)
from vitals.tests.factories import T0
from vitals.tests.fakes import worker_create
from vitals.tests.test_audit import change_form_data
from vitals.tile_services import patient_tile_pieces, tile_key
from ward.events import ChangeWatcher

pytestmark = pytest.mark.django_db

# The patients: two known only by their monitor's uuid, one the HL7 gateway derives from an MRN
# (ADT messages name her too).
NAMES = ("Ann", "Bob", "Cy")
UUIDS = (
    uuid.UUID("00000000-0000-4000-8000-00000000000a"),
    uuid.UUID("00000000-0000-4000-8000-00000000000b"),
    patient_uuid_for(authority="HOSP", identifier="MRN1"),
)
# A reading's values, from the normal to what raises (and then resolves) each kind of alarm.
PROFILES = (
    {},
    {"spo2": 85},
    {"spo2": 91},
    {"pulse": 135},
    {"pulse": 38},
    {"resp_rate": 27, "temperature": 39.4},
    {"systolic": 85, "diastolic": 45},
    {"pulse": None, "spo2": None},
    {"consciousness": "C", "on_oxygen": True},
    {"artefact": "motion"},
)
START = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)  # T0 + 30 min: the readings' minutes before


class WardTiles(RuleBasedStateMachine):
    """One example: a ward in a savepoint rolled back at its end. Set by the test: `viewer`
    (an APIClient), `nurse` (a clinician), `admin_client`, `monkeypatch`."""

    viewer = nurse = admin_client = monkeypatch = None

    def __init__(self) -> None:
        super().__init__()
        self.atomic = transaction.atomic()
        self.atomic.__enter__()
        self.now = START
        self.monkeypatch.setattr("django.utils.timezone.now", lambda: self.now)
        self.worker, self.consumer, _ = worker_create()
        self.units = {
            code: Unit.objects.create(code=code, name=code.upper()) for code in ("icu-a", "hdu")
        }
        self.beds = [
            Bed.objects.create(unit=self.units["icu-a"], label="A1", position=1),
            Bed.objects.create(unit=self.units["icu-a"], label="A2", position=2),
            Bed.objects.create(unit=self.units["hdu"], label="H1", position=1),
        ]
        self.messages = 0
        # The ward page's stream (ward/events.py), stepped here: every patient whose entry
        # changed must be in what it pushes, or the page shows the old entry until its
        # fallback poll (WARD_PUSH_POLL_SECONDS) while it says it is live.
        self.watcher = ChangeWatcher(max_clients=1, clock=lambda: self.now.timestamp())
        self.watcher.subscribe(patient=None)
        self.watcher.step()  # the marks
        self.shown = self.ward_shown()
        self.not_pushed = False

    def teardown(self) -> None:
        transaction.set_rollback(True)
        self.atomic.__exit__(None, None, None)

    def patient(self, index: int) -> Patient | None:
        return Patient.objects.filter(uuid=UUIDS[index]).first()

    def patients(self) -> bool:
        return Patient.objects.exists()

    # --- readings -----------------------------------------------------------------------

    @rule(
        readings=st.lists(
            st.tuples(
                st.integers(0, 2),  # patient
                st.integers(0, 12),  # minute: repeats are duplicates or conflicts
                st.integers(0, len(PROFILES) - 1),
                st.booleans(),  # another name (a monitor's impostor, or a typo)
            ),
            min_size=1,
            max_size=6,
        ),
        received_after=st.integers(0, 20),
    )
    def batch(self, readings, received_after) -> None:
        self.now += timedelta(seconds=received_after)
        self.consumer.add_readings(
            [
                reading(UUIDS[p], f"{NAMES[p]} Other" if other else NAMES[p], minute, **PROFILES[v])
                for p, minute, v, other in readings
            ]
        )
        self.worker.process_batch()

    # --- clinicians ---------------------------------------------------------------------

    @precondition(lambda self: Alarm.objects.filter(state=AlarmState.ACTIVE).exists())
    @rule(pick=st.integers(0, 20))
    def acknowledge(self, pick) -> None:
        alarms = list(Alarm.objects.filter(state=AlarmState.ACTIVE).order_by("pk"))
        alarm_acknowledge(alarm=alarms[pick % len(alarms)], user=self.nurse)

    @precondition(patients)
    @rule(index=st.integers(0, 2), kind=st.sampled_from(ALARM_OFF_KINDS), on=st.booleans())
    def alarm_off_or_on(self, index, kind, on) -> None:
        if (patient := self.patient(index)) is None:
            return
        if on:
            alarm_switch_on(patient=patient, kind=kind, user=self.nurse)
        else:
            alarm_switch_off(patient=patient, kind=kind, reason="probe moved", user=self.nurse)

    @precondition(patients)
    @rule(index=st.integers(0, 2), pulse_high=st.sampled_from([100, 120, 150]))
    def limits(self, index, pulse_high) -> None:
        if (patient := self.patient(index)) is not None:
            alarm_limits_update(patient=patient, user=self.nurse, pulse_high=pulse_high)

    @precondition(patients)
    @rule(index=st.integers(0, 2), confirm=st.booleans(), name=st.sampled_from(NAMES))
    def name(self, index, confirm, name) -> None:
        if (patient := self.patient(index)) is None:
            return
        if confirm:
            patient_name_confirm(patient=patient, user=self.nurse)
        else:
            patient_rename(patient=patient, user=self.nurse, name=name)

    @precondition(patients)
    @rule(index=st.integers(0, 2), hypercapnic=st.booleans())
    def news2_scale(self, index, hypercapnic) -> None:
        if (patient := self.patient(index)) is not None:
            patient_news2_scale_set(
                patient=patient, user=self.nurse, hypercapnic_respiratory_failure=hypercapnic
            )

    @precondition(patients)
    @rule(index=st.integers(0, 2))
    def monitoring_end(self, index) -> None:
        if (patient := self.patient(index)) is not None:
            patient_monitoring_end(patient=patient, user=self.nurse)

    @precondition(patients)
    @rule(index=st.integers(0, 2), bed=st.integers(0, 2), move=st.sampled_from("atd"))
    def bed(self, index, bed, move) -> None:
        if (patient := self.patient(index)) is None:
            return
        try:
            if move == "a":
                admission_create(patient=patient, bed=self.beds[bed], by=self.nurse)
            elif move == "t":
                admission_transfer(patient=patient, bed=self.beds[bed], by=self.nurse)
            else:
                admission_discharge(patient=patient, by=self.nurse)
        except (AlreadyAdmitted, BedOccupied, NotAdmitted):
            pass

    @precondition(patients)
    @rule(index=st.integers(0, 2), scale=st.booleans(), name=st.sampled_from(NAMES))
    def admin_save(self, index, scale, name) -> None:
        if (patient := self.patient(index)) is None:
            return
        url = f"/admin/patients/patient/{patient.pk}/change/"
        data = change_form_data(self.admin_client.get(url))
        data["name"] = name
        if scale:
            data["hypercapnic_respiratory_failure"] = "on"
        else:
            data.pop("hypercapnic_respiratory_failure", None)
        assert self.admin_client.post(url, data).status_code == 302

    # --- the hospital's systems ---------------------------------------------------------

    @rule(event=st.sampled_from(["A01", "A02", "A03", "A08"]), bed=st.sampled_from(["A1", "A2"]))
    def hl7_adt(self, event, bed) -> None:
        self.messages += 1
        name = "Smith^Cy" if event != "A08" else "Jones^Cy"
        adt_handle(adt(event, f"MSG{self.messages}", name=name, pv1_3=f"icu-a^^{bed}"))

    @precondition(patients)
    @rule(index=st.integers(0, 1))
    def mrn_given(self, index) -> None:
        """What a PCD-01 (or ADT) message naming a patient known by their monitor does."""
        patient_identify(
            patient_uuid=UUIDS[index], name=NAMES[index], mrn=f"M{index}", mrn_authority="LAB"
        )

    # --- time -----------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([1, 14, 16, 65, 130, 600]))
    def time_passes(self, seconds) -> None:
        """No write at all: whatever a tile shows must not freeze what the live list says."""
        self.now += timedelta(seconds=seconds)

    @rule()
    def sweeps(self) -> None:
        """The consumer's sweeps at the clock's time (every 2 s in production)."""
        alarm_no_data_sweep(silent_for=timedelta(minutes=1), now=self.now)
        alarm_escalation_sweep(unanswered_for=timedelta(minutes=2), now=self.now)

    @rule(minutes=st.integers(1, 13), batch_size=st.sampled_from([1, 3, 100]))
    def prune(self, minutes, batch_size) -> None:
        reading_prune_batch(older_than=T0 + timedelta(minutes=minutes), batch_size=batch_size)
        # Not pushed: a deletion leaves no row for the watcher to read. Only readings past the
        # retention go (days old: the tile says "stale" already), and the poll shows the rest.
        self.not_pushed = True

    # --- what the ward shows ------------------------------------------------------------

    def ward_shown(self) -> dict[str, tuple]:
        """Each patient's entry of the list (without its links) and the unit of their bed."""
        beds = dict(
            Admission.objects.filter(discharged_at__isnull=True).values_list(
                "patient__uuid", "bed__unit__code"
            )
        )
        results = self.viewer.get("/api/patients/", {"page_size": 100}).json()["results"]
        return {
            p["uuid"]: (
                {k: v for k, v in p.items() if not k.endswith("url")},
                beds.get(uuid.UUID(p["uuid"])),
            )
            for p in results
        }

    @invariant()
    def every_change_is_pushed(self) -> None:
        pushed = self.watcher.step()
        shown, self.shown = self.shown, self.ward_shown()
        changed = {u for u in shown.keys() | self.shown.keys() if shown.get(u) != self.shown.get(u)}
        if self.not_pushed:
            self.not_pushed = False
            return
        missed = {u: (shown.get(u), self.shown.get(u)) for u in changed - pushed}
        assert not missed, f"changed, not pushed (before, after): {missed}"

    @invariant()
    def tiles_are_the_live_list(self) -> None:
        for params in ({}, {"ordering": "-news2"}, {"unit": "icu-a"}, {"unit": "hdu"}):
            fast, slow = ward_fast_and_slow(self.viewer, self.monkeypatch, params)
            assert fast == slow, params
        key = tile_key()
        tiles = {t.patient_id: t for t in PatientTile.objects.filter(key=key)}
        for patient in patient_list().filter(pk__in=list(tiles)):
            tile = tiles[patient.pk]
            assert (tile.head, tile.middle, tile.tail) == patient_tile_pieces(patient), (
                f"stale tile: {patient.name}"
            )

    @invariant()
    def open_alarms_are_on_the_list(self) -> None:
        """The list from the tiles names every open alarm the database holds, as it is."""
        listed = {
            (a["id"], a["state"], a["priority"])
            for p in self.viewer.get("/api/patients/", {"page_size": 100}).json()["results"]
            for a in p["active_alarms"]
        }
        held = set(
            Alarm.objects.filter(state__in=OPEN_ALARM_STATES).values_list("pk", "state", "priority")
        )
        assert listed == held


def test_the_ward_list_from_tiles_is_the_live_list_after_any_sequence_of_changes(
    viewer, user, admin_client, monkeypatch
) -> None:
    WardTiles.viewer = token_client(viewer)
    WardTiles.nurse = user
    WardTiles.admin_client = admin_client
    WardTiles.monkeypatch = monkeypatch
    run_state_machine_as_test(
        WardTiles,
        settings=settings(
            max_examples=12,
            stateful_step_count=25,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
            # No shrinking: each step reads the list six times, and a shrink runs hundreds of
            # sequences; the failing sequence is printed as generated.
            phases=[Phase.explicit, Phase.generate],
        ),
    )


@pytest.mark.parametrize("ordering", ["news2", "-news2"])
def test_patients_of_one_name_and_score_come_in_one_order_on_every_page(
    viewer_client, ordering
) -> None:
    """Three patients called "Ann Smith", none with a reading yet (no score): page by page, one
    a page, each comes once, in the order of their uuids (as `?ordering=name` breaks ties).
    Which order the database gives ties is luck (PostgreSQL gave the uuids' for `news2` here):
    the ordering must end with a unique key for it to be the same on every read."""
    assert PATIENT_ORDERINGS[ordering][-1].expression.name in ("uuid", "pk", "id")
    uuids = [uuid.UUID(f"00000000-0000-4000-8000-00000000000{n}") for n in (3, 2, 1)]
    for patient_uuid in uuids:  # stored in the other order than the uuids'
        Patient.objects.create(uuid=patient_uuid, name="Ann Smith")
    pages = [
        viewer_client.get(
            "/api/patients/", {"ordering": ordering, "page_size": 1, "page": page}
        ).json()["results"]
        for page in (1, 2, 3)
    ]
    assert [p["uuid"] for [p] in pages] == sorted(str(u) for u in uuids)


def test_a_reading_stored_while_a_prune_runs_stays_the_patients_latest(
    viewer_client, monkeypatch
) -> None:
    """Ann's only reading is old enough to prune. A prune reads that it is her latest; before it
    locks her row, the consumer commits her new reading (as the batch's transaction can, on
    PostgreSQL, between the prune's two statements): the new one must stay her latest, on the
    ward and for the silence sweep."""
    worker, consumer, _ = worker_create()
    ann = uuid.uuid4()
    consumer.add_readings([reading(ann, "Ann", 0)])
    worker.process_batch()
    real_lock = vitals_services.patients_lock

    def batch_commits_first(*, patient_ids) -> None:
        monkeypatch.setattr(vitals_services, "patients_lock", real_lock)  # the batch's own
        consumer.add_readings([reading(ann, "Ann", 5, pulse=131)])
        assert worker.process_batch() == 1
        real_lock(patient_ids=patient_ids)

    monkeypatch.setattr(vitals_services, "patients_lock", batch_commits_first)
    assert reading_prune_batch(older_than=T0 + timedelta(minutes=1), batch_size=100) == 1

    patient = Patient.objects.get(uuid=ann)
    assert patient.latest_metric is not None
    assert patient.latest_metric.measured_at == T0 + timedelta(minutes=5)
    [listed] = viewer_client.get("/api/patients/").json()["results"]
    assert listed["latest_metric"]["pulse"] == 131
    later = patient.latest_metric.received_at + timedelta(minutes=5)
    assert len(alarm_no_data_sweep(silent_for=timedelta(minutes=1), now=later)) == 1
