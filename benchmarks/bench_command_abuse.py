"""What hostile or unlucky broker traffic costs the daemon (issue 9, items 1 to 3).

Four scenarios against the real daemon process and a local mosquitto:

- ``wildcard``: ``not json`` on ``{root}/commands`` with the MQTT 5 response
  topic ``a/#``; prints whether the daemon is still running 3 s later and how
  many times it (re)connected.
- ``acl``: the broker's ``acl_file`` denies ``{root}/commands/results/forbidden/#``;
  a signed ``gateway.ping`` asks for its result there; prints the reconnects
  over the next 9 s and whether routine readings still drain.
- ``oversize``: one 40 MB publish on ``{root}/commands``; prints the daemon's
  RSS before and after (and its peak), and whether it is still running.
- ``garbage``: 2,000 unsigned messages, with ``strace -c`` counting the
  daemon's fdatasync/fsync calls meanwhile; then a signed ``door.open`` and the
  time from its publish to its result.

``--repo`` runs the daemon from another checkout (e.g. ``/work/main``) to get
the "before" figures; the test harness (broker, config, signing) is this one's.

    .venv/bin/python -m benchmarks.bench_command_abuse [--repo PATH] [--only garbage]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from benchmarks.common import proc_status_kb, temp_dir
from gateway.cli.operator_tools import build_command, keygen, load_private_key
from gateway.commands.model import sign
from tests.broker import Mosquitto
from tests.daemon import Daemon, write_config
from tests.subscriber import Subscriber

ROOT = "estates/changqing/gateways/north-gate-1"
KEY_ID = "platform-2026"
GARBAGE_MESSAGES = 2000
# A row of `strace -c`: % time, seconds, usecs/call, calls, [errors,] syscall.
_STRACE_ROW = r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$"
OVERSIZE_BYTES = 40 * 1024 * 1024


class RepoDaemon(Daemon):
    """The daemon run from ``repo`` (its own code), logging next to the config."""

    def __init__(self, config: Path, repo: Path) -> None:
        super().__init__(config)
        self.repo = repo

    def start(self, *, env: dict[str, str] | None = None) -> None:
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "-c", str(self.config)],
                cwd=self.repo,
                stdout=log,
                stderr=log,
                env={**os.environ, **(env or {})},
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def connects(self) -> int:
        return self.output().count("mqtt connected")


async def publish(
    port: int, payload: bytes, *, response_topic: str | None = None, count: int = 1
) -> None:
    props = None
    if response_topic is not None:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = response_topic
        props.CorrelationData = b"corr"
    async with aiomqtt.Client(
        "127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5, timeout=60
    ) as client:
        for _ in range(count):
            await client.publish(f"{ROOT}/commands", payload, qos=1, properties=props)


def signed(keys: Path, *, action: str, device: str, params: dict[str, Any]) -> dict[str, Any]:
    unsigned = build_command(
        command_id=str(uuid.uuid4()),
        gateway="north-gate-1",
        action=action,
        device=device,
        params=params,
        key_id=KEY_ID,
        issued_at=time.time(),
        ttl_s=30,
    )
    return sign(unsigned, load_private_key(keys / f"{KEY_ID}.pem"))


async def start(
    work: Path, repo: Path, *, acl: str | None = None
) -> tuple[Mosquitto, RepoDaemon, Subscriber, Path]:
    broker = Mosquitto(work / "mosquitto")
    if acl is not None:
        (work / "acl").write_text(acl)
        with broker.conf.open("a") as conf:
            conf.write(f"acl_file {work / 'acl'}\n")
    broker.start()
    keys = work / "keys"
    public = dict([keygen(keys, key_id=KEY_ID).split(": ")])
    config = write_config(
        work / "gw" / "config.yaml",
        brokers=[broker.url],
        commands={
            "public_keys": public,
            "permissions": {
                "door-east-1": {"actions": ["door.open"], "key_ids": [KEY_ID]},
                "north-gate-1": {"actions": ["gateway.ping"], "key_ids": [KEY_ID]},
            },
        },
    )
    sub = Subscriber(broker.port, ROOT)
    await sub.start()
    daemon = RepoDaemon(config, repo)
    daemon.start()
    await sub.wait_for(sub.online_status_seen, timeout=30)
    return broker, daemon, sub, keys


@contextlib.asynccontextmanager
async def running(repo: Path, *, acl: str | None = None) -> Any:
    with temp_dir("bench-abuse-") as name:
        work = Path(name)
        broker, daemon, sub, keys = await start(work, repo, acl=acl)
        try:
            yield broker, daemon, sub, keys
        finally:
            daemon.stop()
            await sub.stop()
            broker.stop()


async def wildcard(repo: Path) -> None:
    async with running(repo) as (broker, daemon, _sub, _keys):
        await publish(broker.port, b"not json", response_topic="a/#")
        await asyncio.sleep(3.0)
        print(f"wildcard: daemon running={daemon.alive()} connects={daemon.connects()}")


async def acl(repo: Path) -> None:
    rules = f"topic deny {ROOT}/commands/results/forbidden/#\ntopic readwrite #\n"
    async with running(repo, acl=rules) as (broker, daemon, sub, keys):
        before = daemon.connects()
        ping = signed(keys, action="gateway.ping", device="north-gate-1", params={})
        await publish(
            broker.port,
            json.dumps(ping).encode(),
            response_topic=f"{ROOT}/commands/results/forbidden/x",
        )
        started = len(sub.readings())
        await asyncio.sleep(9.0)
        print(
            f"acl: reconnects in 9 s={daemon.connects() - before} "
            f"readings arrived meanwhile={len(sub.readings()) - started} "
            f"running={daemon.alive()}"
        )


async def oversize(repo: Path) -> None:
    async with running(repo) as (broker, daemon, _sub, _keys):
        assert daemon.proc is not None
        pid = daemon.proc.pid
        await asyncio.sleep(2.0)
        before = proc_status_kb(pid, "VmRSS")
        await publish(broker.port, b"x" * OVERSIZE_BYTES)
        await asyncio.sleep(5.0)
        alive = daemon.alive()
        after = proc_status_kb(pid, "VmRSS") if alive else -1
        peak = proc_status_kb(pid, "VmHWM") if alive else -1
        print(
            f"oversize 40 MB: rss before={before / 1024:.0f} MB after={after / 1024:.0f} MB "
            f"peak={peak / 1024:.0f} MB running={alive}"
        )


async def garbage(repo: Path) -> None:
    strace = shutil.which("strace")
    async with running(repo) as (broker, daemon, sub, keys):
        assert daemon.proc is not None
        await asyncio.sleep(2.0)
        out = Path(daemon.config.parent / "strace.txt")
        tracer = None
        if strace:
            tracer = subprocess.Popen(  # noqa: ASYNC220  # a benchmark, not the daemon
                [
                    strace,
                    "-f",
                    "-c",
                    "-e",
                    "trace=fdatasync,fsync",
                    "-o",
                    str(out),
                    "-p",
                    str(daemon.proc.pid),
                ],
                stderr=subprocess.DEVNULL,
            )
            await asyncio.sleep(1.0)  # attached
        started = time.monotonic()
        await publish(broker.port, b'{"v":1,"id":"junk"}', count=GARBAGE_MESSAGES)
        flood_s = time.monotonic() - started
        command = signed(keys, action="door.open", device="door-east-1", params={})
        sent = time.monotonic()
        await publish(broker.port, json.dumps(command).encode())
        results = lambda: [m for m in sub.on("commands/results") if m.json()["id"] == command["id"]]  # noqa: E731
        try:
            await sub.wait_for(lambda: bool(results()), timeout=60)
            result = results()[0]
            door = f"{result.json()['status']} after {(result.at - sent) * 1000:.0f} ms"
        except TimeoutError:
            door = "no result within 60 s"
        await asyncio.sleep(2.0)  # let the syncs of the flood's tail happen
        syncs = "strace missing"
        if tracer is not None:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(10)
            text = out.read_text()
            rows = re.findall(_STRACE_ROW, text, re.M)
            counts = {name: int(calls) for calls, name in rows}
            syncs = f"fdatasync={counts.get('fdatasync', 0)} fsync={counts.get('fsync', 0)}"
        rejected = len(sub.on("commands/results")) - 1
        print(
            f"garbage x{GARBAGE_MESSAGES} (published in {flood_s:.1f} s): {syncs}; "
            f"results for garbage={rejected}; door.open {door}; running={daemon.alive()}"
        )


SCENARIOS = {"wildcard": wildcard, "acl": acl, "oversize": oversize, "garbage": garbage}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append")
    args = parser.parse_args()
    for name in args.only or list(SCENARIOS):
        asyncio.run(SCENARIOS[name](args.repo.resolve()))


if __name__ == "__main__":
    main()
