"""Real gateway daemons for the fleet benchmarks: their config, their start, a cuttable network.

``bench_fleet`` (readings) and ``bench_access_fleet`` (access lists) both run
tens of ``python -m gateway run`` daemons, each with its own data_dir, spread
over the three RabbitMQ nodes with failover lists; this is what they share.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from tests.broker import free_port
from tests.daemon import Daemon, write_config


def spread(urls: list[str], gate: int) -> list[str]:
    """The failover list of gate ``gate``: the nodes rotated, so the fleet spreads over them."""
    first = gate % len(urls)
    return urls[first:] + urls[:first]


def gateway_config(
    path: Path,
    *,
    site: str,
    gateway: str,
    brokers: list[str],
    devices: list[dict[str, Any]],
    gateway_extra: dict[str, Any] | None = None,
    **sections: Any,
) -> Path:
    """A fleet gate's config: MQTT 3.1.1, short reconnect backoff, failback to its first node."""
    return write_config(
        path,
        brokers=brokers,
        devices=devices,
        gateway={"site": site, "id": gateway, "data_dir": "data", **(gateway_extra or {})},
        mqtt={
            "brokers": brokers,
            "protocol": "3.1.1",
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 4.0,
            "keepalive_s": 10,
            "failback_s": 30,
        },
        **sections,
    )


async def start_all(daemons: list[Daemon], *, timeout: float = 180.0) -> None:
    """Start every daemon and wait until each is connected to a broker."""
    for daemon in daemons:
        daemon.start()
    for daemon in daemons:
        await daemon.wait_for_log("mqtt connected", timeout)


class CuttableProxy:
    """A loopback TCP proxy to one node; ``cut`` drops and blackholes, ``mend`` restores."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop_all()
        # Let the handlers see their connections end: a handler still running
        # when the loop closes is cancelled, which Python 3.11 logs as an error.
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)

    def sever(self) -> None:
        """Cut the network: every connection dropped, new ones accepted and left silent."""
        self.cut = True
        self.drop_all()

    def mend(self) -> None:
        self.cut = False

    def drop_all(self) -> None:
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)
        self._writers.add(writer)
        if self.cut:  # a cut network: the connect "succeeds" locally, nothing ever answers
            with contextlib.suppress(Exception):
                await reader.read()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    if self.cut:
                        break
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.discard(writer)
        self._writers.discard(up_writer)
