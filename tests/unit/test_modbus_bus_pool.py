"""BusPool: one bus per line, and loud conflicts. No I/O (buses are not run)."""

from __future__ import annotations

import pytest

from drivers.transports.bus_pool import BusPool
from drivers.transports.config import ModbusRtuTransportConfig, ModbusTcpTransportConfig
from drivers.transports.modbus import frame_gap_s


def rtu(**kwargs: object) -> ModbusRtuTransportConfig:
    return ModbusRtuTransportConfig.model_validate({"type": "modbus_rtu", **kwargs})


def tcp(**kwargs: object) -> ModbusTcpTransportConfig:
    return ModbusTcpTransportConfig.model_validate({"type": "modbus_tcp", **kwargs})


def test_same_port_same_bus() -> None:
    pool = BusPool()
    first = pool.get(rtu(port="/dev/ttyUSB0"))
    assert pool.get(rtu(port="/dev/ttyUSB0", baudrate=9600)) is first
    assert pool.get(rtu(port="/dev/ttyUSB1")) is not first
    assert len(pool.buses) == 2


def test_same_tcp_endpoint_same_bus() -> None:
    pool = BusPool()
    first = pool.get(tcp(host="10.0.0.5", port=502))
    assert pool.get(tcp(host="10.0.0.5")) is first
    assert pool.get(tcp(host="10.0.0.5", port=503)) is not first
    assert pool.get(tcp(host="10.0.0.6")) is not first


def test_conflicting_line_settings_are_a_clear_error() -> None:
    pool = BusPool()
    pool.get(rtu(port="/dev/ttyUSB0"))
    with pytest.raises(ValueError, match=r"/dev/ttyUSB0.*baudrate \(9600 vs 19200\)"):
        pool.get(rtu(port="/dev/ttyUSB0", baudrate=19200))
    with pytest.raises(ValueError, match="parity"):
        pool.get(rtu(port="/dev/ttyUSB0", parity="E"))


def test_a_port_is_needed() -> None:
    with pytest.raises(ValueError, match="no port"):
        BusPool().get(rtu())
    with pytest.raises(ValueError, match="no host"):
        BusPool().get(tcp())


@pytest.mark.parametrize(
    ("config", "gap_ms"),
    [
        (rtu(port="p", baudrate=9600), 3.646),  # 3.5 x 10 bits / 9600
        (rtu(port="p", baudrate=9600, parity="E"), 4.010),  # 11-bit characters
        (rtu(port="p", baudrate=19200), 1.823),
        (rtu(port="p", baudrate=38400), 1.750),  # fixed above 19200
        (tcp(host="h"), 0.0),
    ],
)
def test_frame_gap(
    config: ModbusRtuTransportConfig | ModbusTcpTransportConfig, gap_ms: float
) -> None:
    assert frame_gap_s(config) * 1000 == pytest.approx(gap_ms, abs=0.001)


def test_a_released_line_is_made_anew_with_new_settings() -> None:
    pool = BusPool()
    kept = pool.get(rtu(port="/dev/ttyUSB0"))
    old = pool.get(rtu(port="/dev/ttyUSB1"))
    assert pool.release_unused({"rtu:/dev/ttyUSB0"}) == [old]
    assert pool.buses == [kept]
    new = pool.get(rtu(port="/dev/ttyUSB1", baudrate=19200))  # no conflict with the old bus
    assert new is not old
    assert new.config.baudrate == 19200
    assert pool.release_unused({"rtu:/dev/ttyUSB0", "rtu:/dev/ttyUSB1"}) == []
