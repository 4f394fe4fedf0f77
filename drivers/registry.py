"""Placeholder until the device kinds land (replaced in the drivers integration)."""

from drivers.base import DeviceConfigBase

DeviceConfig = DeviceConfigBase
