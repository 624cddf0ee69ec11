"""HL7 gateway throughput: IHE PCD-01 ORU^R01 messages over MLLP to Kafka, with many monitors.

The real `run_hl7_gateway` runs as a child process (its database a migrated copy, its topic of
its own); this process plays `connections` monitors' gateways at once (asyncio), each sending
its messages one after the other, the next as soon as the previous one's ACK came back, as a
monitor does. Figures: messages acknowledged AA per second (target: 2,000/s, a 200-bed unit at
10 messages a second per bed), the latency from a message's last byte sent to its ACK's
arrival (p50, p99: the gateway's receipt-to-ACK plus loopback), and the gateway's CPU. Every
ACK must be an AA, and the topic must hold every reading: an AA is a delivery.

The gateway's PCD-01 handler (gateway/pcd01.py) is the real one: each message is parsed,
its patient identified (known after the first message: cached), its signs mapped and checked
by the contract's parser, and its reading produced.

examples:
  python -m bench hl7_gateway
  python -m bench hl7_gateway --quick
"""

import asyncio
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bench.common import (
    BASE_DIR,
    Figure,
    World,
    cpu_seconds,
    percentile,
    progress,
    stop,
    topic_create,
)
from core.mllp import FrameReader, frame
from testing.devservers import free_port

# A monitor's pace in the paced phase: a 200-bed unit at 10 messages a second per bed is the
# issue's 2,000 messages/s.
PER_BED_RATE = 10.0


def oru(bed: int, n: int) -> bytes:
    """A PCD-01 ORU^R01 of our own, in the shape monitors' gateways send: the monitor's
    EUI-64 in MSH-3, the patient in PID-3, the bed in PV1-3, one OBR and a few numerics.
    The profile id (MSH-21), OBR-4 and the MDC codes and units are those of the GE B40's
    published PCD-01 examples (its HL7 interface manual 2062665-001, "Sample Messages";
    262688 MDC_DIM_PERCENT and 264928 MDC_DIM_RESP_PER_MIN as in Comen and B40 examples)."""
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S.%f")[:-3] + "+0000"
    eui = f"00A037FFFE{bed:06X}"
    segments = [
        f"MSH|^~\\&|BENCH^{eui}^EUI-64|BENCH|ICU-MONITOR|HOSP|{now}||ORU^R01^ORU_R01"
        f"|B{bed}-{n}|P|2.6|||AL|NE||UNICODE UTF-8|||PCD_DEC_001^IHE PCD"
        "^1.3.6.1.4.1.19376.1.6.1.1.1^ISO",
        f"PID|||BED{bed:04d}^^^BENCH^MR||Bench^Bed{bed}",
        f"PV1||I|ICU^^{bed % 20 + 1}",
        f"OBR|1|{eui}|{eui}|182777000^monitoring of patient^SCT|||{now}",
        f"OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.1|{60 + n % 40}"
        f"|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R|||{now}",
        f"OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.2|97|262688^MDC_DIM_PERCENT^MDC|||||R"
        f"|||{now}",
        f"OBX|3|NM|151562^MDC_RESP_RATE^MDC|1.1.1.3|16|264928^MDC_DIM_RESP_PER_MIN^MDC|||||R"
        f"|||{now}",
    ]
    return frame("\r".join(segments).encode())


def run(
    world: World,
    *,
    engines: list[str],
    connections: int,
    messages: int,
    processes: int,
    paced_seconds: float,
) -> list[Figure]:
    figures = []
    for engine in engines:
        topic = f"bench-hl7-{uuid.uuid4().hex[:8]}"
        topic_create(world.bootstrap, topic)
        port = free_port()
        log = world.workdir / f"hl7-gateway-{engine}.log"
        env = world.env(
            world.database(engine, "hl7"),
            KAFKA_TOPIC=topic,
            KAFKA_DLQ_TOPIC=f"{topic}.dlq",
            KAFKA_ALARMS_TOPIC=f"{topic}.alarms",
        )
        progress(
            f"hl7_gateway ({engine}): {connections} connections, {messages:,} messages, "
            f"--processes {processes}"
        )
        # As `run_hl7_gateway --processes N` runs: N processes on the port (SO_REUSEPORT).
        gateways = []
        with log.open("wb") as out:
            for _ in range(processes):
                gateways.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "manage.py",
                            "run_hl7_gateway",
                            "--port",
                            str(port),
                            "--reuse-port",
                        ],
                        cwd=BASE_DIR,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        try:
            for process in gateways:
                _wait_for_count(log, "HL7 gateway listening", len(gateways), process)
            cpu_before = sum(cpu_seconds(p.pid) for p in gateways)
            started = time.monotonic()
            latencies, codes = asyncio.run(_load(port, connections, messages))
            elapsed = time.monotonic() - started
            cpu = sum(cpu_seconds(p.pid) for p in gateways) - cpu_before
            paced, paced_codes = asyncio.run(_paced(port, connections, PER_BED_RATE, paced_seconds))
        finally:
            statuses = [stop(p) for p in gateways]
        progress(f"hl7_gateway stopped (status {statuses}); {dict(codes)}")
        if codes.get("AA", 0) != messages or set(paced_codes) != {"AA"}:
            raise RuntimeError(
                f"not every message was AA: {codes} {paced_codes}\n{log.read_text()[-2000:]}"
            )
        details = {
            "connections": connections,
            "messages": messages,
            "seconds": round(elapsed, 2),
            "processes": processes,
        }
        paced_details = {
            "connections": connections,
            "rate_per_connection": PER_BED_RATE,
            "messages": len(paced),
            "seconds": paced_seconds,
            "processes": processes,
        }
        figures += [
            Figure("hl7_gateway", "messages acknowledged (AA after Kafka)", messages / elapsed,
                   "messages/s", target=">= 2000", engine=engine, details=details),
            Figure("hl7_gateway", "receipt to ACK p50, saturated", percentile(latencies, 50) * 1000,
                   "ms", engine=engine, details=details),
            Figure("hl7_gateway", "receipt to ACK p99, saturated", percentile(latencies, 99) * 1000,
                   "ms", engine=engine, details=details),
            Figure("hl7_gateway", f"receipt to ACK p50 at {PER_BED_RATE:g}/s a connection",
                   percentile(paced, 50) * 1000, "ms", engine=engine, details=paced_details),
            Figure("hl7_gateway", f"receipt to ACK p99 at {PER_BED_RATE:g}/s a connection",
                   percentile(paced, 99) * 1000, "ms", target="<= 100", engine=engine,
                   details=paced_details),
            Figure("hl7_gateway", "gateway CPU", cpu / elapsed, "cores", engine=engine,
                   details=details),
        ]  # fmt: skip
    return figures


def _wait_for_count(log: Path, text: str, count: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if log.read_text(errors="replace").count(text) >= count:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{text!r} not {count} times in {log}:\n{log.read_text()[-3000:]}")


async def _ack_code(reader: asyncio.StreamReader, frames: FrameReader) -> str:
    """MSA-1 of the next acknowledgement on a connection (one message in flight at a time)."""
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            raise ConnectionError("the gateway closed the connection")
        if acks := frames.feed(chunk):
            return acks[0].payload.split(b"MSA|", 1)[1][:2].decode()


async def _exchange(
    reader,
    writer,
    frames: FrameReader,
    message: bytes,
    latencies: list[float],
    codes: dict[str, int],
) -> None:
    """Send one message, wait for its ACK; record the time from the message's last byte sent
    to the ACK, and the ACK's code."""
    writer.write(message)
    await writer.drain()
    sent = time.monotonic()
    code = await _ack_code(reader, frames)
    latencies.append(time.monotonic() - sent)
    codes[code] = codes.get(code, 0) + 1


async def _paced(
    port: int, connections: int, rate: float, seconds: float
) -> tuple[list[float], dict]:
    """Each connection sends `rate` messages a second on a schedule (a monitor's pace; a late
    ACK delays only that connection's next message) for `seconds`."""
    latencies: list[float] = []
    codes: dict[str, int] = {}
    period = 1 / rate

    async def monitor(bed: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        frames = FrameReader(max_bytes=2**20)
        await asyncio.sleep(period * bed / connections)  # spread over the period
        start = time.monotonic()
        n = 0
        while (due := start + n * period) < start + seconds:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await _exchange(reader, writer, frames, oru(bed, n), latencies, codes)
            n += 1
        writer.close()
        await writer.wait_closed()

    await asyncio.gather(*(monitor(bed) for bed in range(connections)))
    return latencies, codes


async def _load(port: int, connections: int, messages: int) -> tuple[list[float], dict]:
    per_connection = [
        messages // connections + (i < messages % connections) for i in range(connections)
    ]
    latencies: list[float] = []
    codes: dict[str, int] = {}

    async def monitor(bed: int, count: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        frames = FrameReader(max_bytes=2**20)
        for n in range(count):
            await _exchange(reader, writer, frames, oru(bed, n), latencies, codes)
        writer.close()
        await writer.wait_closed()

    await asyncio.gather(*(monitor(bed, count) for bed, count in enumerate(per_connection)))
    return latencies, codes
