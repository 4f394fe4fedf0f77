"""Operator tools: keygen output, signing round trip, params, URLs, CLI registration."""

from __future__ import annotations

import argparse
import base64
import io
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from drivers.actions import OtherAction
from gateway.cli.operator_commands import add_operator_subcommands
from gateway.cli.operator_tools import (
    build_command,
    encode_command,
    keygen,
    load_private_key,
    parse_param,
    parse_params,
    send_command,
)
from gateway.cli.publisher import EXIT_USAGE
from gateway.commands.model import CommandRejected, CommandsConfig, RejectReason, sign
from gateway.commands.verify import CommandVerifier
from gateway.uplink.broker import BrokerUrl, parse_broker_url, topic_root
from tests.fakes import FakeClock

T0 = 1_795_939_200.0


class NoneSeen:
    def is_seen(self, command_id: str) -> bool:
        return False


def test_keygen_writes_a_private_pem_and_a_usable_public_line(tmp_path: Path) -> None:
    line = keygen(tmp_path / "keys", key_id="platform-2026")
    key_id, _, public_b64 = line.partition(": ")
    assert key_id == "platform-2026"
    private = tmp_path / "keys" / "platform-2026.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert (tmp_path / "keys" / "platform-2026.pub").read_text().strip() == public_b64

    signature = load_private_key(private).sign(b"open sesame")
    Ed25519PublicKey.from_public_bytes(base64.b64decode(public_b64)).verify(
        signature, b"open sesame"
    )


def test_keygen_never_overwrites(tmp_path: Path) -> None:
    keygen(tmp_path, key_id="k1")
    before = (tmp_path / "k1.pem").read_bytes()
    with pytest.raises(FileExistsError):
        keygen(tmp_path, key_id="k1")
    assert (tmp_path / "k1.pem").read_bytes() == before


def test_keygen_rejects_a_bad_key_id(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="key id"):
        keygen(tmp_path, key_id="../etc/passwd")


def test_sign_then_verify_round_trip(tmp_path: Path) -> None:
    line = keygen(tmp_path, key_id="platform-2026")
    key_id, _, public_b64 = line.partition(": ")
    config = CommandsConfig.model_validate(
        {
            "public_keys": {key_id: public_b64},
            "permissions": {
                "display-1": {"actions": ["display.show"], "key_ids": [key_id]},
            },
        }
    )
    verifier = CommandVerifier(
        config,
        gateway_id="north-gate-1",
        device_actions={"display-1": frozenset({"display.show"})},
        seen=NoneSeen(),
        clock=FakeClock(wall=T0 + 1),
    )
    params = parse_params(["text=北门 ✓", "count=3", "ratio=0.5", "on=true"])
    command = sign(
        build_command(
            command_id="c-1",
            gateway="north-gate-1",
            action="display.show",
            device="display-1",
            params=params,
            key_id=key_id,
            issued_at=T0,
            ttl_s=30,
        ),
        load_private_key(tmp_path / f"{key_id}.pem"),
    )
    verified = verifier.verify(encode_command(command))
    assert verified.params == OtherAction(
        "display.show", {"text": "北门 ✓", "count": 3, "ratio": 0.5, "on": True}
    )

    command["params"]["count"] = 4
    with pytest.raises(CommandRejected) as info:
        verifier.verify(encode_command(command))
    assert info.value.reason is RejectReason.BAD_SIGNATURE


def test_build_command_timestamps() -> None:
    command = build_command(
        command_id="c",
        gateway="g",
        action="gateway.ping",
        device="g",
        params={},
        key_id="k",
        issued_at=T0 + 0.1239,
        ttl_s=30,
    )
    assert command["issued_at"] == "2026-11-29T08:00:00.123Z"
    assert command["expires_at"] == "2026-11-29T08:00:30.123Z"
    assert "sig" not in command


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hold_seconds=5", ("hold_seconds", 5)),
        ("n=-3", ("n", -3)),
        ("x=1.5", ("x", 1.5)),
        ("x=1e3", ("x", 1000.0)),
        ("on=true", ("on", True)),
        ("on=false", ("on", False)),
        ("mode=locked", ("mode", "locked")),
        ("s=True", ("s", "True")),
        ("s=nan", ("s", "nan")),
        ("s=inf", ("s", "inf")),
        ("s=", ("s", "")),
        ("s=a=b", ("s", "a=b")),
    ],
)
def test_parse_param(text: str, expected: tuple[str, Any]) -> None:
    assert parse_param(text) == expected
    assert type(parse_param(text)[1]) is type(expected[1])


@pytest.mark.parametrize("bad", [["novalue"], ["=5"], ["a=1", "a=2"]])
def test_parse_params_errors(bad: list[str]) -> None:
    with pytest.raises(ValueError, match="param"):
        parse_params(bad)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://broker.example", BrokerUrl("broker.example", 1883, tls=False)),
        ("mqtt://127.0.0.1:1884", BrokerUrl("127.0.0.1", 1884, tls=False)),
        ("mqtts://broker.example", BrokerUrl("broker.example", 8883, tls=True)),
    ],
)
def test_parse_broker_url(url: str, expected: BrokerUrl) -> None:
    assert parse_broker_url(url) == expected


@pytest.mark.parametrize(
    "url", ["http://x", "mqtt://", "mqtt://user:pw@host", "mqtt://host:99999", "host:1883"]
)
def test_parse_broker_url_errors(url: str) -> None:
    with pytest.raises(ValueError):
        parse_broker_url(url)


def test_topic_root() -> None:
    assert topic_root("changqing", "north-gate-1") == "estates/changqing/gateways/north-gate-1"
    assert topic_root("s", "g", "site/{site}/gw/{gateway_id}") == "site/s/gw/g"
    assert topic_root("s", "g", "fixed/root") == "fixed/root"


async def test_send_command_refuses_bad_input_before_connecting(tmp_path: Path) -> None:
    keygen(tmp_path, key_id="k")
    err = io.StringIO()
    common: dict[str, Any] = {
        "broker": "mqtt://127.0.0.1:1",
        "key_file": tmp_path / "k.pem",
        "key_id": "k",
        "site": "changqing",
        "gateway": "north-gate-1",
        "action": "gateway.ping",
        "device": "north-gate-1",
        "params": {},
        "err": err,
        "out": io.StringIO(),
    }
    assert await send_command(**{**common, "broker": "http://x"}) == EXIT_USAGE
    assert await send_command(**{**common, "key_file": tmp_path / "missing.pem"}) == EXIT_USAGE
    assert await send_command(**{**common, "site": "Chang Qing"}) == EXIT_USAGE
    assert await send_command(**{**common, "ttl_s": 0}) == EXIT_USAGE
    (tmp_path / "not-a-key.pem").write_text("nope")
    assert await send_command(**{**common, "key_file": tmp_path / "not-a-key.pem"}) == EXIT_USAGE
    assert err.getvalue().count("error:") == 5


def test_subcommands_register(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="gateway")
    add_operator_subcommands(parser.add_subparsers(dest="command", required=True))

    args = parser.parse_args(["keygen", "--out", str(tmp_path), "--key-id", "ops-1"])
    assert args.run(args) == 0
    printed = capsys.readouterr().out
    assert "ops-1: " in printed
    assert "commands.public_keys" in printed

    args = parser.parse_args(
        [
            "send-command",
            "--broker", "mqtt://127.0.0.1:1883",
            "--key", str(tmp_path / "ops-1.pem"),
            "--key-id", "ops-1",
            "--site", "changqing",
            "--gateway", "north-gate-1",
            "--action", "door.open",
            "--device", "door-east-1",
            "--param", "hold_seconds=5",
            "--param", "note=x",
            "--ttl", "20",
            "--wait",
        ]
    )  # fmt: skip
    assert args.param == ["hold_seconds=5", "note=x"]
    assert args.wait is True
    assert args.ttl == 20.0
    assert callable(args.run_async)


def test_encode_command_is_utf8_json() -> None:
    data = encode_command({"a": "é"})
    assert data == '{"a":"é"}'.encode()
    assert json.loads(data) == {"a": "é"}
