"""MLLP: the same frames and junk count however the bytes are split; the blocking client
against a small scripted receiver in a thread; the acknowledgement reader."""

import contextlib
import socket
import threading
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.mllp import (
    HEAD_BYTES,
    Ack,
    Frame,
    FrameReader,
    MllpClient,
    MllpError,
    ack_parse,
    frame,
    frame_encode,
    segments_normalise,
    text_decode,
)
from testing.devservers import free_port
from testing.mllp import MllpReceiver

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


# An answer: what the receiver does with one message (its connection, the message's payload);
# False to close the connection.
Answer = Callable[[socket.socket, bytes], bool]


def send(*chunks: bytes, delay: float = 0.0) -> Answer:
    """Send the chunks `delay` s after the message, 20 ms apart (each its own read)."""

    def answer(conn: socket.socket, _payload: bytes) -> bool:
        time.sleep(delay)
        for chunk in chunks:
            with contextlib.suppress(OSError):  # a late answer to a client gone
                conn.sendall(chunk)
            time.sleep(0.02)
        return True

    return answer


def half_then_hang_up(conn: socket.socket, _payload: bytes) -> bool:
    conn.sendall(b"\x0bMSA|AA|M1")  # a frame never ended
    return False


class Receiver(MllpReceiver):
    """The n-th message it gets (over all connections) is answered by answers[n]."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.received: list[bytes] = []
        self.lock = threading.Lock()
        super().__init__()

    def reply(self, conn: socket.socket, payload: bytes) -> bool:
        with self.lock:
            self.received.append(payload)
            answer = self.answers.pop(0)
        return answer(conn, payload)


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(*answers: Answer) -> Receiver:
        made.append(Receiver(*answers))
        return made[-1]

    yield make
    for r in made:
        r.stop()


ACK = b"MSH|^~\\&|GW||||20261203||ACK|A1|P|2.6\rMSA|AA|M1"


def test_the_client_reads_a_reply_split_across_reads_after_junk(receiver):
    framed = frame(ACK)
    peer = receiver(
        send(b"\r\nnoise", framed[:7], framed[7:30], framed[30:-1], framed[-1:]),
        send(frame(b"MSA|AA|M2")),
    )
    client = MllpClient(("127.0.0.1", peer.port), timeout=2.0)

    assert client.exchange(b"MSH|M1") == ACK
    assert client.exchange(b"MSH|M2") == b"MSA|AA|M2"  # the same connection, its lone CR skipped
    assert peer.received == [b"MSH|M1", b"MSH|M2"]
    client.close()


def test_a_late_reply_is_never_read_as_the_next_messages(receiver):
    peer = receiver(send(frame(b"MSA|AA|LATE"), delay=0.5), send(frame(b"MSA|AA|M2")))
    client = MllpClient(("127.0.0.1", peer.port), timeout=0.2)

    with pytest.raises(MllpError, match=r"^no acknowledgement within 0.2 s$"):
        client.exchange(b"MSH|M1")
    assert client.sock is None  # closed: the late reply goes nowhere
    client.timeout = 2.0
    assert client.exchange(b"MSH|M2") == b"MSA|AA|M2"
    client.close()


def test_a_connection_closed_before_the_reply(receiver):
    peer = receiver(half_then_hang_up)
    client = MllpClient(("127.0.0.1", peer.port), timeout=2.0)

    with pytest.raises(MllpError, match=r"^connection closed by the receiver$"):
        client.exchange(b"MSH|M1")
    assert client.sock is None
    with pytest.raises(MllpError, match=r"^cannot connect: "):
        MllpClient(("127.0.0.1", free_port()), timeout=0.5).exchange(b"MSH|")


def test_a_reply_over_the_limit(receiver):
    peer = receiver(send(frame(b"MSA|AA|" + b"x" * 100)))
    client = MllpClient(("127.0.0.1", peer.port), timeout=2.0, max_reply_bytes=50)

    with pytest.raises(MllpError, match=r"^reply of 107 bytes, over 50$"):
        client.exchange(b"MSH|M1")
    assert client.sock is None


def test_ack_parse():
    assert ack_parse(b"MSH|^~\\&|AM|||||||ACK|1|P|2.6\rMSA|AE|ICU7\rERR||||E|||why") == Ack(
        "AE", "ICU7", "why", err="ERR||||E|||why"
    )
    assert ack_parse(b"MSH|^~\\&|GW|||||ACK|1|P|2.6\r\nMSA|AR|M9|too long\r\n") == Ack(
        "AR", "M9", "too long"
    )
    err = "ERR||OBX^1^5|102^Data type error^HL70357|E"
    assert ack_parse(b"MSH|^~\\&|GW|||||ACK|1|P|2.6\rMSA|AE|M3\r" + err.encode()) == Ack(
        "AE", "M3", "102^Data type error^HL70357", err=err
    )
    with pytest.raises(ValueError, match="not an acknowledgement"):
        ack_parse(b"garbage")
