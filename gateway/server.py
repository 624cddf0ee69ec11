"""The MLLP server: many monitors' gateways at once, each connection answered in order.

asyncio for the connections (one coroutine each: 200 idle monitors cost 200 small objects, not
200 threads), a small thread pool for the handlers (python-hl7 parsing and Django's sync ORM),
and the project's producer (core/kafka.py: acks=all, idempotent) for the readings. A message's
ACK is written only when every one of its readings has a successful delivery report: AA means
the broker has them all. A delivery that fails (or is not acknowledged within the producer's
`message.timeout.ms`) turns the ACK into an AR (ERR 207 "not delivered to the broker; resend").

Each connection reads frames (core.mllp.FrameReader) and handles them one after the other:
the ACKs of pipelined messages come back in their order, and a monitor's readings reach the
topic in its order. A bad message never closes the connection; a client that leaves in the
middle of a message leaves nothing behind (its unfinished frame is dropped, nothing was
delivered for it). Stopping (`stop` set): no new connections, idle ones are closed, those
handling a message finish the messages they have received and are answered, then the
producer is flushed.
"""

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import KafkaError, KafkaException, Producer

from core.kafka import BrokerOutage
from core.metrics import gateway_metrics
from core.mllp import Frame, FrameReader, frame_encode, segments_normalise, text_decode
from gateway.ack import Header, ack_build
from gateway.dispatch import Handled, message_handle, rejected
from gateway.outcome import Hl7Error, Outcome

logger = logging.getLogger("gateway.server")

READ_BYTES = 65536
SUMMARY_EVERY_S = 30.0
# A message must arrive whole within this time of its first byte (a monitor sends one in
# milliseconds), else its connection is closed: each connection may buffer a message of up to
# HL7_MAX_MESSAGE_BYTES, and many connections each keeping one unfinished, a byte now and
# then, would hold that much memory each for ever. Idle connections (between messages) stay.
FRAME_TIMEOUT_S = 60.0
NOT_DELIVERED = Hl7Error(code="207", text="not delivered to the broker; resend")


@dataclass
class _Connection:
    peer: str
    busy: bool = False


class Hl7Gateway:
    """Serve HL7 v2 over MLLP until `stop` is set (see `serve`)."""

    def __init__(
        self,
        *,
        producer: Producer,
        topic: str,
        max_message_bytes: int,
        workers: int = 4,
        drain_timeout: float = 30.0,
        outage: BrokerOutage | None = None,
        frame_timeout: float = FRAME_TIMEOUT_S,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.max_message_bytes = max_message_bytes
        self.drain_timeout = drain_timeout
        self.frame_timeout = frame_timeout
        self.outage = outage  # told when deliveries succeed again after an outage
        self.metrics = gateway_metrics()
        self.totals: Counter = Counter()  # (type, ack) -> messages, since the last summary
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hl7-handler")
        self._connections: dict[asyncio.Task, _Connection] = {}
        self._stopping = False

    # --- running -----------------------------------------------------------------------------
    def serve(
        self,
        *,
        host: str,
        port: int,
        stop: threading.Event,
        ready: Callable[[tuple[str, int]], None] | None = None,
        reuse_port: bool = False,
    ) -> None:
        """Listen on host:port (0: any free port) until `stop` is set; `ready` is called with
        the bound address once connections are accepted. OSError when the address cannot be
        bound (e.g. EADDRINUSE), before `ready`. `reuse_port`: SO_REUSEPORT, for several
        processes on one port (the kernel spreads the connections; each stays with one)."""
        polling = threading.Event()
        poller = threading.Thread(
            target=self._poll, args=(polling,), name="hl7-producer-poll", daemon=True
        )
        poller.start()
        try:
            asyncio.run(self._serve(host, port, stop, ready, reuse_port))
        finally:
            remaining = self.producer.flush(10)
            polling.set()
            poller.join(5)
            self._pool.shutdown(wait=True)
            self.log_totals("HL7 gateway stopped", remaining=remaining)

    def _poll(self, stopped: threading.Event) -> None:
        """Serve the producer's delivery reports (they resolve the messages' futures)."""
        while not stopped.is_set():
            self.producer.poll(0.05)

    async def _serve(
        self,
        host: str,
        port: int,
        stop: threading.Event,
        ready: Callable[[tuple[str, int]], None] | None,
        reuse_port: bool,
    ) -> None:
        server = await asyncio.start_server(
            self._connection, host, port, reuse_address=True, reuse_port=reuse_port or None
        )
        address = server.sockets[0].getsockname()[:2]
        logger.info(
            "HL7 gateway listening",
            extra={"host": address[0], "port": address[1], "topic": self.topic},
        )
        if ready is not None:
            ready(address)
        last_summary = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.1)
            if time.monotonic() - last_summary >= SUMMARY_EVERY_S:
                self.log_totals("HL7 gateway totals")
                last_summary = time.monotonic()
        self._stopping = True
        server.close()
        for task, connection in list(self._connections.items()):
            if not connection.busy:
                task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=self.drain_timeout)
        await server.wait_closed()

    def log_totals(self, message: str, **extra: object) -> None:
        totals = {f"{kind} {ack}": n for (kind, ack), n in sorted(self.totals.items())}
        logger.info(message, extra={"messages": totals, **extra})
        self.totals.clear()

    # --- one connection ----------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername") or ("?", 0)
        connection = _Connection(peer=f"{peername[0]}:{peername[1]}")
        task = asyncio.current_task()
        self._connections[task] = connection
        self.metrics.connections.inc()
        frames = FrameReader(max_bytes=self.max_message_bytes)
        junk = 0
        frame_started: float | None = None
        try:
            while not self._stopping:
                deadline = None
                if frames.partial:
                    frame_started = frame_started or time.monotonic()
                    deadline = frame_started + self.frame_timeout - time.monotonic()
                try:
                    data = await asyncio.wait_for(reader.read(READ_BYTES), deadline)
                except TimeoutError:
                    logger.warning(
                        "HL7 message not finished in time; connection closed",
                        extra={"peer": connection.peer, "seconds": self.frame_timeout},
                    )
                    break
                if not data:
                    if frames.partial:
                        logger.info(
                            "HL7 client left in the middle of a message",
                            extra={"peer": connection.peer},
                        )
                    break
                completed = frames.feed(data)
                if completed or not frames.partial:
                    frame_started = None  # the unfinished frame, if any, began in `data`
                received = (datetime.now(UTC), time.perf_counter())
                if frames.junk_bytes > junk:
                    self.metrics.junk.inc(frames.junk_bytes - junk)
                    junk = frames.junk_bytes
                connection.busy = bool(completed)
                for frame in completed:
                    ack = await self.frame_answer(frame, peer=connection.peer, received=received)
                    writer.write(ack)
                    await writer.drain()
                connection.busy = False
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:  # a bug: logged, this connection closed, the others unharmed
            logger.exception("HL7 connection failed", extra={"peer": connection.peer})
        finally:
            del self._connections[task]
            self.metrics.connections.dec()
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    # --- one message: the single step --------------------------------------------------------
    async def frame_answer(
        self, frame: Frame, *, peer: str = "", received: tuple[datetime, float] | None = None
    ) -> bytes:
        """The MLLP-framed ACK of one frame, after its readings are delivered. `received`: when
        its last byte arrived (wall clock, perf_counter); now if not given. A pipelined
        message waits for those before it: its time to ACK counts from its receipt."""
        received_at, started = received or (datetime.now(UTC), time.perf_counter())
        text = segments_normalise(text_decode(frame.payload))
        if frame.oversized:
            handled = Handled(
                Header.read(text),
                rejected(
                    "207",
                    f"message of {frame.size} bytes, over the limit of {self.max_message_bytes} "
                    "(HL7_MAX_MESSAGE_BYTES)",
                ),
            )
        else:
            handled = await asyncio.get_running_loop().run_in_executor(
                self._pool, functools.partial(_handle, text=text, received_at=received_at)
            )
        outcome = handled.outcome
        if outcome.messages and outcome.code != "AR":
            errors = await self.deliver(outcome.messages)
            if errors:
                outcome = Outcome(code="AR", errors=[NOT_DELIVERED], counts=outcome.counts)
                logger.error(
                    "readings not delivered to the broker; answered AR",
                    extra={"control_id": handled.header.control_id, "errors": errors},
                )
        ack = ack_build(header=handled.header, code=outcome.code, errors=outcome.errors)
        kind = handled.message_type if handled.header.readable else "other"
        kind = kind if kind in KNOWN_TYPES else "other"
        self.totals[(kind, outcome.code)] += 1
        self._answered(kind, outcome.code).inc()
        self.metrics.ack_seconds.observe(time.perf_counter() - started)
        level = logging.DEBUG if outcome.code == "AA" else logging.WARNING
        if logger.isEnabledFor(level):  # at thousands a second, not even the dict when off
            logger.log(
                level,
                "HL7 message answered",
                extra={
                    "peer": peer,
                    "control_id": handled.header.control_id,
                    "type": handled.message_type,
                    "ack": outcome.code,
                    "errors": [_error_text(e) for e in outcome.errors],
                    "counts": dict(outcome.counts),
                    "bytes": frame.size,
                },
            )
        return frame_encode(ack)

    @functools.cache  # noqa: B019 (one gateway per process; a handful of labels)
    def _answered(self, kind: str, code: str):
        return self.metrics.messages.labels(kind, code)

    async def deliver(self, messages: list[tuple[bytes, bytes]]) -> list[str]:
        """Produce the messages to the topic in order and wait for every delivery report;
        return the librdkafka error names of those that failed (empty: all delivered)."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future] = []
        errors: list[str] = []
        for key, value in messages:
            future = loop.create_future()

            def delivered(error: KafkaError | None, _message: object, future=future) -> None:
                with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                    loop.call_soon_threadsafe(_future_set, future, error)

            try:
                self.producer.produce(self.topic, key=key, value=value, on_delivery=delivered)
            except (BufferError, KafkaException) as exc:
                errors.append(type(exc).__name__)
                break
            futures.append(future)
        for error in await asyncio.gather(*futures):
            if error is not None:
                errors.append(error.name())
        if futures and not errors and self.outage is not None:
            self.outage.reachable()
        self.metrics.delivered.inc(len(futures) - len(errors))
        for name in errors:
            self.metrics.failures.labels(name).inc()
        return errors


KNOWN_TYPES = frozenset({"ORU^R01", "ADT^A01", "ADT^A02", "ADT^A03", "ADT^A08"})


def _error_text(error: Hl7Error) -> str:
    """e.g. "204 PV1-3: no bed X", for the logs."""
    where = f" {error.segment}-{error.field}" if error.segment and error.field else ""
    return f"{error.code}{where}: {error.text}"


def _future_set(future: asyncio.Future, error: KafkaError | None) -> None:
    if not future.done():
        future.set_result(error)


def _handle(*, text: str, received_at: datetime) -> Handled:
    """message_handle in a worker thread; whatever it raises is an AR, never a lost answer."""
    try:
        return message_handle(text=text, received_at=received_at)
    except Exception:
        logger.exception("HL7 message not handled")
        return Handled(Header.read(text), rejected("207", "application internal error"))
