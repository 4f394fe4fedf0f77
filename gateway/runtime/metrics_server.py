"""The metrics endpoint: ``GET /metrics`` on a small asyncio HTTP server.

It serves what ``gateway.runtime.metrics.GatewayCollector`` collects, on the
event loop like everything else (see that module for why not
``prometheus_client``'s own server). It is reachable by whatever can reach its
address, so it caps what a client can hold: at most ``max_connections`` at
once, each closed when it has not sent its whole request within
``idle_timeout_s``; at the cap, the oldest connection still waiting for its
request makes room for the newcomer (issue 9 item 11).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.config import MetricsConfig
from gateway.runtime.exposition import CONTENT_TYPE, exposition_text
from gateway.runtime.metrics import GatewayCollector

_LOGGER = logging.getLogger(__name__)

RESPONSE_TIMEOUT_S = 5.0  # rendering and writing one scrape
MAX_HEADER_LINES = 100


class MetricsServer:
    """``GET /metrics`` on ``host:port``, served on the event loop.

    ``run`` never raises for a bind failure: the gateway's job is the devices
    and the outbox, so a port in use is logged as an error and the daemon
    carries on without metrics.

    A connection costs a task and a buffer, so at most ``max_connections`` are
    served at once, and one that has not sent its whole request within
    ``idle_timeout_s`` is closed. When a new connection finds the cap reached,
    the oldest connection still waiting for its request is dropped to make
    room: a pile of idle sockets (a scanner, a stuck client) can delay a real
    scrape by nothing, since a scraper sends its request at once. Only when
    every slot is busy answering is the newcomer refused with 503.
    """

    def __init__(self, config: MetricsConfig, collector: GatewayCollector) -> None:
        self._config = config
        self._collector = collector
        self.bound_port: int | None = None
        self._live: set[asyncio.StreamWriter] = set()
        self._waiting: dict[asyncio.StreamWriter, None] = {}
        """Connections that have not sent their request yet, oldest first."""
        self.dropped_idle = 0
        self.refused = 0

    async def run(self) -> None:
        """Serve until cancelled (returns at once if the address cannot be bound)."""
        cfg = self._config
        try:
            server = await asyncio.start_server(self._handle, cfg.host, cfg.port)
        except OSError as exc:
            _LOGGER.error(
                "metrics endpoint not started, the gateway runs without it: "
                "host=%s port=%d error=%s",
                cfg.host,
                cfg.port,
                exc.strerror or exc,
            )
            return
        self.bound_port = server.sockets[0].getsockname()[1]
        _LOGGER.info("metrics endpoint listening: url=%s", cfg.url)
        async with server:
            await server.serve_forever()

    async def render(self) -> bytes:
        """The exposition text of one scrape."""
        await self._collector.refresh()
        return exposition_text(self._collector.collect())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not self._admit(writer):
                self.refused += 1
                _write_response(writer, "503 Service Unavailable", b"busy\n")
                return
            async with asyncio.timeout(self._config.idle_timeout_s):
                request = await _read_request(reader)
            self._waiting.pop(writer, None)
            if request is None:
                return  # closed before asking (or dropped to make room)
            async with asyncio.timeout(RESPONSE_TIMEOUT_S):
                status, body = await self._respond(request)
                _write_response(writer, status, body)
                await writer.drain()
        except (TimeoutError, ConnectionError, ValueError):
            pass  # a slow, vanished or garbled client: nothing to answer
        finally:
            self._live.discard(writer)
            self._waiting.pop(writer, None)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _admit(self, writer: asyncio.StreamWriter) -> bool:
        """Take a slot for ``writer``, dropping the oldest idle connection if need be."""
        if len(self._live) >= self._config.max_connections:
            if not self._waiting:
                return False
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            self._live.discard(oldest)
            self.dropped_idle += 1
            oldest.close()  # its handler sees EOF and ends
        self._live.add(writer)
        self._waiting[writer] = None
        return True

    async def _respond(self, request: bytes) -> tuple[str, bytes]:
        parts = request.decode("latin-1").split()
        if len(parts) != 3:
            return "400 Bad Request", b"bad request\n"
        method, target, _version = parts
        if method != "GET":
            return "405 Method Not Allowed", b"GET only\n"
        if target.split("?", 1)[0] not in ("/metrics", "/"):
            return "404 Not Found", b"try /metrics\n"
        try:
            return "200 OK", await self.render()
        except Exception:  # boundary: a collector bug fails the scrape, never the daemon
            _LOGGER.exception("metrics scrape failed")
            return "500 Internal Server Error", b"scrape failed\n"


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    """The request line, once the headers are in too; None at EOF.

    Raises ValueError for a line over the stream's limit.
    """
    request = await reader.readline()
    if not request:
        return None
    for _ in range(MAX_HEADER_LINES):
        if (await reader.readline()).strip() == b"":
            break  # the blank line, or EOF after the request line: serve it
    return request


def _write_response(writer: asyncio.StreamWriter, status: str, body: bytes) -> None:
    head = (
        f"HTTP/1.1 {status}\r\n"
        f"Content-Type: {CONTENT_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    writer.write(head.encode("ascii") + body)
