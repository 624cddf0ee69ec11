"""Schemathesis against the live OpenAPI schema: every operation of the API called with
generated parameters and bodies by an authenticated client, through the real WSGI application
and the real database; no response may be a 5xx, and every response must conform to the schema
(status documented, body of the documented shape, content type)."""

from collections.abc import Iterator
from datetime import timedelta

import pytest
import schemathesis
from django.conf import settings as django_settings
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode

from icu.wsgi import application
from patients.models import Patient
from patients.tests.factories import PatientFactory
from testing.processes import report_figure
from units.models import Admission, Bed, Unit
from vitals.tests.factories import AlarmFactory, PatientMetricFactory

# Examples per operation: enough to reach every parameter's edge cases, few enough for CI. The
# full run is on PostgreSQL, the engine of production, whose typed columns refuse what does not
# fit (a string too long, an integer out of range: a DataError, a 5xx where SQLite stores
# anything), and `make test` runs it there. On SQLite a quarter as many (about 9 s instead of
# 36 s): a developer without PostgreSQL still has every operation called in every mode.
FULL_EXAMPLES = 60
EXAMPLES = FULL_EXAMPLES if django_settings.TEST_DB_ENGINE == "postgresql" else FULL_EXAMPLES // 4


@pytest.fixture
def ward(db) -> list[str]:
    """Data for the operations to find: patients with readings and open alarms; their uuids."""
    uuids = []
    for name in ("ann", "bob"):
        patient = PatientFactory(name=name)
        metrics = [PatientMetricFactory(patient=patient) for _ in range(3)]
        patient.latest_metric = metrics[-1]
        patient.save()
        AlarmFactory(patient=patient)
        uuids.append(str(patient.uuid))
    return uuids


@pytest.fixture
def unit_codes(ward: list[str]) -> list[str]:
    """A unit with two beds, the ward's first patient in bed 1 (with their alarm), for the
    unit operations to find; its code."""
    icu = Unit.objects.create(code="icu", name="ICU")
    beds = [Bed.objects.create(unit=icu, label=str(p), position=p) for p in (1, 2)]
    Admission.objects.create(
        patient=Patient.objects.get(uuid=ward[0]),
        bed=beds[0],
        admitted_at=timezone.now() - timedelta(days=1),
    )
    return [icu.code]


@pytest.fixture
def token(db, django_user_model) -> str:
    user = django_user_model.objects.create_superuser("fuzzer", password="x" * 20)
    return Token.objects.create(user=user).key


@pytest.fixture
def wsgi_in_test_transaction() -> Iterator[None]:
    """Calls through the raw WSGI application would close the database connection at the end
    of each request, and with it the test's transaction; Django's own test client stops that
    the same way."""
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


@pytest.fixture
def api_schema(token: str, ward: None, wsgi_in_test_transaction: None):
    """The schema as the running application serves it, to an authenticated client."""
    return schemathesis.openapi.from_wsgi(
        "/api/schema/?format=json", application, headers={"Authorization": f"Token {token}"}
    )


# Operations whose schema-valid requests are rightly refused: random credentials.
NOT_EXPECTED_TO_ACCEPT_RANDOM_DATA = {"POST /api/auth/token/"}
# Operations on one patient or unit whose other parameters are read only once it is found: a
# random uuid or code is a 404 first, so half their cases name one that exists (a patient of
# the ward, the unit), and their generated parameters reach the code behind. Schema-valid
# requests may then be rightly refused (a cursor not issued, `until` before `since`): a 400,
# documented, never a 5xx. For each: where the patient or unit goes, which of the fixtures
# it comes from, and the cursor parameter, if the operation is a list paged by a cursor.
WARD_OPERATIONS = {
    "GET /api/patients/{patient_uuid}/metrics/": (
        "path_parameters",
        "patient_uuid",
        "ward",
        "cursor",
    ),
    "GET /fhir/Observation": ("query", "patient", "ward", "_cursor"),
    "GET /api/units/{code}/alarm-report/": ("path_parameters", "code", "units", None),
}
# Operations with no parameter that can be wrong (no query, a path of any string): no invalid
# case can be generated for them (Hypothesis: Unsatisfiable).
NOTHING_TO_GET_WRONG = ["GET /api/units/", "GET /api/units/{code}/", "GET /api/alarm-processing/"]
CURSOR_OPERATIONS = [label for label, (*_, cursor) in WARD_OPERATIONS.items() if cursor]


def with_ward_target(strategy, label: str, targets: list[str]):
    """`strategy`'s cases, half of them on a patient or unit that exists (WARD_OPERATIONS)."""
    where, name, _, _ = WARD_OPERATIONS[label]

    def put(pair):
        case, target = pair
        if target is not None:
            getattr(case, where)[name] = target
        return case

    return st.tuples(strategy, st.sampled_from([None, *targets])).map(put)


def fuzz(
    operation,
    headers: dict[str, str],
    label: str,
    mode: GenerationMode,
    fixtures: dict[str, list[str]],
) -> tuple[int, int, str | None]:
    """Run one operation's generated cases (schema-valid ones, or invalid ones that must be
    refused with a 4xx); return how many ran, how many carried a cursor to a ward patient,
    and the failure, if any."""
    calls = cursors = 0
    excluded = []
    if mode == GenerationMode.POSITIVE and label in NOT_EXPECTED_TO_ACCEPT_RANDOM_DATA:
        excluded.append(schemathesis.checks.positive_data_acceptance)
    if mode == GenerationMode.NEGATIVE:
        # Invalid data need not be refused: like most APIs, this one ignores what it does not
        # use (an unknown or malformed `page_size` falls back to the default). It must still
        # never fail (5xx) and always answer in a documented shape.
        excluded.append(schemathesis.checks.negative_data_rejection)

    strategy = operation.as_strategy(generation_mode=mode)
    targets = fixtures[WARD_OPERATIONS[label][2]] if label in WARD_OPERATIONS else []
    if targets:
        strategy = with_ward_target(strategy, label, targets)

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def call(case) -> None:
        nonlocal calls, cursors
        calls += 1
        checks = excluded
        if targets:
            where, name, _, cursor = WARD_OPERATIONS[label]
            if getattr(case, where).get(name) in targets:
                checks = [*excluded, schemathesis.checks.positive_data_acceptance]
                cursors += bool(cursor and case.query and case.query.get(cursor))
        response = case.call_and_validate(headers=headers, excluded_checks=checks)
        assert response.status_code < 500

    try:
        call()
    except Exception as exc:
        return calls, cursors, f"{type(exc).__name__}: {exc}"[:3000]
    return calls, cursors, None


def test_every_operation_answers_within_its_schema_and_never_with_a_5xx(
    api_schema, token, ward, unit_codes
):
    """Each operation in turn, as a Hypothesis test of its own (schemathesis' pytest plugin
    does not run under pytest 9); all the failures are reported together."""
    headers = {"Authorization": f"Token {token}"}
    calls: dict[str, int] = {}
    cursors: dict[str, int] = {}
    failures: dict[str, str] = {}
    for result in api_schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
        if label in NOTHING_TO_GET_WRONG:
            assert [p["in"] for p in operation.definition.raw.get("parameters", [])] in (
                [],
                ["path"],
            )
            modes.remove(GenerationMode.NEGATIVE)
        for mode in modes:
            key = f"{label} ({mode.value})"
            calls[key], cursors[key], failure = fuzz(
                operation, headers, label, mode, {"ward": ward, "units": unit_codes}
            )
            if failure:
                failures[key] = failure

    report_figure(
        "schemathesis: operations / cases run / failures",
        f"{len(calls)} / {sum(calls.values())} / {len(failures)}"
        + (
            ""
            if EXAMPLES == FULL_EXAMPLES
            else f" (a reduced run: {EXAMPLES} examples, not "
            f"{FULL_EXAMPLES}, on SQLite; the full one is on PostgreSQL)"
        ),
    )
    report_figure(
        "schemathesis: generated cursors sent to a patient's list (readings, FHIR search)",
        " / ".join(
            str(sum(n for key, n in cursors.items() if key.startswith(label)))
            for label in CURSOR_OPERATIONS
        ),
    )
    assert len(calls) >= 8, sorted(calls)
    assert all(calls.values()), [key for key, n in calls.items() if not n]
    assert all(
        sum(n for key, n in cursors.items() if key.startswith(label)) for label in CURSOR_OPERATIONS
    ), cursors
    assert failures == {}


def test_every_operation_documents_the_error_shape(api_client):
    document = api_client.get("/api/schema/", {"format": "json"}).json()

    assert document["components"]["schemas"]["Error"]["required"] == ["error"]
    operations = [op for ops in document["paths"].values() for op in ops.values()]
    assert len(operations) >= 10
    for operation in operations:
        for status in ("400", "401", "403", "404", "411", "413", "429"):
            content = operation["responses"][status]["content"]["application/json"]
            assert content["schema"] == {"$ref": "#/components/schemas/Error"}
    # An operation that reads a body may refuse its media type (schemathesis sent a
    # multipart body DRF could not read to the token endpoint: 415).
    with_body = [op for op in operations if "requestBody" in op]
    assert len(with_body) >= 4
    for operation in operations:
        documented = operation["responses"].get("415", {}).get("content", {})
        assert documented == (
            {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
            if "requestBody" in operation
            else {}
        ), operation["operationId"]
    ok = document["paths"]["/api/patients/{patient_uuid}/"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Patient"}
