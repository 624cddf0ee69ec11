"""Reads of core's own: the API's credentials."""

from functools import cache

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from rest_framework.authtoken.models import Token

# Between two permission names in `token_get`'s annotations: a codename is an identifier.
_SEPARATOR = ","


@cache
def _permission_names_sql(vendor: str, owner: str) -> tuple[str, str]:
    """Two scalar subqueries as ModelBackend reads them (a user's own permissions; those of
    the user's groups), each the `app_label.codename` names joined by _SEPARATOR (NULL for
    none), of the user whose id is the SQL `owner` (a column of the outer query, or a
    parameter). Plain SQL built once: Django compiling two subqueries per request cost as much
    as the two queries they replace."""
    joined = "GROUP_CONCAT" if vendor == "sqlite" else "STRING_AGG"
    q = connection.ops.quote_name
    user_permissions = get_user_model()._meta.get_field("user_permissions")
    groups = get_user_model()._meta.get_field("groups")
    group_permissions = Group._meta.get_field("permissions")
    names = (
        f"SELECT {joined}(ct.{q('app_label')} || '.' || p.{q('codename')}, '{_SEPARATOR}') "  # noqa: S608 (names only)
        f"FROM {q(Permission._meta.db_table)} p "
        f"JOIN {q(ContentType._meta.db_table)} ct ON ct.{q('id')} = p.{q('content_type_id')} "
    )
    own = (
        f"{names}JOIN {q(user_permissions.m2m_db_table())} up "
        f"ON up.{q(user_permissions.m2m_reverse_name())} = p.{q('id')} "
        f"WHERE up.{q(user_permissions.m2m_column_name())} = {owner}"
    )
    of_groups = (
        f"{names}JOIN {q(group_permissions.m2m_db_table())} gp "
        f"ON gp.{q(group_permissions.m2m_reverse_name())} = p.{q('id')} "
        f"JOIN {q(groups.m2m_db_table())} ug "
        f"ON ug.{q(groups.m2m_reverse_name())} = gp.{q(group_permissions.m2m_column_name())} "
        f"WHERE ug.{q(groups.m2m_column_name())} = {owner}"
    )
    return own, of_groups


def token_get(*, key: str) -> Token | None:
    """The API token `key` with its user, and the user's permissions, in one query: what
    Django's ModelBackend reads in two more the first time a request asks `has_perm` (the
    user's own permissions, those of their groups), read with the token so that an API request
    takes one query to know who asks and what they may do. The names are set as ModelBackend's
    per-user-object caches (`_user_perm_cache`, `_group_perm_cache`, `_perm_cache`, which it
    fills itself otherwise), so `has_perm` answers from them; for an inactive user (refused)
    and a superuser (every permission: `has_perm` does not ask) they are not set. None for an
    unknown key. Read anew for every request: a revoked token, a user removed from a role or
    made inactive is refused on the very next request.

    The SQL is written once (`_token_sql`) and the two models built from the row as the ORM
    builds them (`Model.from_db`): Django compiling `select_related` and two annotations
    every request cost a third of an API request's own time (bench/api_scale.py). The same
    token and user as `Token.objects.select_related("user")` (tested)."""
    sql, token_fields, user_fields, converters = _token_sql(connection.vendor)
    with connection.cursor() as cursor:
        cursor.execute(sql, [key])
        row = cursor.fetchone()
    if row is None:
        return None
    row = list(row)
    for i, column, functions in converters:  # the ORM's own conversions (SQLite's times)
        for convert in functions:
            row[i] = convert(row[i], column, connection)
    split = len(token_fields)
    token = Token.from_db(connection.alias, token_fields, row[:split])
    user = get_user_model().from_db(
        connection.alias, user_fields, row[split : split + len(user_fields)]
    )
    Token._meta.get_field("user").set_cached_value(token, user)
    _permissions_cache(user, *row[split + len(user_fields) :])
    return token


@cache
def _token_sql(vendor: str) -> tuple[str, list[str], list[str], list[tuple]]:
    """token_get's query: the token's columns, its user's, then the user's own permission
    names and their groups' (`_permission_names_sql`); the two models' field names (their
    attnames, in the columns' order); and the converters the ORM applies to a column, as
    (index, column, functions)."""
    q = connection.ops.quote_name
    user_model = get_user_model()
    token_fields = [f.attname for f in Token._meta.concrete_fields]
    user_fields = [f.attname for f in user_model._meta.concrete_fields]
    token_table, user_table = q(Token._meta.db_table), q(user_model._meta.db_table)
    owner = f"{token_table}.{q(Token._meta.get_field('user').column)}"
    own, of_groups = _permission_names_sql(vendor, owner)  # names, no parameter
    columns = [f"{token_table}.{q(f.column)}" for f in Token._meta.concrete_fields]
    columns += [f"{user_table}.{q(f.column)}" for f in user_model._meta.concrete_fields]
    sql = (
        f"SELECT {', '.join(columns)}, ({own}), ({of_groups}) "  # noqa: S608 (names only)
        f"FROM {token_table} JOIN {user_table} "
        f"ON {user_table}.{q(user_model._meta.pk.column)} = {owner} "
        f"WHERE {token_table}.{q(Token._meta.pk.column)} = %s"
    )
    converters = []
    fields = [*Token._meta.concrete_fields, *user_model._meta.concrete_fields]
    for i, field in enumerate(fields):
        column = field.get_col(field.model._meta.db_table)
        functions = connection.ops.get_db_converters(column) + field.get_db_converters(connection)
        if functions:
            converters.append((i, column, functions))
    return sql, token_fields, user_fields, converters


def user_permissions_load(*, user) -> None:
    """A signed-in user's permissions (a session's), their own and their groups', in one query
    instead of ModelBackend's two, set as its caches (as `token_get` does); nothing for an
    inactive user or a superuser, nor for one whose permissions are already read."""
    if not user.is_active or user.is_superuser or hasattr(user, "_perm_cache"):
        return
    own, of_groups = _permission_names_sql(connection.vendor, "%s")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT ({own}), ({of_groups})", [user.pk, user.pk])
        _permissions_cache(user, *cursor.fetchone())


def _permissions_cache(user, own: str | None, of_groups: str | None) -> None:
    """Set the names as ModelBackend's per-user-object caches, for an active user who is not a
    superuser (an inactive one has none, a superuser every one: ModelBackend's rules)."""
    if user.is_active and not user.is_superuser:
        own_names, group_names = _names(own), _names(of_groups)
        user._user_perm_cache, user._group_perm_cache = own_names, group_names
        user._perm_cache = own_names | group_names


def _names(joined: str | None) -> set[str]:
    return set(joined.split(_SEPARATOR)) if joined else set()
