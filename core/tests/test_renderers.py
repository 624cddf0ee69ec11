"""FastJSONRenderer writes what DRF's JSONRenderer writes, byte for byte."""

import pytest
from django.utils.translation import gettext_lazy
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework.exceptions import ErrorDetail
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.serializer_helpers import ReturnDict, ReturnList

from core.renderers import FastJSONRenderer

PLAIN = [
    None,
    {},
    [],
    {"results": [{"pulse": 72, "temperature": 36.8, "bp": "120/80", "spo2": None}]},
    {"numbers": [0, -1, 2**53, 10**20, 0.1, 1.5, -3.25, 0.30000000000000004, 1e-3, 123456.7]},
    {"flags": [True, False], "empty": "", "nested": {"a": {"b": [[], {}]}}},
    {"text": 'é ü ß 名前 "quoted" back\\slash /slash tab\t nl\n nul\x00 \x1f \x7f 😀'},
    {"separators": "\u2028 and \u2029 (escaped: JavaScript strings may not hold them)"},
    {"ünïcode key": 1, "": 2},
    ReturnList([ReturnDict({"a": 1}, serializer=None)], serializer=None),
    {"error": {"status": 400, "code": "invalid", "message": ErrorDetail("Bad.", code="x")}},
    {"lazy": gettext_lazy("Not found.")},
]


@pytest.mark.parametrize("data", PLAIN)
def test_the_same_bytes_as_drfs_renderer(data) -> None:
    assert FastJSONRenderer().render(data) == JSONRenderer().render(data)


@pytest.mark.parametrize("media_type", ["application/json; indent=4", "application/json"])
def test_indented_when_asked_as_drfs_renderer(media_type: str) -> None:
    data = {"results": [{"pulse": 72}], "next": None}
    fast = FastJSONRenderer().render(data, media_type, {"indent": 2})
    assert fast == JSONRenderer().render(data, media_type, {"indent": 2})
    assert b"\n" in fast


plain_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    # The floats the API writes (FastJSONRenderer's docstring: other notations outside these).
    | st.floats(min_value=1e-4, max_value=1e15)
    | st.floats(min_value=-1e15, max_value=-1e-4)
    | st.just(0.0)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(plain_json)
@settings(max_examples=300, deadline=None)
def test_any_plain_json_the_same_bytes(data) -> None:
    assert FastJSONRenderer().render(data) == JSONRenderer().render(data)
