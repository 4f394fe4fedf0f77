"""The daemon's run path leaves out what only other commands use (issue 8, "Memory").

Each probe runs in a fresh interpreter, since this test process has long
imported everything; what it checks is which modules got loaded, not time.
"""

from __future__ import annotations

import subprocess
import sys

from tests.daemon import REPO

# What ``python -m gateway run -c config.yaml`` imports before its event loop
# starts: the CLI and its parser, the shipped config, the supervisor, and the
# command verifier built from the shipped ``commands:`` section (no keys).
RUN_PATH = """
import sys
from pathlib import Path

from drivers.base import SystemClock
from gateway.cli.main import build_parser
from gateway.commands.verify import CommandVerifier
from gateway.config import load_config
import gateway.runtime.supervisor

args = build_parser().parse_args(["run", "-c", "config.yaml"])
loaded = load_config(Path(args.config))


class Seen:
    def is_seen(self, command_id: str) -> bool:
        return False


CommandVerifier(
    loaded.config.commands,
    gateway_id=loaded.config.gateway.id,
    device_actions={},
    seen=Seen(),
    clock=SystemClock(),
)
print(" ".join(sorted(sys.modules)))
"""

# The same verifier given one public key: cryptography must load then.
WITH_KEY = """
import base64
import sys

from drivers.base import SystemClock
from gateway.commands.model import CommandsConfig
from gateway.commands.verify import CommandVerifier


class Seen:
    def is_seen(self, command_id: str) -> bool:
        return False


key = base64.b64encode(bytes(32)).decode()
config = CommandsConfig.model_validate({"public_keys": {"platform": key}})
CommandVerifier(config, gateway_id="g", device_actions={}, seen=Seen(), clock=SystemClock())
print(" ".join(sorted(sys.modules)))
"""


def modules_loaded_by(probe: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def packages(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_the_run_path_loads_no_rich_cryptography_prometheus_client_simulators_or_tools() -> None:
    loaded = modules_loaded_by(RUN_PATH)
    assert "gateway.runtime.supervisor" in loaded  # the probe did walk the path
    assert "rich" not in packages(loaded)  # only ``status --live`` draws with it
    assert "cryptography" not in packages(loaded)  # no public key: nothing to verify with
    assert "prometheus_client" not in packages(loaded)  # gateway.runtime.exposition writes it
    # Simulators load when a device asks for one (drivers.registry.make_simulator).
    assert not {name for name in loaded if name.startswith("drivers.sim.door_node")}
    # The shipped config reads its cards from a file: the platform's list
    # machinery (and access-push's builder) stays out (gateway.cli.access_commands).
    assert not {
        n for n in loaded if n.startswith("gateway.access.") and n != "gateway.access.sources"
    }
    assert "gateway.cli.access_tools" not in loaded
    # keygen and send-command run on an operator's machine (gateway.cli.operator_commands).
    assert "gateway.cli.operator_tools" not in loaded


def test_a_configured_key_loads_cryptography() -> None:
    assert "cryptography" in packages(modules_loaded_by(WITH_KEY))


# A config with one device kind: loading it, and building that device's
# driver, imports that kind's driver module and no other kind's.
ONE_KIND = """
import asyncio
import sys
import tempfile
from pathlib import Path

import yaml

from drivers.access_rules import DoorAccess
from drivers.base import SystemClock
from drivers.registry import DriverDeps, build_driver
from drivers.transports.bus_pool import BusPool
from gateway.config import load_config

shipped = yaml.safe_load(Path("config.yaml").read_text())
shipped["devices"] = [d for d in shipped["devices"] if d["kind"] == "ble_receiver"]
folder = Path(tempfile.mkdtemp())
path = folder / "config.yaml"
path.write_text(yaml.safe_dump(shipped))
device = load_config(path).config.devices[0]
before = set(sys.modules)


class Sink:
    def put(self, reading: object) -> None:
        pass


async def build() -> None:
    deps = DriverDeps(sink=Sink(), clock=SystemClock(), buses=BusPool(), access=None)
    build_driver(device, deps)


asyncio.run(build())
print(" ".join(sorted(before)))
print(" ".join(sorted(sys.modules)))
"""

DRIVER_MODULES = {
    "drivers.door_node",
    "drivers.uhf_reader",
    "drivers.temperature_gate",
    "drivers.ble_receiver",
    "drivers.uhppote",
}


def test_a_config_of_one_kind_loads_only_that_kinds_driver() -> None:
    done = subprocess.run(
        [sys.executable, "-c", ONE_KIND], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    loaded_by_config, loaded_by_build = (set(line.split()) for line in done.stdout.splitlines())
    # Loading the config (every kind's config class) loads no driver module...
    assert not loaded_by_config & DRIVER_MODULES
    assert "pymodbus" not in packages(loaded_by_config)
    # ...and building the BLE receiver loads its driver alone: no Modbus, no UDP controller.
    assert loaded_by_build & DRIVER_MODULES == {"drivers.ble_receiver"}
    assert not packages(loaded_by_build) & {"pymodbus", "uhppoted"}
    simulators = {name.replace("drivers.", "drivers.sim.") for name in DRIVER_MODULES}
    assert not loaded_by_build & simulators


def test_the_run_path_defers_what_its_libraries_load_but_never_use() -> None:
    # ``python -m gateway`` imports the package (gateway/__init__.py) first.
    loaded = modules_loaded_by(
        "import gateway\n"
        + RUN_PATH.replace(
            'print(" ".join(sorted(sys.modules)))',
            "import gateway.uplink.session\n"
            "real = {n for n, m in sys.modules.items() if type(m).__name__ != '_DeferredModule'}\n"
            'print(" ".join(sorted(real)))',
        )
    )
    assert "gateway.uplink.session" in loaded  # paho and aiomqtt were imported
    assert "urllib.request" not in loaded  # paho reads proxies with it only under PySocks
    assert "importlib.metadata" not in loaded  # pydantic's plugin search is off
    assert "email" not in packages(loaded)
    # argparse's own formatter would import shutil, and with it bz2 and lzma.
    assert "shutil" not in loaded


DEFERRED_USE = """
import sys

import gateway  # defers urllib.request and importlib.metadata
import urllib.request
from importlib.metadata import entry_points  # a stand-in: still not loaded

kinds = [type(sys.modules[name]).__name__ for name in ("urllib.request", "importlib.metadata")]
print(kinds[0], kinds[1])
print(isinstance(urllib.request.getproxies(), dict), type(sys.modules["urllib.request"]).__name__)
found = entry_points(group="console_scripts")
print(type(found).__name__, type(sys.modules["importlib.metadata"]).__name__)
"""


def test_a_deferred_module_is_the_real_one_once_used() -> None:
    done = subprocess.run(
        [sys.executable, "-c", DEFERRED_USE], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "_DeferredModule _DeferredModule",
        "True module",
        "EntryPoints module",
    ]
