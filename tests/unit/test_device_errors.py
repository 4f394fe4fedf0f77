"""The device error family: transport errors become DeviceOffline / DeviceTimeout at the driver."""

from __future__ import annotations

import pytest

from drivers.base import DeviceError, DeviceOffline, DeviceTimeout, device_errors
from drivers.transports.errors import TransportError, TransportTimeoutError


def test_transport_errors_become_device_errors() -> None:
    with pytest.raises(DeviceTimeout) as timeout, device_errors("door-east-1"):
        raise TransportTimeoutError("/dev/ttyUSB0", "no reply")
    assert (timeout.value.device, timeout.value.reason) == ("door-east-1", "no reply")
    with pytest.raises(DeviceOffline), device_errors("door-east-1"):
        raise TransportError("/dev/ttyUSB0", "gone")


def test_device_errors_pass_through() -> None:
    with pytest.raises(DeviceError, match="exception 04"), device_errors("door-east-1"):
        raise DeviceError("door-east-1", "exception 04")
