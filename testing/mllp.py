"""A small MLLP receiver for the tests (a gateway, an alarm manager): a thread accepting
connections on 127.0.0.1 and a thread for each, reading frames with core.mllp.FrameReader.
A subclass says what to do with each message (`reply`); `stop()` ends the server and every
connection within 0.1 s (a receiver gone, as a client sees it)."""

import socket
import threading

from core.mllp import FrameReader


class MllpReceiver:
    def __init__(self, *, port: int = 0) -> None:
        self.server = socket.create_server(("127.0.0.1", port))
        self.port = self.server.getsockname()[1]
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def reply(self, conn: socket.socket, payload: bytes) -> bool:
        """Answer one message on its connection; False to hang up."""
        raise NotImplementedError

    def stop(self) -> None:
        self.closed.set()
        self.server.close()
        self.thread.join(2)

    def _serve(self) -> None:
        self.server.settimeout(0.1)
        while not self.closed.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        reader = FrameReader(max_bytes=2**20)
        conn.settimeout(0.1)
        with conn:
            while not self.closed.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                for message in reader.feed(chunk):
                    if not self.reply(conn, message.payload):
                        return
