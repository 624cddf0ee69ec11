"""Cursors that only the list that issued them can follow.

A cursor is the server's own state handed to the client (where the next page starts). A client
that edits one must not reach the query with it: DRF's CursorPagination trusts the position it
decodes and filters with it, so a forged one ended in a 500 (or a 404 "Invalid cursor", or,
worse, quietly in a page the server never offered). Here every cursor is signed with
SECRET_KEY (django.core.signing) and a salt naming the list, and anything whose signature does
not hold (garbage, an altered or cut cursor, one of another list) is a 400 `invalid_cursor`
before it is decoded. Cursors stop working when SECRET_KEY changes: clients start again from
the first page.
"""

from typing import Any

from django.core import signing
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.utils.urls import replace_query_param

from core.exceptions import InvalidCursor

_SEP = "."  # not in URL-safe base64, and needs no escaping in a query string


def cursor_sign(*, value: Any, salt: str) -> str:
    """`value` (JSON-serialisable) as an opaque, URL-safe, signed cursor."""
    return signing.Signer(salt=salt, sep=_SEP).sign_object(value)


def cursor_unsign(*, cursor: str, salt: str, message: str) -> Any:
    """The value `cursor_sign` signed with this salt; InvalidCursor(message) for anything
    else."""
    try:
        return signing.Signer(salt=salt, sep=_SEP).unsign_object(cursor)
    except (signing.BadSignature, ValueError):
        raise InvalidCursor(message) from None


class SignedCursorPagination(CursorPagination):
    """DRF's CursorPagination (same ordering, pages and links), with signed cursors. The base
    of every cursor-paginated list."""

    cursor_query_description = (
        "Where the page starts: copy it from the `next` or `previous` link. Opaque; a cursor "
        "the API did not issue is a 400 `invalid_cursor`."
    )

    def _salt(self) -> str:
        cls = type(self)
        return f"core.pagination:{cls.__module__}.{cls.__qualname__}:{','.join(self.ordering)}"

    def encode_cursor(self, cursor: Cursor) -> str:
        value = [cursor.offset, cursor.reverse, cursor.position]
        signed = cursor_sign(value=value, salt=self._salt())
        return replace_query_param(self.base_url, self.cursor_query_param, signed)

    def decode_cursor(self, request) -> Cursor | None:
        given = request.query_params.get(self.cursor_query_param)
        if not given:  # absent or empty: the first page
            return None
        message = (
            f"'{self.cursor_query_param}' is not a cursor this list issued: follow its `next` "
            "or `previous` link."
        )
        value = cursor_unsign(cursor=given, salt=self._salt(), message=message)
        # Signed by us, so of our making; checked all the same, should the key ever leak.
        match value:
            case [int(offset), bool(reverse), str() | None as position] if (
                0 <= offset <= self.offset_cutoff
            ):
                return Cursor(offset=offset, reverse=reverse, position=position)
        raise InvalidCursor(message)
