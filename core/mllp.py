"""MLLP (HL7 v2 Minimal Lower Layer Protocol): VT (0x0b) message FS (0x1c) CR (0x0d), the one
implementation the gateway's server (gateway/server.py), the alarm forwarder
(gateway/forwarder.py), the emulator's `--via-hl7` (vitals/emulation.py) and the benchmark
(bench/hl7_gateway.py) all use. It lives in core, the bottom layer, so that vitals may use it.

Pure functions and a small incremental reader with no I/O, so that the same frames come out
however the bytes are split by the network (core/tests/test_mllp.py checks it over arbitrary
byte streams and splits):
- bytes outside a frame (before a VT) are ignored and counted (`FrameReader.junk_bytes`);
- a VT inside a frame starts a new frame: the unfinished one is dropped and counted as junk
  (a monitor that reconnected its framing after a fault);
- FS ends a frame; the CR that should follow it is swallowed if present (some senders omit it);
- a frame over `max_bytes` is not kept: it comes out `oversized` with only its first
  `HEAD_BYTES` (enough for its MSH, so that the AR can name its control id), once its FS came.

The text of a frame is UTF-8 if it decodes as such, else ISO-8859-1 (every byte is a
character: an older gateway's Latin-1 names arrive intact, nothing is refused for its
encoding); segment separators CR, LF or CRLF all become CR before parsing.

`MllpClient` is the blocking sender (one message, then its reply, within a timeout) and
`ack_parse` reads the reply: an HL7 acknowledgement (MSA, ERR).
"""

import socket
import time
from dataclasses import dataclass

import hl7

VT = 0x0B
FS = 0x1C
CR = 0x0D

START = bytes([VT])
END = bytes([FS, CR])

# What an oversized frame keeps of its start: its MSH, for the AR's MSA-2 and swapped names.
HEAD_BYTES = 4096


@dataclass(frozen=True)
class Frame:
    """One framed message: its bytes (only the first HEAD_BYTES when `oversized`) and its size."""

    payload: bytes
    size: int
    oversized: bool = False


class FrameReader:
    """Feed it bytes as they arrive; it returns the frames completed by them, in order."""

    def __init__(self, *, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.junk_bytes = 0  # bytes ignored: outside any frame, or of an abandoned frame
        self._in_frame = False
        self._after_fs = False
        self._buffer = bytearray()
        self._size = 0
        self._oversized = False

    @property
    def partial(self) -> bool:
        """Whether a frame has started and not ended (a client gone now leaves it unanswered)."""
        return self._in_frame

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        i, n = 0, len(data)
        while i < n:
            if self._after_fs:
                self._after_fs = False
                if data[i] == CR:
                    i += 1
                    continue
            if not self._in_frame:
                start = data.find(VT, i)
                if start < 0:
                    self.junk_bytes += n - i
                    break
                self.junk_bytes += start - i
                self._frame_start()
                i = start + 1
                continue
            end = data.find(FS, i)
            restart = data.find(VT, i, end if end >= 0 else n)
            if restart >= 0:
                # A new start before this frame's end: the frame is abandoned.
                self.junk_bytes += 1 + self._size + restart - i
                self._frame_start()
                i = restart + 1
                continue
            if end < 0:
                self._append(data[i:])
                break
            self._append(data[i:end])
            frames.append(self._frame_end())
            i = end + 1
        return frames

    def _frame_start(self) -> None:
        self._in_frame = True
        self._buffer = bytearray()
        self._size = 0
        self._oversized = False

    def _append(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._oversized:
            return
        if self._size > self.max_bytes:
            self._oversized = True
            self._buffer += chunk
            del self._buffer[HEAD_BYTES:]
            return
        self._buffer += chunk

    def _frame_end(self) -> Frame:
        frame = Frame(payload=bytes(self._buffer), size=self._size, oversized=self._oversized)
        self._in_frame = False
        self._after_fs = True
        self._buffer = bytearray()
        self._size = 0
        return frame


def frame(message: bytes) -> bytes:
    """The MLLP frame of a message's bytes."""
    return START + message + END


def frame_encode(text: str) -> bytes:
    """The MLLP frame of a message's text (UTF-8)."""
    return frame(text.encode("utf-8"))


def text_decode(payload: bytes) -> str:
    """The text of a frame: UTF-8, else ISO-8859-1 (which decodes any bytes)."""
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return payload.decode("iso-8859-1")


def segments_normalise(text: str) -> str:
    """CR, LF or CRLF between segments all become CR; blank lines and the trailing separator
    are dropped (python-hl7 splits on CR only)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\r".join(line for line in lines if line.strip())


class MllpError(Exception):
    """No reply: the connection failed, closed or timed out, or the reply was over the limit."""


class MllpClient:
    """One connection to a receiver, kept open between messages and opened again after a
    failure: send one message, read its framed reply (bytes outside a frame are skipped)
    within `timeout` seconds. After any failure the connection is closed, so that a late
    reply is never read as the next message's."""

    def __init__(
        self, target: tuple[str, int], *, timeout: float, max_reply_bytes: int = 2**20
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.max_reply_bytes = max_reply_bytes
        self.sock: socket.socket | None = None

    def connect(self) -> None:
        """Open the connection unless it is open (`exchange` does it too)."""
        if self.sock is not None:
            return
        try:
            self.sock = socket.create_connection(self.target, timeout=self.timeout)
        except OSError as exc:
            self.close()
            raise MllpError(f"cannot connect: {exc}") from exc

    def exchange(self, message: bytes) -> bytes:
        """Send one message and return the reply's content (without its framing)."""
        self.connect()
        deadline = time.monotonic() + self.timeout
        reader = FrameReader(max_bytes=self.max_reply_bytes)
        try:
            self.sock.settimeout(self.timeout)
            self.sock.sendall(frame(message))
            while True:
                self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("connection closed by the receiver")
                if frames := reader.feed(chunk):
                    break
        except OSError as exc:
            # A late answer must never be read as the next message's: start afresh.
            self.close()
            if isinstance(exc, TimeoutError):
                raise MllpError(f"no acknowledgement within {self.timeout:g} s") from exc
            raise MllpError(str(exc) or type(exc).__name__) from exc
        reply = frames[0]
        if reply.oversized:
            self.close()
            raise MllpError(f"reply of {reply.size} bytes, over {self.max_reply_bytes}")
        return reply.payload

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None


@dataclass(frozen=True)
class Ack:
    code: str  # MSA-1
    control_id: str  # MSA-2
    # MSA-3, else the first ERR's user message (ERR-8), diagnostic (ERR-7) or code (ERR-3)
    text: str
    err: str = ""  # the first ERR segment as it came, "" if none


def ack_parse(reply: bytes) -> Ack:
    """MSA-1, MSA-2 and why, from an acknowledgement; ValueError if it is none."""
    try:
        message = hl7.parse(segments_normalise(reply.decode("utf-8", errors="replace")))
        msa = message.segment("MSA")
    except (KeyError, IndexError, hl7.HL7Exception) as exc:
        raise ValueError(f"not an acknowledgement: {reply[:80]!r}") from exc

    def field(segment, index: int) -> str:
        return str(segment[index]) if len(segment) > index else ""

    try:
        err = message.segment("ERR")
    except KeyError:
        err = None
    text = field(msa, 3)
    if not text and err is not None:
        text = field(err, 8) or field(err, 7) or field(err, 3)
    return Ack(
        code=field(msa, 1),
        control_id=field(msa, 2),
        text=text,
        err="" if err is None else str(err),
    )
