"""The API's token authentication (core.authentication, core.selectors.token_get): the token,
its user and the user's permissions in one query, and every change to them seen by the very
next request."""

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from core.permissions import ROLES, VIEWER
from core.selectors import token_get
from testing.clients import token_client

pytestmark = pytest.mark.django_db

PATIENTS = "/api/patients/"
VIEWER_NAMES = set(ROLES[VIEWER])
REFUSED = {
    "status": 403,
    "code": "permission_denied",
    "message": "Your role does not allow this; it takes the permissions patients.view_patient, "
    "vitals.view_patientmetric, vitals.view_alarm.",
}


def test_the_token_its_user_and_their_permissions_are_one_query(viewer) -> None:
    client = token_client(viewer)
    key = client._credentials["HTTP_AUTHORIZATION"].split()[1]
    with CaptureQueriesContext(connection) as queries:
        token = token_get(key=key)
        assert token.user == viewer
        assert token.user.has_perms(ROLES[VIEWER])
        assert not token.user.has_perm("vitals.change_alarmlimits")
    assert len(queries) == 1
    # What Django's ModelBackend would have read itself.
    assert token.user._group_perm_cache == VIEWER_NAMES
    assert token.user._user_perm_cache == set()
    assert token.user.get_all_permissions() == VIEWER_NAMES
    assert token_get(key="not-a-key") is None


def test_a_permission_given_to_the_user_alone_counts(django_user_model) -> None:
    user = django_user_model.objects.create_user(username="locum")
    client = token_client(user)
    assert client.get(PATIENTS).json()["error"] == REFUSED
    names = [name.split(".") for name in ("patients.view_patient", "vitals.view_patientmetric",
                                          "vitals.view_alarm")]  # fmt: skip
    user.user_permissions.add(
        *(Permission.objects.get(content_type__app_label=a, codename=c) for a, c in names)
    )
    assert client.get(PATIENTS).status_code == 200


def test_a_change_to_a_user_is_seen_by_the_very_next_request(viewer, roles) -> None:
    client = token_client(viewer)
    assert client.get(PATIENTS).status_code == 200

    viewer.groups.remove(roles[VIEWER])  # removed from the role
    assert client.get(PATIENTS).json() == {"error": REFUSED}
    viewer.groups.add(roles[VIEWER])
    assert client.get(PATIENTS).status_code == 200

    roles[VIEWER].permissions.remove(Permission.objects.get(codename="view_alarm"))  # the role
    assert client.get(PATIENTS).json() == {"error": REFUSED}
    roles[VIEWER].permissions.add(Permission.objects.get(codename="view_alarm"))
    assert client.get(PATIENTS).status_code == 200

    viewer.is_active = False  # made inactive
    viewer.save()
    response = client.get(PATIENTS)
    assert (response.status_code, response.json()["error"]["message"]) == (
        401,
        "User inactive or deleted.",
    )
    viewer.is_active = True
    viewer.save()
    assert client.get(PATIENTS).status_code == 200

    viewer.auth_token.delete()  # the token revoked
    response = client.get(PATIENTS)
    assert response.status_code == 401
    assert response.json() == {
        "error": {"status": 401, "code": "authentication_failed", "message": "Invalid token."}
    }
    assert response["WWW-Authenticate"] == "Token"


def test_a_superuser_holds_every_permission_and_sessions_still_work(
    staff_user, viewer, django_user_model
) -> None:
    client = token_client(staff_user)
    assert client.get(PATIENTS).status_code == 200
    assert client.get("/api/audit/").status_code == 200
    token = token_get(key=client._credentials["HTTP_AUTHORIZATION"].split()[1])
    assert not hasattr(token.user, "_perm_cache")  # Django's own rule: every permission
    assert token.user.has_perm("vitals.view_auditevent")

    session = APIClient()
    session.force_login(viewer)
    assert session.get(PATIENTS).status_code == 200
    assert session.get("/api/audit/").status_code == 403


def test_a_session_reads_the_permissions_in_one_query_and_sees_changes_at_once(
    viewer, roles, django_assert_num_queries
) -> None:
    session = APIClient()
    session.force_login(viewer)
    session.get(PATIENTS)
    # The session, its user, the user's permissions (one query, not two), COUNT(*) (no patient:
    # no page to read).
    with django_assert_num_queries(4) as queries:
        assert session.get(PATIENTS).status_code == 200
    assert (
        "GROUP_CONCAT" in queries.captured_queries[2]["sql"]
        or "STRING_AGG" in (queries.captured_queries[2]["sql"])
    )

    viewer.groups.remove(roles[VIEWER])
    assert session.get(PATIENTS).json() == {"error": REFUSED}
    viewer.groups.add(roles[VIEWER])
    assert session.get(PATIENTS).status_code == 200
    viewer.is_active = False
    viewer.save()
    response = session.get(PATIENTS)  # signed out (Django's get_user): anonymous, as before
    assert (response.status_code, response.json()["error"]["code"]) == (401, "not_authenticated")


def test_token_get_builds_the_token_and_user_the_orm_reads(viewer, django_user_model) -> None:
    """token_get writes its SQL once and builds the models from the row itself: the same
    token and user, every field, as `select_related("user")` reads them, and the user's
    permissions as ModelBackend reads them."""
    superuser = django_user_model.objects.create_superuser(username="root", password="x")
    for user in (viewer, superuser):
        key = token_client(user)._credentials["HTTP_AUTHORIZATION"].split()[1]
        token = token_get(key=key)
        # ModelBackend's caches set for a user of a role; a superuser's left to it.
        assert hasattr(token.user, "_perm_cache") is not user.is_superuser
        expected = Token.objects.select_related("user").get(key=key)
        fields = [f.attname for f in Token._meta.concrete_fields]
        assert [getattr(token, f) for f in fields] == [getattr(expected, f) for f in fields]
        user_fields = [f.attname for f in django_user_model._meta.concrete_fields]
        assert [getattr(token.user, f) for f in user_fields] == [
            getattr(expected.user, f) for f in user_fields
        ]
        assert not token._state.adding
        assert token._state.db == expected._state.db
        assert not token.user._state.adding
        fresh = django_user_model.objects.get(pk=user.pk)
        assert token.user.get_all_permissions() == fresh.get_all_permissions()
