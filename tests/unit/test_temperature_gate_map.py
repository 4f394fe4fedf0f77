"""The ir-body-temp-v1 register map: decode, encode, counter arithmetic, config."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers.codecs.errors import ProtocolError
from drivers.codecs.temperature_gate_map import (
    BLOCK_LENGTH,
    GateBlock,
    GateStatus,
    ReadFunction,
    RegisterMap,
    TemperatureGateMapError,
    counter_delta,
)
from drivers.temperature_gate import TemperatureGateConfig

RTU = {"type": "modbus_rtu", "port": "/dev/ttyUSB0"}


def test_decode_profile_block_field_by_field() -> None:
    # 36.7 degC, valid + new, ambient 24.5, raw 35.9, 42 cm, counter 1042
    block = RegisterMap().decode([367, 0x11, 245, 359, 42, 1042])
    assert block.celsius == 36.7
    assert block.status == GateStatus.VALID | GateStatus.NEW
    assert block.valid
    assert block.new
    assert not block.fever
    assert not block.sensor_error
    assert not block.out_of_range
    assert block.ambient_c == 24.5
    assert block.raw_object_c == 35.9
    assert block.distance_cm == 42
    assert block.counter == 1042


@pytest.mark.parametrize(
    ("status", "flag"),
    [
        (0x01, "valid"),
        (0x02, "fever"),
        (0x04, "sensor_error"),
        (0x08, "out_of_range"),
        (0x10, "new"),
    ],
)
def test_each_status_bit(status: int, flag: str) -> None:
    block = RegisterMap().decode([373, status, 0, 0, 0, 0])
    flags = {
        name: getattr(block, name) for name in ("fever", "sensor_error", "out_of_range", "new")
    }
    flags["valid"] = block.valid
    assert {name for name, on in flags.items() if on} == {flag}


def test_zero_temperature_is_not_valid_even_with_the_bit() -> None:
    assert not RegisterMap().decode([0, 0x01, 0, 0, 0, 0]).valid


def test_int16_temperatures_are_signed() -> None:
    block = RegisterMap().decode([367, 0x01, 0xFFCE, 0xFFFF, 0, 0])
    assert block.ambient_c == -5.0
    assert block.raw_object_c == -0.1


def test_hundredths_scale() -> None:
    block = RegisterMap(scale=0.01).decode([3673, 0x01, 2450, 3590, 30, 7])
    assert block.celsius == 36.73
    assert block.ambient_c == 24.5


def test_threshold_edge_is_exact_after_scaling() -> None:
    # 373 x 0.1 is 37.300000000000004 in floating point; the map rounds it.
    assert RegisterMap().decode([373, 0x01, 0, 0, 0, 0]).celsius == 37.3


@pytest.mark.parametrize("registers", [[], [1] * 5, [1] * 7])
def test_wrong_block_length_raises(registers: list[int]) -> None:
    with pytest.raises(TemperatureGateMapError, match="needs 6 registers"):
        RegisterMap().decode(registers)


@pytest.mark.parametrize("bad", [-1, 0x10000])
def test_register_value_out_of_16_bits_raises(bad: int) -> None:
    with pytest.raises(TemperatureGateMapError):
        RegisterMap().decode([367, 1, 0, 0, 0, bad])


def test_map_error_is_a_protocol_error() -> None:
    assert issubclass(TemperatureGateMapError, ProtocolError)


@pytest.mark.parametrize(
    "kwargs",
    [{"scale": 0.5}, {"base_address": -1}, {"base_address": 0xFFFB}],
)
def test_invalid_register_map_raises(kwargs: dict[str, float]) -> None:
    with pytest.raises(TemperatureGateMapError):
        RegisterMap(**kwargs)  # type: ignore[arg-type]


def test_function_accepts_plain_int() -> None:
    assert RegisterMap(function=4).function is ReadFunction.READ_INPUT_REGISTERS  # type: ignore[arg-type]


_celsius = st.integers(min_value=-400, max_value=800).map(lambda tenths: tenths / 10)


@given(
    celsius=_celsius,
    status=st.integers(min_value=0, max_value=0x1F),
    ambient=_celsius,
    raw=_celsius,
    distance=st.integers(min_value=0, max_value=0xFFFF),
    counter=st.integers(min_value=0, max_value=0xFFFF),
    scale=st.sampled_from([0.1, 0.01]),
)
@example(celsius=-0.1, status=0, ambient=0.0, raw=0.0, distance=0, counter=0xFFFF, scale=0.1)
def test_encode_decode_round_trip(
    celsius: float,
    status: int,
    ambient: float,
    raw: float,
    distance: int,
    counter: int,
    scale: float,
) -> None:
    register_map = RegisterMap(scale=scale)
    block = GateBlock(celsius, GateStatus(status), ambient, raw, distance, counter)
    words = register_map.encode(block)
    assert len(words) == BLOCK_LENGTH
    assert all(0 <= word <= 0xFFFF for word in words)
    assert register_map.decode(words) == block


@given(st.lists(st.integers(min_value=0, max_value=0xFFFF), min_size=6, max_size=6))
def test_any_six_words_decode(words: list[int]) -> None:
    block = RegisterMap().decode(words)
    assert block.counter == words[5]


def test_encode_rejects_a_temperature_beyond_int16() -> None:
    block = GateBlock(4000.0, GateStatus.VALID, 0.0, 0.0, 0, 0)
    with pytest.raises(TemperatureGateMapError):
        RegisterMap().encode(block)


@pytest.mark.parametrize(
    ("previous", "current", "delta"),
    [(5, 5, 0), (5, 6, 1), (5, 9, 4), (0xFFFF, 0, 1), (0xFFFA, 3, 9), (1, 0, 0xFFFF)],
)
def test_counter_delta_wraps(previous: int, current: int, delta: int) -> None:
    assert counter_delta(previous, current) == delta


# -- configuration -------------------------------------------------------------


def test_config_defaults_follow_the_profile() -> None:
    config = TemperatureGateConfig.model_validate(
        {"id": "temp-gate-1", "kind": "temperature_gate", "transport": RTU}
    )
    assert config.slave == 1
    assert config.poll_interval_ms == 250
    assert config.fever_threshold_c == 37.3
    assert config.offline_after_failures == 3
    assert config.registers.register_map() == RegisterMap()
    assert config.transport.type == "modbus_rtu"


def test_config_register_overrides_and_tcp_transport() -> None:
    config = TemperatureGateConfig.model_validate(
        {
            "id": "temp-gate-2",
            "kind": "temperature_gate",
            "transport": {"type": "modbus_tcp", "host": "10.0.0.7"},
            "registers": {"base_address": 100, "scale": 0.01, "function_code": 4},
        }
    )
    assert config.registers.register_map() == RegisterMap(
        base_address=100, scale=0.01, function=ReadFunction.READ_INPUT_REGISTERS
    )
    assert config.transport.type == "modbus_tcp"


@pytest.mark.parametrize(
    "change",
    [
        {"registers": {"scale": 0.05}},
        {"registers": {"function_code": 5}},
        {"registers": {"base": 1}},
        {"slave": 0},
        {"slave": 248},
        {"fever_threshold_c": 50},
        {"offline_after_failures": 0},
        {"poll_interval": 100},
        {"transport": {"type": "serial", "port": "/dev/ttyUSB0"}},
    ],
)
def test_config_rejects(change: dict[str, object]) -> None:
    raw: dict[str, object] = {"id": "temp-gate-1", "kind": "temperature_gate", "transport": RTU}
    raw.update(change)
    with pytest.raises(ValidationError):
        TemperatureGateConfig.model_validate(raw)
