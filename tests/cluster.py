"""Three-node broker clusters on one machine, started and stopped by the tests.

Two engines that Debian ships and that speak MQTT 3.1.1 beside their own
protocol: RabbitMQ 3.10 (MQTT plugin, quorum queues) and NATS 2.9 (MQTT
listener on JetStream). Every node gets free loopback ports and its own data
folder; the RabbitMQ nodes share a private Erlang cookie and their own epmd on
a free port, so nothing here touches a broker the machine already runs (their
standard ports, epmd's 4369 and its cookie included).

A node is killed with SIGKILL to its whole process group (the Erlang VM is a
child of the start script) and restarted on the same ports and data.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.broker import free_port

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
START_TIMEOUT_S = 120.0  # three Erlang VMs booting at once on 2 shared cores


def _listening(port: int) -> bool:
    with (
        contextlib.suppress(OSError),
        socket.create_connection(("127.0.0.1", port), timeout=0.2),
    ):
        return True
    return False


def _epmd() -> str:
    found = shutil.which("epmd")
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/erlang").glob("erts-*/bin/epmd")):
        return str(candidate)
    raise RuntimeError("epmd not found: apt-get install rabbitmq-server")


def _kill_group(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


@dataclass
class Node:
    """One broker node: its MQTT port is what gateways see."""

    name: str
    mqtt_port: int
    client_port: int  # AMQP for RabbitMQ, NATS protocol for NATS
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    """What both engines offer the tests."""

    nodes: list[Node]

    def start(self) -> None:
        raise NotImplementedError

    def start_node(self, index: int) -> None:
        raise NotImplementedError

    def kill_node(self, index: int) -> None:
        _kill_group(self.nodes[index].proc)
        self.nodes[index].proc = None

    def stop(self) -> None:
        for node in self.nodes:
            _kill_group(node.proc)
            node.proc = None

    @property
    def mqtt_urls(self) -> list[str]:
        return [node.mqtt_url for node in self.nodes]

    def wait_mqtt(self, index: int, timeout: float = START_TIMEOUT_S) -> None:
        node = self.nodes[index]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node.proc is not None and node.proc.poll() is not None:
                log = node.workdir / "out.log"
                raise RuntimeError(f"{node.name} exited: {log.read_text()[-3000:]}")
            if _listening(node.mqtt_port):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{node.name}: MQTT port {node.mqtt_port} not listening")


class RabbitCluster(Cluster):
    """RabbitMQ 3.10 nodes joined by classic peer discovery, MQTT plugin on.

    MQTT sessions (``clean_session=False``) get quorum queues
    (``mqtt.durable_queue_type = quorum``), replicated on every node, so a
    gateway's queued commands survive the loss of the node it was on.
    """

    def __init__(self, workdir: Path, *, size: int = 3) -> None:
        if not (RABBITMQ_BIN / "rabbitmq-server").exists():
            raise RuntimeError("rabbitmq-server is not installed: apt-get install rabbitmq-server")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.home = workdir / "home"
        self.home.mkdir(exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(os.urandom(16).hex().upper())
            cookie.chmod(0o400)
        self.epmd_port = free_port()
        self.epmd: subprocess.Popen[bytes] | None = None
        self.plugins = workdir / "enabled_plugins"
        self.plugins.write_text("[rabbitmq_mqtt].\n")
        tag = os.urandom(3).hex()
        self.nodes = [
            Node(f"fleet{i + 1}-{tag}@localhost", free_port(), free_port(), workdir / f"n{i + 1}")
            for i in range(size)
        ]
        self.dist_ports = [free_port() for _ in range(size)]
        for node in self.nodes:
            node.workdir.mkdir(exist_ok=True)
            peers = "\n".join(
                f"cluster_formation.classic_config.nodes.{j + 1} = {peer.name}"
                for j, peer in enumerate(self.nodes)
            )
            (node.workdir / "rabbitmq.conf").write_text(
                f"listeners.tcp.default = 127.0.0.1:{node.client_port}\n"
                f"mqtt.listeners.tcp.default = 127.0.0.1:{node.mqtt_port}\n"
                "mqtt.allow_anonymous = true\n"
                "mqtt.durable_queue_type = quorum\n"
                "loopback_users = none\n"
                "cluster_formation.peer_discovery_backend = classic_config\n"
                f"{peers}\n"
                # A 3-node cluster on one machine: a minority must stop serving.
                "cluster_partition_handling = pause_minority\n"
                "log.console = false\n"
                "log.file.level = warning\n"
            )

    def env(self, index: int | None = None) -> dict[str, str]:
        env = {
            **os.environ,
            "HOME": str(self.home),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.plugins),
        }
        if index is not None:
            node = self.nodes[index]
            env |= {
                "RABBITMQ_NODENAME": node.name,
                "RABBITMQ_NODE_PORT": str(node.client_port),
                "RABBITMQ_DIST_PORT": str(self.dist_ports[index]),
                "RABBITMQ_MNESIA_BASE": str(node.workdir / "mnesia"),
                "RABBITMQ_LOG_BASE": str(node.workdir / "log"),
                "RABBITMQ_CONFIG_FILE": str(node.workdir / "rabbitmq.conf"),
                "RABBITMQ_PID_FILE": str(node.workdir / "rabbitmq.pid"),
            }
        return env

    def amqp_url(self, index: int) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.nodes[index].client_port}/"

    @property
    def amqp_urls(self) -> list[str]:
        return [self.amqp_url(i) for i in range(len(self.nodes))]

    def start(self) -> None:
        self.epmd = subprocess.Popen(
            [_epmd(), "-port", str(self.epmd_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        # The first node alone, then the others: booted at once, 3.10's MQTT
        # plugin may form no client-id Raft cluster ("client ID registration
        # timed out" on every MQTT connect).
        self._spawn(0)
        self.wait_mqtt(0)
        for index in range(1, len(self.nodes)):
            self._spawn(index)
        for index in range(1, len(self.nodes)):
            self.wait_mqtt(index)
        self.ctl(0, "await_online_nodes", str(len(self.nodes)), "--timeout", "120")

    def _spawn(self, index: int) -> None:
        node = self.nodes[index]
        log = (node.workdir / "out.log").open("ab")
        node.proc = subprocess.Popen(
            [str(RABBITMQ_BIN / "rabbitmq-server")],
            env=self.env(index),
            stdout=log,
            stderr=log,
            start_new_session=True,
            cwd=node.workdir,
        )

    def start_node(self, index: int) -> None:
        self._spawn(index)
        self.wait_mqtt(index)

    def ctl(self, index: int, *args: str) -> str:
        out = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.nodes[index].name, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {out.stdout}{out.stderr}")
        return out.stdout

    def stop(self) -> None:
        super().stop()
        _kill_group(self.epmd)
        self.epmd = None


class NatsCluster(Cluster):
    """NATS 2.9 nodes with routes to each other, JetStream and the MQTT listener."""

    def __init__(self, workdir: Path, *, size: int = 3) -> None:
        if not Path(NATS_SERVER).exists():
            raise RuntimeError("nats-server is not installed: apt-get install nats-server")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.nodes = [
            Node(f"n{i + 1}", free_port(), free_port(), workdir / f"n{i + 1}") for i in range(size)
        ]
        route_ports = [free_port() for _ in range(size)]
        routes = ", ".join(f"nats-route://127.0.0.1:{port}" for port in route_ports)
        for node, route_port in zip(self.nodes, route_ports, strict=True):
            node.workdir.mkdir(exist_ok=True)
            (node.workdir / "nats.conf").write_text(
                f"server_name: {node.name}\n"
                f"listen: 127.0.0.1:{node.client_port}\n"
                f'jetstream {{ store_dir: "{node.workdir / "js"}" }}\n'
                f"cluster {{ name: fleet, listen: 127.0.0.1:{route_port}, routes: [{routes}] }}\n"
                f"mqtt {{ listen: 127.0.0.1:{node.mqtt_port} }}\n"
            )

    def start(self) -> None:
        for index in range(len(self.nodes)):
            self._spawn(index)
        for index in range(len(self.nodes)):
            self.wait_mqtt(index)

    def _spawn(self, index: int) -> None:
        node = self.nodes[index]
        log = (node.workdir / "out.log").open("ab")
        node.proc = subprocess.Popen(
            [NATS_SERVER, "-c", str(node.workdir / "nats.conf")],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )

    def start_node(self, index: int) -> None:
        self._spawn(index)
        self.wait_mqtt(index)
