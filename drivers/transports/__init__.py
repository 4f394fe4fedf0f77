"""Thin transports: serial ports and Modbus buses. They know nothing of devices."""
