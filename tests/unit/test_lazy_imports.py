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


def test_the_run_path_loads_no_rich_cryptography_prometheus_client_or_simulators() -> None:
    loaded = modules_loaded_by(RUN_PATH)
    assert "gateway.runtime.supervisor" in loaded  # the probe did walk the path
    assert "rich" not in packages(loaded)  # only ``status --live`` draws with it
    assert "cryptography" not in packages(loaded)  # no public key: nothing to verify with
    assert "prometheus_client" not in packages(loaded)  # gateway.runtime.exposition writes it
    # Simulators load when a device asks for one (drivers.registry.make_simulator).
    assert not {name for name in loaded if name.startswith("drivers.sim.door_node")}


def test_a_configured_key_loads_cryptography() -> None:
    assert "cryptography" in packages(modules_loaded_by(WITH_KEY))
