"""The browsable API's renderer: DRF's, with a template that runs under the
Content-Security-Policy (core/templates/core/browsable_api.html); and a faster JSON one."""

import msgspec
from rest_framework.renderers import BrowsableAPIRenderer as DrfBrowsableAPIRenderer
from rest_framework.renderers import JSONRenderer
from rest_framework.utils import encoders


class BrowsableAPIRenderer(DrfBrowsableAPIRenderer):
    template = "core/browsable_api.html"


class FastJSONRenderer(JSONRenderer):
    """DRF's JSONRenderer, its bytes, encoded by msgspec in C (some 10x json.dumps) for the
    API's biggest answers (a page of readings, the ward). For data of plain JSON types only
    (dict, list, str, int, float, bool, None), as the fast paths build them: msgspec would
    write a datetime or a UUID its own way (DRF's encoder, not reached for them, differs),
    a NaN as null where DRF refuses it, and a float below 1e-4 or from 1e16 on in another
    notation (0.00001 for 1e-05, 1e16 for 1e+16: the same number; the API's floats, body
    temperatures and offsets rounded to the millisecond, are never such). Anything msgspec
    does not know (a lazy translation) goes to DRF's encoder; an indented answer
    (`; indent=4`, the browsable API) to DRF's own render. Tested byte for byte against
    JSONRenderer (core/tests/test_renderers.py)."""

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        if data is None:
            return b""
        if self.get_indent(accepted_media_type, renderer_context or {}) is not None:
            return super().render(data, accepted_media_type, renderer_context)
        # As JSONRenderer: U+2028 and U+2029 escaped, JSON a strict subset of JavaScript.
        return (
            _ENCODER.encode(data)
            .replace(b"\xe2\x80\xa8", b"\\u2028")
            .replace(b"\xe2\x80\xa9", b"\\u2029")
        )


def _plain(value: object) -> object:
    """What msgspec does not encode itself: a str subclass (DRF's ErrorDetail) as its text,
    the rest (a lazy translation) as DRF's encoder has it."""
    if isinstance(value, str):
        return str(value)
    return _DRF_ENCODER.default(value)


_DRF_ENCODER = encoders.JSONEncoder()
_ENCODER = msgspec.json.Encoder(enc_hook=_plain)


def json_encode(data: object) -> bytes:
    """`data` as FastJSONRenderer's encoder writes it, U+2028 and U+2029 left as they are (the
    renderer escapes them in the whole answer): for pieces of an answer encoded ahead of it,
    embedded with msgspec.Raw (the ward's snapshot, vitals/tile_services.py)."""
    return _ENCODER.encode(data)
