"""What every simulator offers the supervisor and the tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class SimEndpoint:
    """Where a driver reaches a started simulator: a serial path, or host and TCP port."""

    port: str | None = None
    host: str | None = None
    tcp_port: int | None = None


class Simulator(Protocol):
    async def start(self) -> SimEndpoint:
        """Start speaking the protocol; return where the driver should attach."""
        ...

    async def stop(self) -> None:
        """Stop and release the pty or socket."""
        ...
