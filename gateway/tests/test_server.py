"""The MLLP server: answers in order on each connection, AA only after the broker has the
readings, AR for what cannot be handled or delivered, never a dropped or hung connection."""

import asyncio
import contextlib
import json
import logging
import queue
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hl7
import pytest
from django.core.management import CommandError, call_command
from hl7.client import MLLPClient
from hl7apy.core import Message
from hl7apy.parser import parse_message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.kafka import producer_create
from core.metrics import gateway_metrics
from core.mllp import FrameReader, frame_encode
from gateway.outcome import Hl7Error, Outcome
from gateway.server import Hl7Gateway
from testing.broker import KafkaTopics
from testing.devservers import free_port
from testing.processes import json_lines, start_manage, wait_for_log
from vitals.tests.fakes import FakeProducer


class PolledProducer(FakeProducer):
    """vitals' FakeProducer with its delivery reports served by poll(), as librdkafka's are
    (the gateway polls from a thread of its own)."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.RLock()

    def produce(self, *args, **kwargs) -> None:
        with self.lock:
            super().produce(*args, **kwargs)

    def flush(self, timeout: float | None = None) -> int:
        with self.lock:
            return super().flush(timeout)

    def poll(self, timeout: float = 0) -> int:
        self.flush()
        time.sleep(0.001)
        return 0


def oru(control_id: str, patient: str = "12345") -> str:
    return (
        "MSH|^~\\&|GE_GATEWAY^0019B9FFFE000001^EUI-64|GE|ICU-MONITOR|HOSP|20261203144500+0100"
        f"||ORU^R01^ORU_R01|{control_id}|P|2.6\r"
        f"PID|||{patient}^^^HOSP^MR||Hopper^Grace\r"
        "OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.1|72|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R"
    )


@pytest.fixture
def stub_handlers(monkeypatch):
    """PCD-01 and ADT handlers standing in for the real ones: an ORU^R01 gives two readings
    keyed by its patient, whose values name its control id; an ADT an AE."""

    def oru_handle(message, *, received_at):
        key = str(message.segment("PID")[3]).split("^")[0].encode()
        control_id = str(message.segment("MSH")[10])
        values = [json.dumps({"control_id": control_id, "n": n}).encode() for n in (1, 2)]
        return Outcome(code="AA", messages=[(key, v) for v in values])

    def adt_handle(message):
        return Outcome(code="AE", errors=[Hl7Error("204", "no bed X", "PV1", 1, 3, 3)])

    monkeypatch.setattr("gateway.pcd01.oru_handle", oru_handle)
    monkeypatch.setattr("gateway.adt.adt_handle", adt_handle)


@contextmanager
def gateway_running(producer, **options) -> Iterator[int]:
    """A gateway on a free loopback port in a thread, stopped (and checked stopped) after."""
    options = {"topic": "vitals", "max_message_bytes": 2**20, "drain_timeout": 5, **options}
    gateway = Hl7Gateway(producer=producer, **options)
    stop, ready = threading.Event(), queue.Queue()
    thread = threading.Thread(
        target=gateway.serve,
        kwargs={"host": "127.0.0.1", "port": 0, "stop": stop, "ready": ready.put},
    )
    thread.start()
    try:
        yield ready.get(timeout=10)[1]
    finally:
        stop.set()
        thread.join(20)
        assert not thread.is_alive()


def acks_read(sock: socket.socket, count: int, timeout: float = 10) -> list[list[str]]:
    """The next `count` ACKs on the socket, each as its segments."""
    reader, acks = FrameReader(max_bytes=2**20), []
    sock.settimeout(timeout)
    while len(acks) < count:
        data = sock.recv(65536)
        assert data, f"connection closed after {len(acks)} of {count} ACKs"
        acks += [f.payload.decode().split("\r") for f in reader.feed(data)]
    return acks


def msa(ack: list[str]) -> str:
    return next(s for s in ack if s.startswith("MSA|"))


@pytest.mark.e2e
def test_aa_comes_after_the_readings_are_on_the_topic(kafka: KafkaTopics, stub_handlers):
    producer = producer_create()
    # python-hl7's own client
    with gateway_running(producer, topic=kafka.topic) as port, MLLPClient("127.0.0.1", port) as c:
        ack = hl7.parse(c.send_message(oru("GE-1")).decode().strip("\x0b\x1c\r"))
    assert (str(ack.segment("MSA")[1]), str(ack.segment("MSA")[2])) == ("AA", "GE-1")
    assert str(ack.segment("MSH")[9]) == "ACK^R01^ACK"
    on_topic = [(m.key(), json.loads(m.value())) for m in kafka.read()]
    assert on_topic == [
        (b"12345", {"control_id": "GE-1", "n": 1}),
        (b"12345", {"control_id": "GE-1", "n": 2}),
    ]


def test_an_unreachable_broker_gets_an_ar_never_an_aa(stub_handlers):
    producer = producer_create(
        **{"bootstrap.servers": f"127.0.0.1:{free_port()}", "message.timeout.ms": 500}
    )
    failures = gateway_metrics().failures.labels("_MSG_TIMED_OUT")
    before = failures._value.get()
    with gateway_running(producer) as port, socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(frame_encode(oru("GE-2")))
        [ack] = acks_read(s, 1)
    assert ack[1:] == ["MSA|AR|GE-2", "ERR|||207^not delivered to the broker; resend^HL70357|E"]
    assert failures._value.get() - before == 2


def test_one_connection_is_answered_in_order_and_kept_through_bad_messages(stub_handlers):
    producer = PolledProducer()
    frames = [
        frame_encode(oru("M1")),
        b"junk between frames",
        frame_encode("this is no HL7"),
        frame_encode(oru("M3") + "\rNTE|1||" + "x" * 3000),  # over the limit below
        frame_encode("MSH|^~\\&|ADT|H|||20261203||ADT^A04|M4|P|2.5"),
        frame_encode("MSH|^~\\&|ADT|H|||20261203||ADT^A02|M5|P|2.5\nPID|||1\nPV1||I|ICU^^X"),
        frame_encode(oru("M6", patient="777").replace("\r", "\r\n")),
    ]
    with (
        gateway_running(producer, max_message_bytes=2000) as port,
        socket.create_connection(("127.0.0.1", port)) as s,
    ):
        s.sendall(b"".join(frames))  # pipelined: all before the first ACK
        acks = acks_read(s, 6)
        s.sendall(frame_encode(oru("M7")))  # still open
        [last] = acks_read(s, 1)
    assert [ack[1:] for ack in acks] == [
        ["MSA|AA|M1"],
        ["MSA|AR|", "ERR|||100^the message does not start with a readable MSH^HL70357|E"],
        [
            "MSA|AR|M3",
            "ERR|||207^message of 3241 bytes, over the limit of 2000 "
            "(HL7_MAX_MESSAGE_BYTES)^HL70357|E",
        ],
        ["MSA|AR|M4", "ERR||MSH^1^9^^2|201^unsupported event A04 of ADT^HL70357|E"],
        ["MSA|AE|M5", "ERR||PV1^1^3^^3|204^no bed X^HL70357|E"],
        ["MSA|AA|M6"],
    ]
    assert msa(last) == "MSA|AA|M7"
    assert [(key, json.loads(value)["control_id"]) for _, key, value, _ in producer.produced] == [
        (b"12345", "M1"),
        (b"12345", "M1"),
        (b"777", "M6"),
        (b"777", "M6"),
        (b"12345", "M7"),
        (b"12345", "M7"),
    ]


def test_a_message_written_by_hl7apy_is_answered_and_counted(stub_handlers):
    """A second, independent HL7 implementation writes the message and reads the ACK."""
    message = Message("ADT_A01", version="2.5")
    message.msh.msh_3 = "ADT_SYS"
    message.msh.msh_4 = "HOSP"
    message.msh.msh_9 = "ADT^A01^ADT_A01"
    message.msh.msh_10 = "HL7APY-1"
    message.msh.msh_11 = "P"
    message.pid.pid_3 = "555^^^HOSP^MR"
    message.pv1.pv1_3 = "ICU^^X"
    answered = gateway_metrics().messages.labels("ADT^A01", "AE")
    before = answered._value.get()
    with gateway_running(PolledProducer()) as port, MLLPClient("127.0.0.1", port) as client:
        raw = client.send_message(message.to_er7()).decode().strip("\x0b\x1c\r")
    ack = parse_message(raw)
    assert ack.msh.msh_5.to_er7() == "ADT_SYS"
    assert ack.msh.msh_9.to_er7() == "ACK^A01^ACK"
    assert ack.msh.msh_12.to_er7() == "2.5"
    assert ack.msa.to_er7() == "MSA|AE|HL7APY-1"
    assert ack.err.to_er7() == "ERR||PV1^1^3^^3|204^no bed X^HL70357|E"
    assert answered._value.get() - before == 1


def test_200_connections_at_once_each_get_their_acks_in_order(stub_handlers):
    async def monitor(port: int, bed: int) -> list[str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(frame_encode(oru(f"B{bed}-{n}")) for n in range(3)))
        await writer.drain()
        frames, acks = FrameReader(max_bytes=2**20), []
        while len(acks) < 3:
            data = await asyncio.wait_for(reader.read(65536), 30)
            assert data
            acks += [msa(f.payload.decode().split("\r")) for f in frames.feed(data)]
        writer.close()
        await writer.wait_closed()
        return acks

    async def ward(port: int) -> list[list[str]]:
        return await asyncio.gather(*(monitor(port, bed) for bed in range(200)))

    connections = gateway_metrics().connections
    producer = PolledProducer()
    with gateway_running(producer) as port:
        answers = asyncio.run(ward(port))
        deadline = time.monotonic() + 5
        while connections._value.get() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert connections._value.get() == 0
    assert answers == [[f"MSA|AA|B{bed}-{n}" for n in range(3)] for bed in range(200)]
    assert len(producer.produced) == 200 * 3 * 2


def test_a_client_gone_mid_message_leaves_nothing_behind(stub_handlers, caplog):
    producer = PolledProducer()
    with caplog.at_level(logging.INFO, logger="gateway.server"), gateway_running(producer) as port:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(frame_encode(oru("HALF"))[:-30])
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(frame_encode(oru("WHOLE")))
            [ack] = acks_read(s, 1)
    assert msa(ack) == "MSA|AA|WHOLE"
    assert [json.loads(value)["control_id"] for _, _, value, _ in producer.produced] == [
        "WHOLE",
        "WHOLE",
    ]
    assert "HL7 client left in the middle of a message" in caplog.messages


ANY = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def test_any_bytes_give_an_ack_per_frame_or_silence_never_a_crash_or_a_hang(stub_handlers):
    pieces = st.one_of(
        st.binary(max_size=30),
        st.sampled_from(
            [
                b"\x0b",
                b"\x1c\r",
                b"MSH|^~\\&|",
                b"|ORU^R01|",
                b"|ADT^A01|",
                b"\r",
                b"PID|||",
                b"\xff\xfe",
                "é".encode("iso-8859-1"),
            ]
        ),
    )
    producer = PolledProducer()
    with gateway_running(producer, max_message_bytes=300) as port:

        @ANY
        @given(stream=st.lists(pieces, max_size=20).map(b"".join))
        def check(stream: bytes) -> None:
            expected = len(FrameReader(max_bytes=300).feed(stream))
            with socket.create_connection(("127.0.0.1", port)) as s:
                # Then a last message: a VT ends whatever the stream left unfinished.
                s.sendall(stream + frame_encode(oru("END")))
                acks = acks_read(s, expected + 1, timeout=10)
            assert all(msa(ack)[:7] in ("MSA|AA|", "MSA|AE|", "MSA|AR|") for ack in acks)
            assert all(a[0].startswith("MSH|") for a in acks)
            assert msa(acks[-1]) == "MSA|AA|END"

        check()


def test_a_port_in_use_is_one_line_before_the_broker(settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{free_port()}"  # nothing there: not reached
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CommandError) as error:
            call_command("run_hl7_gateway", "--port", str(port))
    assert str(error.value).startswith(f"127.0.0.1:{port} is in use by pid ")
    assert str(error.value).endswith("; nothing was started. Give the gateway another --port.")


@pytest.mark.parametrize("target", ["alarms.example", "host:port", ":2575", "h:0", "h:70000"])
def test_forward_alarms_wants_host_and_port(target):
    with pytest.raises(CommandError, match=f"--forward-alarms '{target}' is not HOST:PORT."):
        call_command("run_hl7_gateway", "--forward-alarms", target)


@pytest.mark.e2e
def test_the_command_answers_and_stops_cleanly_on_sigterm(kafka: KafkaTopics, tmp_path: Path):
    """With --processes 2: a second process on the port (SO_REUSEPORT), stopped with the first."""
    port, log = free_port(), tmp_path / "gateway.log"
    process = start_manage(
        "run_hl7_gateway", "--port", str(port), "--processes", "2", log=log, **kafka.env()
    )
    try:
        deadline = time.monotonic() + 30
        while log.read_text().count("HL7 gateway listening") < 2 and time.monotonic() < deadline:
            wait_for_log(log, "HL7 gateway listening", process, timeout=30)
            time.sleep(0.1)
        with MLLPClient("127.0.0.1", port) as client:
            ack = client.send_message("MSH|^~\\&|ADT|H|||20261203||ADT^A04|C1|P|2.5").decode()
        assert "\rMSA|AR|C1\r" in ack
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        process.kill()
    lines = json_lines(log.read_text())
    [answered] = [line for line in lines if line["message"] == "HL7 message answered"]
    assert (answered["control_id"], answered["type"], answered["ack"]) == ("C1", "ADT^A04", "AR")
    assert [line["port"] for line in lines if line["message"] == "HL7 gateway listening"] == [
        port,
        port,
    ]
    stopped = [line for line in lines if line["message"] == "HL7 gateway stopped"]
    assert sorted(str(line["messages"]) for line in stopped) == ["{'other AR': 1}", "{}"]
    assert [line["remaining"] for line in stopped] == [0, 0]


def test_a_message_not_finished_in_time_closes_its_connection_idle_ones_stay(stub_handlers):
    # Each connection may hold an unfinished frame of up to HL7_MAX_MESSAGE_BYTES: thousands
    # of connections each sending 1 MiB - 1 and a byte a minute held gigabytes for ever.
    producer = PolledProducer()
    with gateway_running(producer, frame_timeout=0.5) as port:
        stalled = socket.create_connection(("127.0.0.1", port))
        idle = socket.create_connection(("127.0.0.1", port))
        with stalled, idle:
            idle.sendall(frame_encode(oru("FIRST")))
            assert msa(acks_read(idle, 1)[0]) == "MSA|AA|FIRST"
            stalled.sendall(frame_encode(oru("HALF"))[:-30])
            started = time.monotonic()
            for _ in range(3):  # a byte now and then does not keep it open
                time.sleep(0.2)
                with contextlib.suppress(OSError):
                    stalled.sendall(b"X")
            stalled.settimeout(5)
            assert stalled.recv(100) == b""
            assert time.monotonic() - started < 2
            idle.sendall(frame_encode(oru("LATER")))
            assert msa(acks_read(idle, 1)[0]) == "MSA|AA|LATER"
