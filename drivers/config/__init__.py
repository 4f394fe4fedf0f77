"""Each device kind's configuration, one small module per kind.

They import pydantic, ``drivers.base`` and the stdlib-only codecs, never a
driver, a transport or a device library: loading a configuration (the
``devices:`` union in ``drivers.registry``) loads no driver, and a driver's
module (pymodbus, pyserial, uhppoted) loads only when a device of its kind is
built.
"""
