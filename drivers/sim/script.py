"""One-line commands for the simulators, so a person can script them by hand.

``python -m gateway simulate`` reads these from its standard input; tests
call the simulators' methods directly. Each line is ``DEVICE VERB [ARGS]``:

    door-east-1 card 04A1B2C3        present a card (door_node)
    door-east-1 open | close | exit  door contact open / closed, exit button
    ebike-reader-1 tag E2000017...   a bike passes (uhf_reader) [reads]
    temp-gate-1 temp 38.2            a passer-by's temperature (temperature_gate)
    band-receiver-1 sos MAC          SOS button (ble_receiver); fall MAC; battery MAC PCT
    uhppote-1 swipe 10058400 door 1  a card (decimal) at a door (uhppote); open N | close N |
                                     button N; reset; drop-pushes | deliver-pushes
    any-device unplug | replug | silence | resume | garbage
"""

from __future__ import annotations

import asyncio
import os

from drivers.sim.ble_receiver import BleReceiverSimulator
from drivers.sim.door_node import DoorNodeSimulator
from drivers.sim.temperature_gate import TemperatureGateSimulator
from drivers.sim.uhf_reader import UhfReaderSimulator
from drivers.sim.uhppote import UhppoteSimulator

AnySimulator = (
    DoorNodeSimulator
    | UhfReaderSimulator
    | TemperatureGateSimulator
    | BleReceiverSimulator
    | UhppoteSimulator
)

HELP = __doc__.split("\n\n", 2)[2] if __doc__ else ""


class ScriptError(ValueError):
    """A line the simulators cannot act on; the message says why."""


def apply(simulators: dict[str, AnySimulator], line: str) -> str:
    """Carry out one script line; return what was done.

    Raises:
        ScriptError: unknown device, verb or argument.
    """
    words = line.split()
    if not words or words[0] == "help":
        return HELP
    if len(words) < 2:
        raise ScriptError("expected: DEVICE VERB [ARGS] (try: help)")
    device, verb, args = words[0], words[1], words[2:]
    simulator = simulators.get(device)
    if simulator is None:
        raise ScriptError(f"no simulated device {device!r}; have: {', '.join(sorted(simulators))}")
    try:
        if _common(simulator, verb):
            return f"{device}: {verb}"
        return _kind_specific(simulator, device, verb, args)
    except (IndexError, ValueError, KeyError) as exc:
        if isinstance(exc, ScriptError):
            raise
        raise ScriptError(f"{device} {verb}: bad arguments ({exc})") from exc


def _common(simulator: AnySimulator, verb: str) -> bool:
    if verb == "unplug":
        simulator.unplug()
    elif verb == "replug":
        simulator.replug()
    elif verb in ("silence", "resume"):
        answering = verb == "resume"
        if isinstance(simulator, UhfReaderSimulator):
            simulator.set_answering(answering)
        elif isinstance(simulator, BleReceiverSimulator):
            simulator.set_silent(not answering)
        elif answering:
            simulator.resume_answering()
        else:
            simulator.stop_answering()
    elif verb == "garbage":
        if isinstance(simulator, UhfReaderSimulator | BleReceiverSimulator | UhppoteSimulator):
            simulator.send_garbage()
        else:
            simulator.server.inject_garbage(os.urandom(16))
    else:
        return False
    return True


def _uhppote(simulator: UhppoteSimulator, device: str, verb: str, args: list[str]) -> None:
    if verb == "swipe":
        door = int(args[2]) if len(args) > 2 and args[1] == "door" else 1
        simulator.swipe(int(args[0]), door)
    elif verb in ("open", "close", "button"):
        door = int(args[0]) if args else 1
        {"open": simulator.open_door, "close": simulator.close_door}.get(
            verb, simulator.press_button
        )(door)
    elif verb == "reset":
        simulator.reset()
    elif verb in ("drop-pushes", "deliver-pushes"):
        simulator.set_drop_pushes(verb == "drop-pushes")
    else:
        raise ScriptError(
            f"{device} (uhppote) knows: swipe CARD door N, open N, close N, button N, reset, "
            "drop-pushes, deliver-pushes"
        )


def _kind_specific(simulator: AnySimulator, device: str, verb: str, args: list[str]) -> str:
    if isinstance(simulator, UhppoteSimulator):
        _uhppote(simulator, device, verb, args)
    elif isinstance(simulator, DoorNodeSimulator):
        if verb == "card":
            simulator.present_card(args[0])
        elif verb == "open":
            simulator.open_door()
        elif verb == "close":
            simulator.close_door()
        elif verb == "exit":
            simulator.press_exit()
            asyncio.get_running_loop().call_later(0.5, simulator.release_exit)
        else:
            raise ScriptError(f"{device} (door_node) knows: card HEX, open, close, exit")
    elif isinstance(simulator, UhfReaderSimulator):
        if verb != "tag":
            raise ScriptError(f"{device} (uhf_reader) knows: tag EPC [reads]")
        simulator.inject_pass(args[0], reads=int(args[1]) if len(args) > 1 else 10)
    elif isinstance(simulator, TemperatureGateSimulator):
        if verb != "temp":
            raise ScriptError(f"{device} (temperature_gate) knows: temp CELSIUS")
        simulator.inject_reading(float(args[0]))
    elif verb == "sos":
        simulator.press(args[0].upper())
    elif verb == "fall":
        simulator.fall(args[0].upper())
    elif verb == "battery":
        simulator.set_battery(args[0].upper(), pct=int(args[1]))
    else:
        raise ScriptError(f"{device} (ble_receiver) knows: sos MAC, fall MAC, battery MAC PCT")
    return f"{device}: {' '.join([verb, *args])}"
