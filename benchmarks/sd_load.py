"""A steady producer for bench_sd_card: the real outbox and uplink, fed at a fixed rate.

Run by bench_sd_card under strace; prints the readings' own encoded size at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from benchmarks.common import bench_outbox
from drivers.base import ReadingType, SystemClock, make_reading
from gateway.config import MqttConfig
from gateway.uplink.session import Uplink


class _NoCommands:
    def submit(
        self,
        payload: bytes,
        *,
        response_topic: str | None,
        correlation_data: bytes | None,
        received_mono: float,
    ) -> None:
        """No commands in this load."""


async def main(data_dir: Path, broker: str, rate: float, seconds: float) -> None:
    clock = SystemClock()
    outbox = bench_outbox(data_dir, clock, max_bytes=None)
    await outbox.open()
    uplink = Uplink(
        MqttConfig(brokers=[broker]),
        site="changqing",
        gateway_id="north-gate-1",
        topic_root="estates/changqing/gateways/north-gate-1",
        client_id="changqing-north-gate-1",
        outbox=outbox,
        results=None,
        commands=_NoCommands(),
        device_states=dict,
    )
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(outbox.run()), group.create_task(uplink.run())]
        await asyncio.sleep(1.0)
        print("READY", flush=True)
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        while loop.time() - start < seconds:
            n += 1
            data = {"celsius": round(36.0 + (n % 20) / 10, 1), "threshold": 37.3, "fever": False}
            reading = make_reading(
                clock, f"temp-gate-{n % 4 + 1}", ReadingType.TEMPERATURE_BODY, data
            )
            outbox.put(reading)
            await asyncio.sleep(max(0.0, start + n / rate - loop.time()))
        await outbox.commit()
        print("DONE", n, flush=True)
        while sum(outbox.stats.backlog.values()):
            await asyncio.sleep(0.05)
        print("SENT", outbox.stats.fetched_bytes, flush=True)
        await uplink.shutdown()
        await tasks[1]
        tasks[0].cancel()
    await outbox.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("broker")
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    asyncio.run(main(args.data_dir, args.broker, args.rate, args.seconds))
    sys.exit(0)
