"""The codecs' error family: one subclass per wire protocol."""

from __future__ import annotations


class ProtocolError(Exception):
    """Bytes that are not a valid frame of the protocol.

    ``data_hex`` carries the offending bytes for the log (at TRACE/DEBUG).
    """

    def __init__(self, reason: str, data: bytes = b"") -> None:
        super().__init__(f"{reason} ({data[:64].hex()})" if data else reason)
        self.reason = reason
        self.data_hex = data.hex()
