"""Simulated Chafon UHF reader, ``chafon-uhf-v1`` (PROTOCOLS.md, "UHF RFID reader").

Speaks the real protocol over a real pseudo-terminal (``PtyLink``): it decodes
the driver's commands with ``drivers.codecs.chafon_uhf`` and answers inventory
(0x01, multi-frame replies with status 0x03 when many tags are in the field),
inventory single (0x0F), reader info (0x21), set/get work mode (0x35/0x36),
the other 0x2x/0x3x setters (status 0x00) and unknown commands (reCmd 0x00,
status 0xFE). In scan mode it pushes ``0xEE`` frames, at most once per tag per
``Tag_Time``.

Scriptable from tests: ``inject_pass`` (an EPC read N times over a duration),
``set_answering(False)``, ``send_garbage``, ``corrupt_next_replies``,
``noise_burst`` (``drivers.sim.noise``), ``unplug`` / ``replug``, and
``start_flood`` (pushes as fast as the wire allows, for the benchmark). With
``wire_time=True`` every byte takes 10 bits / baud on the line, as on a real
8N1 link (ptys ignore the baud rate, PROTOCOLS.md "pymodbus" note).

Ambient mode (the shipped config) lets a bike pass every few seconds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from drivers.codecs.chafon_uhf import (
    BROADCAST_ADDRESS,
    ChafonDecoder,
    Command,
    CommandFrame,
    Direction,
    Discarded,
    GetReaderInfo,
    GetWorkMode,
    Inventory,
    InventoryReply,
    InventorySingle,
    InventoryStatus,
    ReaderInfoReply,
    SetWorkMode,
    Status,
    StatusReply,
    TagPushed,
    WorkMode,
    WorkModeReply,
)
from drivers.sim.base import SimEndpoint
from drivers.sim.config import UhfReaderSimConfig
from drivers.sim.noise import LineNoise
from drivers.sim.pty import PtyLink
from drivers.sim.scheduler import Action, SimScheduler

__all__ = ["UhfReaderSimulator", "make_simulator"]

_LOGGER = logging.getLogger(__name__)

AMBIENT_INTERVAL_S = 6.0
"""Ambient mode: one bike every this many seconds (jittered)."""
AMBIENT_BIKES = tuple(bytes.fromhex(f"E2000017221100881520{n:04X}") for n in range(0xAB00, 0xAB08))

_COMMAND_TYPES = (Inventory, InventorySingle, GetReaderInfo, SetWorkMode, GetWorkMode, Command)


@dataclass(slots=True)
class _Pass:
    epc: bytes
    reads: deque[float] = field(default_factory=deque)  # loop times of the reads still due
    last_push: float | None = None
    leaves_at: float | None = None
    """Loop time the tag leaves the field; None: it waits for an inventory forever."""


class UhfReaderSimulator:
    """One simulated reader on a pty; implements ``drivers.sim.base.Simulator``."""

    def __init__(
        self,
        config: UhfReaderSimConfig,
        workdir: Path,
        *,
        ambient: bool = True,
        wire_time: bool = False,
        max_tags_per_frame: int = 4,
        seed: int | None = None,
    ) -> None:
        self.config = config
        self.address = config.address
        self.link = PtyLink(workdir / f"{config.id}.tty")
        self.ambient = ambient
        self.wire_time = wire_time
        self.baudrate = config.transport.baudrate
        self.max_tags_per_frame = max_tags_per_frame
        self.mode = WorkMode.answer()
        self.answering = True
        self.commands: deque[CommandFrame] = deque(maxlen=1000)
        self.frames_sent = 0
        self.discarded = 0
        self._rng = random.Random(seed)
        self._decoder = ChafonDecoder(Direction.TO_READER)
        self._passes: list[_Pass] = []
        self.scheduler = SimScheduler(
            f"sim-uhf-{config.id}", self._write, baudrate=self.baudrate, wire_time=wire_time
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flood: Sequence[bytes] = ()
        self._flood_index = 0
        self.noise = LineNoise(self._send, self._rng)
        """Corrupted replies and garbage bursts on this line (``drivers.sim.noise``)."""

    # Simulator protocol

    async def start(self) -> SimEndpoint:
        """Plug the pty and start answering; returns the port path for the driver."""
        self._loop = asyncio.get_running_loop()
        self.replug()
        self.scheduler.start()
        if self.ambient:
            self._at(self._loop.time() + 1.0, self._ambient_bike)
        return SimEndpoint(port=str(self.link.path))

    async def stop(self) -> None:
        """Stop the scheduler and release the pty."""
        await self.scheduler.stop()
        self.noise.cancel()
        self.unplug()

    # scripting

    @property
    def path(self) -> Path:
        return self.link.path

    def unplug(self) -> None:
        """Pull the adapter: the driver's reads fail and the path disappears."""
        if self.link.master_fd is not None and self._loop is not None:
            self._loop.remove_reader(self.link.master_fd)
        self.link.unplug()

    def replug(self) -> None:
        """Put the adapter back (same path, new pty); the reader restarts in answer mode."""
        if self.link.plugged:
            return
        self.link.plug()
        self._decoder = ChafonDecoder(Direction.TO_READER)
        self.mode = WorkMode.answer()
        assert self._loop is not None and self.link.master_fd is not None
        self._loop.add_reader(self.link.master_fd, self._on_readable)

    def set_answering(self, answering: bool) -> None:
        """False: the reader goes quiet (no replies, no pushes), the port stays."""
        self.answering = answering

    def send_garbage(self, data: bytes | None = None) -> bytes:
        """Put noise on the line (random bytes by default); returns what was sent."""
        if data is None:
            data = self._rng.randbytes(self._rng.randint(5, 40))
        return self.noise.garbage(data)

    def corrupt_next_replies(self, count: int = 1) -> None:
        """Send the next ``count`` replies with a flipped bit."""
        self.noise.corrupt_next(count)

    def noise_burst(self, duration_s: float) -> None:
        """Garbage on the line, and every frame broken, for ``duration_s`` from now."""
        self.noise.burst(duration_s)

    def inject_pass(
        self,
        epc: bytes | str,
        *,
        reads: int = 10,
        duration_s: float = 1.0,
        leaves: bool = False,
    ) -> None:
        """A tag in the field for ``duration_s``, read ``reads`` times evenly.

        In answer mode each inventory returns a tag with a read due (one read per
        inventory); in scan mode each read is pushed (subject to Tag_Time). With
        ``leaves``, the tag is gone ``duration_s`` after it came, as a passing bike
        is: an inventory after that no longer sees it, so a reader that was not
        asked in time never reads it.
        """
        if isinstance(epc, str):
            epc = bytes.fromhex(epc)
        assert self._loop is not None, "start() first"
        now = self._loop.time()
        step = duration_s / max(reads - 1, 1)
        p = _Pass(epc, deque(now + i * step for i in range(reads)))
        if leaves:
            p.leaves_at = now + duration_s
        self._passes.append(p)
        for t in p.reads:
            self._at(t, functools.partial(self._scan_read, p))

    def start_flood(self, epcs: Sequence[bytes]) -> None:
        """Push tags back to back, as fast as the wire allows (scan mode benchmark)."""
        assert self._loop is not None, "start() first"
        self._flood = tuple(epcs)
        self._flood_index = 0
        self._at(self._loop.time(), self._flood_next)

    def stop_flood(self) -> None:
        self._flood = ()

    def frame_time_s(self, n_bytes: int) -> float:
        """Wire time of ``n_bytes`` at the configured baud rate."""
        return self.scheduler.wire_time_s(n_bytes)

    # output

    def _at(self, due: float, action: Action) -> None:
        self.scheduler.at(due, action)

    def _send(self, data: bytes) -> None:
        self.scheduler.send(data)

    def _write(self, data: bytes) -> None:
        self.link.write(data)

    def _reply(self, frame: InventoryReply | ReaderInfoReply | WorkModeReply | StatusReply) -> None:
        if self.answering:
            self.frames_sent += 1
            self._send(self.noise.garble(frame.encode()))

    # behaviour

    def _scan_read(self, p: _Pass) -> None:
        assert self._loop is not None
        now = self._loop.time()
        if not self.mode.is_scan or not p.reads or p.reads[0] > now:
            return  # answer mode: the read waits for an inventory
        p.reads.popleft()
        if not p.reads:
            self._passes.remove(p)
        tag_time = self.mode.tag_time
        if tag_time and p.last_push is not None and now - p.last_push < tag_time:
            return
        p.last_push = now
        if self.answering:
            self.frames_sent += 1
            self._send(self.noise.garble(TagPushed(p.epc, self.address).encode()))

    def _flood_next(self) -> None:
        if not self._flood or self._loop is None:
            return
        epc = self._flood[self._flood_index % len(self._flood)]
        self._flood_index += 1
        frame = TagPushed(epc, self.address).encode()
        if self.answering and self.mode.is_scan:
            self.frames_sent += 1
            self._send(frame)
        frame_s = self.frame_time_s(len(frame))
        if self.wire_time:
            # Queue the next push one frame ahead, so the emulated wire never
            # idles for the scheduler's own latency: back to back, as a reader does.
            nxt = max(self.scheduler.wire_free_at - frame_s, self._loop.time())
        else:
            nxt = self._loop.time() + frame_s
        self._at(nxt, self._flood_next)

    def _ambient_bike(self) -> None:
        assert self._loop is not None
        self.inject_pass(
            self._rng.choice(AMBIENT_BIKES),
            reads=self._rng.randint(4, 12),
            duration_s=self._rng.uniform(0.5, 2.0),
        )
        self._at(
            self._loop.time() + self._rng.uniform(0.5, 1.5) * AMBIENT_INTERVAL_S, self._ambient_bike
        )

    def _on_readable(self) -> None:
        fd = self.link.master_fd
        if fd is None:
            return
        try:
            data = os.read(fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # the driver side closed; it will reopen
        for event in self._decoder.feed(data):
            if isinstance(event, Discarded):
                self.discarded += event.count
            elif isinstance(event, _COMMAND_TYPES):
                self.commands.append(event)
                self._handle(event)

    def _due_tags(self) -> list[bytes]:
        assert self._loop is not None
        now = self._loop.time()
        due = []
        for p in list(self._passes):
            if p.leaves_at is not None and now > p.leaves_at:
                self._passes.remove(p)  # gone: its reads left with it
                continue
            if p.reads and p.reads[0] <= now:
                p.reads.popleft()
                if p.leaves_at is not None:
                    # Still in the field: one read per inventory, the missed ones are gone.
                    while p.reads and p.reads[0] <= now:
                        p.reads.popleft()
                due.append(p.epc)
            if not p.reads:
                self._passes.remove(p)
        return due

    def _handle(self, cmd: CommandFrame) -> None:
        if cmd.address not in (self.address, BROADCAST_ADDRESS):
            return
        addr = self.address
        if isinstance(cmd, Inventory):
            tags = self._due_tags()
            if not tags:
                self._reply(InventoryReply(InventoryStatus.NO_TAG, (), addr))
                return
            chunks = [
                tags[i : i + self.max_tags_per_frame]
                for i in range(0, len(tags), self.max_tags_per_frame)
            ]
            for n, chunk in enumerate(chunks, 1):
                status = InventoryStatus.DONE if n == len(chunks) else InventoryStatus.MORE_FRAMES
                self._reply(InventoryReply(status, tuple(chunk), addr))
        elif isinstance(cmd, InventorySingle):
            tags = self._due_tags()[:1]
            status = InventoryStatus.DONE if tags else InventoryStatus.NO_TAG
            self._reply(InventoryReply(status, tuple(tags), addr, cmd.cmd))
        elif isinstance(cmd, GetReaderInfo):
            self._reply(
                ReaderInfoReply(
                    version=(3, 1),
                    reader_type=0x09,
                    tr_type=0x02,
                    dmax_fre=0x3E,
                    dmin_fre=0x00,
                    power=30,
                    scan_time=10,
                    address=addr,
                )
            )
        elif isinstance(cmd, SetWorkMode):
            self.mode = cmd.mode
            self._reply(WorkModeReply(cmd.mode, cmd.cmd, addr))
        elif isinstance(cmd, GetWorkMode):
            self._reply(WorkModeReply(self.mode, cmd.cmd, addr))
        elif isinstance(cmd, Command) and 0x20 <= cmd.cmd <= 0x3F:
            self._reply(StatusReply(cmd.cmd, Status.OK, b"", addr))
        else:
            self._reply(StatusReply(0x00, Status.UNKNOWN_COMMAND, b"", addr))


def make_simulator(
    config: UhfReaderSimConfig, workdir: Path, *, ambient: bool = True, wire_time: bool = False
) -> UhfReaderSimulator:
    """The supervisor's and the tests' factory for ``kind: uhf_reader``."""
    return UhfReaderSimulator(config, workdir, ambient=ambient, wire_time=wire_time)
