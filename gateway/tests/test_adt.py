"""ADT^A01/A02/A03/A08 (gateway/adt.py): the admissions, the patient row, the audit trail and
the Outcome (its ERR segments) of each case an ADT feed brings."""

import hl7
import pytest
from hl7apy.core import Message

from gateway.adt import adt_handle
from gateway.er7 import message_parse
from gateway.identity import patient_uuid_for
from gateway.outcome import Hl7Error
from patients.models import Patient
from patients.tests.factories import PatientFactory
from units.errors import AlreadyAdmitted
from units.models import Admission, Bed, Unit
from units.services import admission_create
from vitals.models import AlarmOff, AuditEvent
from vitals.services import alarm_switch_off
from vitals.tests.factories import AlarmFactory

pytestmark = pytest.mark.django_db

ANN = patient_uuid_for(authority="HOSP", identifier="MRN1")


@pytest.fixture
def unit() -> Unit:
    """Unit "icu-a" with beds "A1" to "A3"."""
    icu = Unit.objects.create(code="icu-a", name="ICU A")
    for position in range(1, 4):
        Bed.objects.create(unit=icu, label=f"A{position}", position=position)
    return icu


def adt(
    event: str,
    control_id: str,
    *,
    pid3: str = "MRN1^^^HOSP^MR",
    name: str = "Smith^Ann",
    pv1_3: str = "icu-a^^A1",
    pv1_6: str = "",
) -> hl7.Message:
    segments = [
        f"MSH|^~\\&|ADT|HOSP|ICU|HOSP|20261203101500+0100||ADT^{event}^ADT_A01|{control_id}|P|2.6",
        f"EVN|{event}|20261203101500+0100",
        f"PID|1||{pid3}||{name}||19500101|F",
        f"PV1|1|I|{pv1_3}|||{pv1_6}",
    ]
    return message_parse("\r".join(segments) + "\r")


def open_beds() -> dict[str, str]:
    """Each admitted patient's name and bed label."""
    return {
        a.patient.name: a.bed.label
        for a in Admission.objects.select_related("patient", "bed").filter(
            discharged_at__isnull=True
        )
    }


def audit() -> list[tuple[str, str]]:
    return list(AuditEvent.objects.order_by("id").values_list("action", "username"))


def test_a01_admits_the_patient_of_pid3_to_the_bed_of_pv1_3(unit) -> None:
    outcome = adt_handle(adt("A01", "MSG1"))

    assert (outcome.code, outcome.errors, outcome.messages) == ("AA", [], [])
    assert outcome.counts == {"admit": 1}
    patient = Patient.objects.get()
    assert (patient.uuid, patient.name, patient.mrn, patient.mrn_authority) == (
        ANN,
        "Ann Smith",
        "MRN1",
        "HOSP",
    )
    admission = Admission.objects.get()
    assert (admission.bed.label, admission.admitted_by, admission.reason) == (
        "A1",
        None,
        "HL7 ADT A01 MSG1",
    )
    # The MRN given (patient.identify, as a monitor's PCD-01 message would), then the bed.
    assert audit() == [
        ("patient.identify", "HL7 ADT A01 MSG1"),
        ("patient.admit", "HL7 ADT A01 MSG1"),
    ]
    identify, admit = AuditEvent.objects.order_by("id")
    assert (identify.user, identify.before, identify.after) == (
        None,
        {"mrn": "", "mrn_authority": ""},
        {"mrn": "MRN1", "mrn_authority": "HOSP"},
    )
    assert admit.user is None


def test_a01_written_by_hl7apy_with_a_unit_code_in_capitals(unit) -> None:
    """Another HL7 implementation's message; PV1-3.1 "ICU-A" finds unit "icu-a"."""
    message = Message("ADT_A01", version="2.5")
    message.msh.msh_3 = "EPIC"
    message.msh.msh_9 = "ADT^A01^ADT_A01"
    message.msh.msh_10 = "CTRL-42"
    message.msh.msh_11 = "P"
    message.evn.evn_2 = "20261203101500"
    message.pid.pid_3 = "MRN1^^^HOSP^MR"
    message.pid.pid_5 = "Smith^Ann"
    message.pv1.pv1_2 = "I"
    message.pv1.pv1_3 = "ICU-A^12^A2"

    outcome = adt_handle(message_parse(message.to_er7()))

    assert (outcome.code, outcome.errors) == ("AA", [])
    assert open_beds() == {"Ann Smith": "A2"}
    assert audit() == [
        ("patient.identify", "HL7 ADT A01 CTRL-42"),
        ("patient.admit", "HL7 ADT A01 CTRL-42"),
    ]


def test_a01_sent_again_changes_nothing(unit) -> None:
    adt_handle(adt("A01", "MSG1"))

    again = adt_handle(adt("A01", "MSG1"))
    same_bed = adt_handle(adt("A01", "MSG2"))  # another A01 to the bed the patient is in

    assert (again.code, again.errors, again.counts) == ("AA", [], {"duplicate": 1})
    assert (same_bed.code, same_bed.errors, same_bed.counts) == ("AA", [], {"a01_unchanged": 1})
    assert Admission.objects.count() == 1
    assert audit() == [
        ("patient.identify", "HL7 ADT A01 MSG1"),
        ("patient.admit", "HL7 ADT A01 MSG1"),
    ]


def test_a01_resent_after_the_discharge_does_not_admit_again(unit) -> None:
    adt_handle(adt("A01", "MSG1"))
    adt_handle(adt("A03", "MSG2"))

    outcome = adt_handle(adt("A01", "MSG1"))

    assert (outcome.code, outcome.counts) == ("AA", {"duplicate": 1})
    assert open_beds() == {}


def test_a01_for_a_patient_in_another_bed_transfers_them_with_a_warning(unit) -> None:
    adt_handle(adt("A01", "MSG1"))

    outcome = adt_handle(adt("A01", "MSG2", pv1_3="icu-a^^A3"))

    assert outcome.code == "AA"
    assert outcome.errors == [
        Hl7Error(
            "205",
            "A01 for a patient in icu-a bed A1: transferred",
            segment="PID",
            field=3,
            severity="W",
        )
    ]
    assert outcome.counts == {"transfer": 1}
    assert open_beds() == {"Ann Smith": "A3"}
    first, second = Admission.objects.order_by("id")
    assert (first.end_reason, first.discharge_reason) == ("transfer", "HL7 ADT A01 MSG2")
    assert (second.bed.label, second.reason) == ("A3", "HL7 ADT A01 MSG2")
    assert audit() == [
        ("patient.identify", "HL7 ADT A01 MSG1"),
        ("patient.admit", "HL7 ADT A01 MSG1"),
        ("patient.transfer", "HL7 ADT A01 MSG2"),
    ]


@pytest.mark.parametrize("event", ["A01", "A02"])
def test_a01_or_a02_to_a_bed_another_patient_holds_is_refused(unit, event) -> None:
    bob = PatientFactory(name="Bob")
    admission_create(patient=bob, bed=unit.beds.get(label="A2"), by=None)
    if event == "A02":
        adt_handle(adt("A01", "MSG1"))

    outcome = adt_handle(adt(event, "MSG9", pv1_3="icu-a^^A2"))

    assert outcome.code == "AE"
    assert outcome.errors == [
        Hl7Error(
            "205",
            "PV1-3: the bed is occupied by another patient (icu-a bed A2)",
            segment="PV1",
            field=3,
        )
    ]
    assert outcome.counts == {f"{event.lower()}_rejected": 1}
    assert open_beds() == ({"Bob": "A2"} if event == "A01" else {"Bob": "A2", "Ann Smith": "A1"})
    # An A01 refused leaves no patient behind either: the message changed nothing.
    assert Patient.objects.filter(uuid=ANN).exists() is (event == "A02")
    assert AuditEvent.objects.filter(username="HL7 ADT A01 MSG9").count() == 0


@pytest.mark.parametrize(
    ("pv1_3", "error"),
    [
        (
            "icu-z^^A1",
            Hl7Error("103", "PV1-3.1: no unit 'icu-z'", segment="PV1", field=3, component=1),
        ),
        (
            "icu-a^^A9",
            Hl7Error(
                "103",
                "PV1-3.3: no bed 'A9' in unit 'icu-a'",
                segment="PV1",
                field=3,
                component=3,
            ),
        ),
        (
            "icu-a",
            Hl7Error("101", "PV1-3: no bed (point of care ^ room ^ bed)", segment="PV1", field=3),
        ),
    ],
)
def test_an_unknown_unit_or_bed_or_none_is_refused(unit, pv1_3, error) -> None:
    outcome = adt_handle(adt("A01", "MSG1", pv1_3=pv1_3))

    assert (outcome.code, outcome.errors) == ("AE", [error])
    assert (Admission.objects.count(), Patient.objects.count(), AuditEvent.objects.count()) == (
        0,
        0,
        0,
    )


def test_a01_without_a_patient_identifier_is_refused(unit) -> None:
    outcome = adt_handle(adt("A01", "MSG1", pid3="^^^HOSP"))

    assert (outcome.code, outcome.errors) == (
        "AE",
        [Hl7Error("101", "PID-3: no patient identifier", segment="PID", field=3)],
    )
    assert Patient.objects.count() == 0


def test_a02_transfers_and_checks_the_prior_location(unit) -> None:
    adt_handle(adt("A01", "MSG1"))

    outcome = adt_handle(adt("A02", "MSG2", pv1_3="icu-a^^A2", pv1_6="icu-a^^A1"))
    misplaced = adt_handle(adt("A02", "MSG3", pv1_3="icu-a^^A3", pv1_6="icu-a^^A1"))

    assert (outcome.code, outcome.errors, outcome.counts) == ("AA", [], {"transfer": 1})
    assert (misplaced.code, misplaced.counts) == ("AA", {"transfer": 1})
    assert misplaced.errors == [
        Hl7Error(
            "0",
            "PV1-6: the patient was in icu-a bed A2, not icu-a bed A1",
            segment="PV1",
            field=6,
            severity="W",
        )
    ]
    assert open_beds() == {"Ann Smith": "A3"}
    assert audit() == [
        ("patient.identify", "HL7 ADT A01 MSG1"),
        ("patient.admit", "HL7 ADT A01 MSG1"),
        ("patient.transfer", "HL7 ADT A02 MSG2"),
        ("patient.transfer", "HL7 ADT A02 MSG3"),
    ]


def test_a02_for_a_patient_in_no_bed_admits_them_with_a_warning(unit) -> None:
    outcome = adt_handle(adt("A02", "MSG1", pv1_3="icu-a^^A2"))

    assert outcome.code == "AA"
    assert outcome.errors == [
        Hl7Error(
            "204",
            "A02 for a patient in no bed: admitted",
            segment="PID",
            field=3,
            severity="W",
        )
    ]
    assert open_beds() == {"Ann Smith": "A2"}
    assert audit() == [
        ("patient.identify", "HL7 ADT A02 MSG1"),
        ("patient.admit", "HL7 ADT A02 MSG1"),
    ]


def test_a03_discharges_resolving_alarms_and_ending_monitoring(unit, django_user_model) -> None:
    adt_handle(adt("A01", "MSG1"))
    patient = Patient.objects.get(uuid=ANN)
    alarm = AlarmFactory(patient=patient)
    nurse = django_user_model.objects.create_user("nurse")
    alarm_switch_off(patient=patient, kind="spo2_low", reason="probe on the ear", user=nurse)

    outcome = adt_handle(adt("A03", "MSG2"))

    assert (outcome.code, outcome.errors, outcome.counts) == ("AA", [], {"discharge": 1})
    admission = Admission.objects.get()
    assert (admission.end_reason, admission.discharge_reason) == (
        "discharge",
        "HL7 ADT A03 MSG2",
    )
    alarm.refresh_from_db()
    assert alarm.state == "resolved"
    patient.refresh_from_db()
    assert patient.monitoring_ended_at is not None
    # The ALARM OFF of this stay's team is switched on again, in the A03's name as the rest.
    assert not AlarmOff.objects.exists()
    assert audit() == [
        ("patient.identify", "HL7 ADT A01 MSG1"),
        ("patient.admit", "HL7 ADT A01 MSG1"),
        ("alarm.off", "nurse"),
        ("patient.discharge", "HL7 ADT A03 MSG2"),
        ("alarm.on", "HL7 ADT A03 MSG2"),
        ("patient.monitoring_end", "HL7 ADT A03 MSG2"),
    ]


def test_a03_sent_again_or_after_a_clinicians_discharge_changes_nothing(unit) -> None:
    adt_handle(adt("A01", "MSG1"))
    adt_handle(adt("A03", "MSG2"))
    adt_handle(adt("A01", "MSG3"))  # back in the unit

    again = adt_handle(adt("A03", "MSG2"))  # the first A03 re-sent: not this stay's
    assert (again.code, again.errors, again.counts) == ("AA", [], {"duplicate": 1})
    assert open_beds() == {"Ann Smith": "A1"}

    adt_handle(adt("A03", "MSG4"))
    other = adt_handle(adt("A03", "MSG5"))
    assert (other.code, other.errors, other.counts) == ("AA", [], {"a03_unchanged": 1})
    assert [action for action, _ in audit()].count("patient.discharge") == 2


def test_a03_before_its_a01_is_refused_then_applied_when_resent(unit) -> None:
    """Messages out of order: the A03 of a patient never admitted here is an AE (nothing to
    discharge); the sender retries it after the A01 and it is applied."""
    early = adt_handle(adt("A03", "MSG2"))

    assert (early.code, early.errors) == (
        "AE",
        [
            Hl7Error(
                "204",
                "PID-3: the patient was never admitted here (an A03 before its A01?)",
                segment="PID",
                field=3,
            )
        ],
    )
    assert (Patient.objects.count(), AuditEvent.objects.count()) == (0, 0)

    assert adt_handle(adt("A01", "MSG1")).code == "AA"
    assert adt_handle(adt("A03", "MSG2")).code == "AA"
    assert open_beds() == {}
    assert Admission.objects.get().end_reason == "discharge"


def test_a08_renames_the_patient_audited(unit) -> None:
    adt_handle(adt("A01", "MSG1"))

    outcome = adt_handle(adt("A08", "MSG2", name="Smith-Jones^Ann^Marie"))
    unchanged = adt_handle(adt("A08", "MSG3", name="Smith-Jones^Ann"))

    assert (outcome.code, outcome.errors, outcome.counts) == ("AA", [], {"rename": 1})
    assert (unchanged.code, unchanged.counts) == ("AA", {"a08_unchanged": 1})
    assert Patient.objects.get().name == "Ann Smith-Jones"
    event = AuditEvent.objects.get(action="patient.rename")
    assert (event.username, event.before, event.after) == (
        "HL7 ADT A08 MSG2",
        {"name": "Ann Smith", "names_seen": []},
        {"name": "Ann Smith-Jones"},
    )
    assert open_beds() == {"Ann Smith-Jones": "A1"}


def test_a08_with_another_bed_is_not_a_transfer(unit) -> None:
    adt_handle(adt("A01", "MSG1"))

    outcome = adt_handle(adt("A08", "MSG2", pv1_3="icu-a^^A3"))

    assert outcome.code == "AA"
    assert outcome.errors == [
        Hl7Error(
            "0",
            "PV1-3: A08 does not move a patient (in icu-a bed A1; send an A02): bed ignored",
            segment="PV1",
            field=3,
            severity="W",
        )
    ]
    assert open_beds() == {"Ann Smith": "A1"}
    assert audit() == [
        ("patient.identify", "HL7 ADT A01 MSG1"),
        ("patient.admit", "HL7 ADT A01 MSG1"),
    ]


def test_a08_of_an_unknown_patient_creates_nobody(unit) -> None:
    outcome = adt_handle(adt("A08", "MSG1"))

    assert (outcome.code, outcome.errors, outcome.counts) == (
        "AA",
        [],
        {"a08_unknown_patient": 1},
    )
    assert Patient.objects.count() == 0


@pytest.mark.parametrize(
    ("event", "control_id", "error"),
    [
        (
            "A04",
            "MSG1",
            Hl7Error(
                "201",
                "MSH-9.2: ADT event 'A04' not supported (A01, A02, A03, A08)",
                segment="MSH",
                field=9,
                component=2,
            ),
        ),
        ("A01", "", Hl7Error("101", "MSH-10: no message control id", segment="MSH", field=10)),
    ],
)
def test_an_unsupported_event_or_no_control_id_is_refused(unit, event, control_id, error) -> None:
    outcome = adt_handle(adt(event, control_id))

    assert (outcome.code, outcome.errors) == ("AE", [error])
    assert Patient.objects.count() == 0


def test_a_race_lost_to_a_clinician_is_an_ae_to_retry(unit, monkeypatch) -> None:
    """A clinician admits the patient between the handler's checks and its write: the
    service's AlreadyAdmitted (the database's one-open-admission rule) becomes AE 206."""

    def admitted_meanwhile(**kwargs):
        raise AlreadyAdmitted("Patient is already admitted: transfer them.")

    monkeypatch.setattr("gateway.adt.admission_create", admitted_meanwhile)

    outcome = adt_handle(adt("A01", "MSG1"))

    assert (outcome.code, outcome.counts) == ("AE", {"a01_rejected": 1})
    assert outcome.errors == [
        Hl7Error(
            "206",
            "changed meanwhile, retry: Patient is already admitted: transfer them.",
            segment="PID",
            field=3,
        )
    ]
    assert Patient.objects.count() == 0
