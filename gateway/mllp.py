"""MLLP framing (HL7 v2 Minimal Lower Layer Protocol): VT (0x0b) message FS (0x1c) CR (0x0d).

Pure functions and a small incremental reader with no I/O, so that the same frames come out
however the bytes are split by the network (gateway/tests/test_mllp.py checks it over arbitrary
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
"""

from dataclasses import dataclass

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


def frame_encode(text: str) -> bytes:
    """The MLLP frame of a message's text (UTF-8)."""
    return START + text.encode("utf-8") + END


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
