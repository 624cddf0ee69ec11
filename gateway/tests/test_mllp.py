"""MLLP framing: the same frames and junk count however the bytes are split."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.mllp import (
    HEAD_BYTES,
    Frame,
    FrameReader,
    frame_encode,
    segments_normalise,
    text_decode,
)

FRAMING = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow],
)


def read_all(chunks: list[bytes], max_bytes: int = 1000) -> tuple[list[Frame], int, bool]:
    reader = FrameReader(max_bytes=max_bytes)
    frames = [frame for chunk in chunks for frame in reader.feed(chunk)]
    return frames, reader.junk_bytes, reader.partial


def test_frames_between_junk_and_the_missing_cr():
    stream = b"noise\x0bMSH|a\x1c\r\r\n\x0bMSH|b\x1c\x0bMSH|c\x1c\rtail"
    frames, junk, partial = read_all([stream])
    assert frames == [Frame(b"MSH|a", 5), Frame(b"MSH|b", 5), Frame(b"MSH|c", 5)]
    # "noise", "\r\n" after the first frame's CR, "tail".
    assert (junk, partial) == (5 + 2 + 4, False)


def test_a_new_start_abandons_the_unfinished_frame():
    frames, junk, partial = read_all([b"\x0bMSH|lost", b"\x0bMSH|kept\x1c\r\x0bMSH|half"])
    assert frames == [Frame(b"MSH|kept", 8)]
    assert (junk, partial) == (1 + 8, True)


def test_an_oversized_frame_keeps_its_head_only():
    body = b"MSH|^~\\&|" + b"x" * (3 * HEAD_BYTES)
    frames, _, _ = read_all(
        [frame_encode(body.decode())[:10], frame_encode(body.decode())[10:]], 100
    )
    assert frames == [Frame(body[:HEAD_BYTES], len(body), oversized=True)]
    frames, _, _ = read_all([b"\x0b" + b"y" * 100 + b"\x1c\r"], 100)
    assert frames == [Frame(b"y" * 100, 100)]  # the limit itself is allowed


byte_streams = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from([b"\x0b", b"\x1c", b"\r", b"\x1c\r", b"\x0bMSH|x\x1c\r"]),
    ),
    max_size=30,
).map(b"".join)


@FRAMING
@given(stream=byte_streams, cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=20))
def test_any_split_gives_the_same_frames(stream: bytes, cuts: list[int]):
    whole = read_all([stream], max_bytes=50)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert read_all(chunks, max_bytes=50) == whole
    frames, junk, _ = whole
    # Every byte is in a frame (with its VT and FS), counted as junk, a swallowed CR or pending.
    assert junk + sum(f.size + 2 for f in frames) <= len(stream)


@FRAMING
@given(messages=st.lists(st.binary(max_size=80).filter(lambda b: not {0x0B, 0x1C} & set(b))))
def test_framed_messages_come_back_whole(messages: list[bytes]):
    stream = b"".join(b"\x0b" + m + b"\x1c\r" for m in messages)
    frames, junk, partial = read_all([bytes([b]) for b in stream])
    assert [f.payload for f in frames] == messages
    assert (junk, partial) == (0, False)


def test_text_is_utf8_else_latin1():
    assert text_decode("Zoë".encode()) == "Zoë"
    assert text_decode("Zoë".encode("iso-8859-1")) == "Zoë"


def test_segment_separators_normalised_to_cr():
    assert (
        segments_normalise("MSH|a\r\nPID|1\nPV1|2\rOBX|3\r\n\r\n") == "MSH|a\rPID|1\rPV1|2\rOBX|3"
    )
